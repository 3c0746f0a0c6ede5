"""The README's first command, shortened: the failover story runs to a passing verdict."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mariadb


def test_demo_fails_over_rejoins_and_reaches_a_passing_verdict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--transactions", "300"],
        capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert ">>> kill -9 of the primary" in out
    failover = re.search(r"Failover: (a\d)'s server \S+ is the primary now", out)
    assert failover and failover.group(1) != "a1", out  # a replica took over from a1's
    assert re.search(r"primary silent [\d.]+ s .* failover recorded \d+ ms later", out), out
    assert "the writer's first acknowledged commit on it after" in out
    assert "Old primary rejoined: a1's server replicates from agent a1" in out
    assert ">>> kill -9 of agent" in out and "commits go on" in out
    assert ">>> restarted agent" in out
    assert re.search(r"acked +\d+ \| primary", out)  # the live progress lines
    assert re.search(r"missing: 0, twice: 0, refused but present: 0", out), out
    assert "Errant GTIDs: none" in out
    assert "CHECKSUM TABLE equal on all 3 servers." in out
    assert "VERDICT: PASS" in out
