"""Failover with real servers and agents: kill -9 of the primary under a writer; the agents
record the most advanced replica as the primary, its keeper promotes it once it has applied
everything committed, the leader tails it, and the writer (following `binkeeper primary`)
goes on. Every acknowledged commit is on the new primary, none twice, and the remaining
replica, fed by its agent, ends equal."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.replicas.test_stock_replica import checksum
from tests.support.cluster import wait_until
from tests.support.group import Writer, group_of_three, ids, primary_of, start_group

pytestmark = pytest.mark.mariadb


async def test_kill_the_primary_under_a_writer(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    writer = Writer(cluster)
    thread = threading.Thread(target=writer.run, daemon=True)
    try:
        old = servers["a1"]
        await start_group(old, cluster)
        thread.start()
        await wait_until(lambda: len(writer.acked) >= 200, 60, "200 commits", cluster.logs)
        killed_at = time.monotonic()
        acked_before = len(writer.acked)
        old.kill()  # SIGKILL of the primary, mid-load

        new_primary = await wait_until(
            lambda: (p := primary_of(cluster)) and p != ("127.0.0.1", old.port) and p, 60,
            "a failover", cluster.logs)
        await wait_until(lambda: len(writer.acked) >= acked_before + 100, 60,
                         "writes on the new primary", cluster.logs)
        print(f"failover: {time.monotonic() - killed_at:.2f}s from kill -9 to 100 more "
              f"commits on {new_primary}; writer errors {writer.errors}")
        writer.stop.set()
        await trio.to_thread.run_sync(thread.join, 30)

        promoted = next(db for db in servers.values() if db.port == new_primary[1])
        other = next(db for n, db in servers.items()
                     if db is not promoted and db is not old)
        on_new = ids(promoted)
        assert len(on_new) == len(set(on_new))  # none twice
        missing = sorted(set(writer.acked) - set(on_new))
        assert not missing, f"acknowledged commits missing on the new primary: {missing[:10]}"
        assert promoted.variable("read_only") == "0"
        target = promoted.variable("gtid_binlog_pos")
        await wait_until(lambda: other.variable("gtid_slave_pos") == target, 60,
                         f"the other replica to reach {target}", cluster.logs)
        assert checksum(promoted, "w.t") == checksum(other, "w.t")
        leader = cluster.leader()
        assert leader is not None
        status: dict[str, Any] = cluster.agents[leader].timeline() or {}
        assert status["failover"]["epoch"] == 2 and status["failover"]["reason"] == "failover"

        # The old primary comes back as every server of a group starts (DESIGN.md): its
        # never-acknowledged tail cut, read-only. Its agent makes it a replica under a new
        # server_id, so the transactions it wrote that its restart cut but the quorum
        # committed are applied, not skipped as its own.
        old.extra_args += ["--init-rpl-role=SLAVE", "--read-only=ON"]
        old.restart()
        target = promoted.variable("gtid_binlog_pos")
        await wait_until(lambda: old.variable("gtid_binlog_pos") == target, 60,
                         f"the old primary to rejoin and reach {target}", cluster.logs)
        assert old.variable("server_id") != "1" and old.variable("read_only") == "1"
        assert checksum(old, "w.t") == checksum(promoted, "w.t")
        assert not set(writer.acked) - set(ids(old))
        assert "replicates as server_id" in cluster.agents["a1"].log_path.read_text()
    finally:
        writer.stop.set()
        cluster.stop()
        for db in servers.values():
            db.cleanup()


async def test_no_failover_without_a_live_replica_until_one_returns(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    old, spare = servers["a1"], servers["a3"]
    try:
        await start_group(old, cluster)
        old.query("INSERT INTO w.t VALUES (1), (2), (3)")
        target = old.variable("gtid_binlog_pos")
        await wait_until(lambda: spare.variable("gtid_slave_pos") == target, 30,
                         "the replicas to catch up", cluster.logs)
        servers["a2"].kill()
        spare.kill()
        old.kill()  # the primary and every replica down

        def leader_status() -> dict[str, Any]:
            leader = cluster.leader()
            return (cluster.agents[leader].timeline() or {}) if leader else {}

        waiting = await wait_until(
            lambda: ((leader_status().get("failover") or {}).get("waiting") or "")
            if "no live" in ((leader_status().get("failover") or {}).get("waiting") or "")
            else None, 30, "the refusal to fail over", cluster.logs)
        assert "primary lost" in waiting and f"127.0.0.1:{old.port}" in waiting
        assert leader_status()["failover"]["epoch"] == 1  # nothing recorded
        spare.restart()  # a replica returns: the failover that was refused now happens
        await wait_until(lambda: primary_of(cluster) == ("127.0.0.1", spare.port), 60,
                         "the failover to the returned replica", cluster.logs)
        assert spare.variable("read_only") == "0"
        assert [int(r[0]) for r in spare.query("SELECT id FROM w.t ORDER BY id")] == [1, 2, 3]
        spare.query("INSERT INTO w.t VALUES (4)")  # acknowledged by the agents
        assert leader_status()["failover"]["epoch"] == 2
    finally:
        cluster.stop()
        for db in servers.values():
            db.cleanup()

