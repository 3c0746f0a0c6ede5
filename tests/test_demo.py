"""The README's first command, shortened: it must reach a passing verdict."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.mariadb


def test_demo_reaches_a_passing_verdict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--transactions", "300"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "killed agent" in result.stdout
    assert "VERDICT: PASS" in result.stdout
    assert "acknowledged writes missing from them: 0" in result.stdout
