"""Adoption with real servers and agents: the agents record the group's one writable server
as the primary (a GROUP record every agent sees), `binkeeper primary` prints it, and two
writable servers are refused, naming both, with nothing recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.harness.local_mariadb import LocalMariaDB
from tests.mariadb.test_semisync import enable_semi_sync
from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.mariadb


def primary_cli(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "primary", "--url", url],
                          capture_output=True, text=True, timeout=60)


def recorded(cluster: Cluster, node: str) -> dict[str, Any] | None:
    timeline = cluster.agents[node].timeline() or {}
    primary: dict[str, Any] | None = timeline.get("primary")
    return primary


async def test_the_writable_server_is_recorded_as_the_primary(tmp_path: Path) -> None:
    primary = LocalMariaDB(tmp_path / "primary").start()
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port)
    try:
        enable_semi_sync(primary)
        cluster.start()
        expected = {"node": "a1", "host": "127.0.0.1", "port": primary.port}
        for node in cluster.agents:  # every agent applies the same committed decision
            await wait_until(lambda n=node: recorded(cluster, n) == expected, 30,
                             f"{node} to know the primary", cluster.logs)
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        timeline = cluster.agents[leader].timeline() or {}
        assert [s["role"] for s in timeline["servers"]] == ["primary"] * 3
        assert all(s["lag"] == 0 for s in timeline["servers"])
        assert timeline["failover"]["epoch"] == 1 and timeline["failover"]["waiting"] is None
        shown = primary_cli(cluster.agents["a3"].url)
        assert shown.returncode == 0 and shown.stdout == f"127.0.0.1:{primary.port}\n"
        # the decision is in every agent's log, and stays after a restart
        cluster.agents["a2"].stop()
        cluster.agents["a2"].start()
        await wait_until(lambda: recorded(cluster, "a2") == expected, 30,
                         "a2 to know the primary after a restart", cluster.logs)
    finally:
        cluster.stop()
        primary.cleanup()
    unreachable = primary_cli("http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


async def test_two_writable_servers_are_refused_naming_both(tmp_path: Path) -> None:
    first = LocalMariaDB(tmp_path / "first", server_id=1).start()
    second = LocalMariaDB(tmp_path / "second", server_id=2).start()
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False,
                      mariadb_port={"a1": first.port, "a2": second.port, "a3": first.port})
    try:
        cluster.start()
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)

        def waiting() -> str | None:
            timeline = cluster.agents[leader].timeline() or {}
            reason: str | None = (timeline.get("failover") or {}).get("waiting")
            return reason

        reason = await wait_until(lambda: (w := waiting()) and "two writable" in w and w, 30,
                                  "the refusal", cluster.logs)
        assert f"127.0.0.1:{first.port}" in reason and f"127.0.0.1:{second.port}" in reason
        assert all(recorded(cluster, node) is None for node in cluster.agents)
        refused = primary_cli(cluster.agents[leader].url)
        assert refused.returncode == 1 and "no primary" in refused.stderr
        assert "two writable servers" in cluster.agents[leader].log_path.read_text()
    finally:
        cluster.stop()
        first.cleanup()
        second.cleanup()
