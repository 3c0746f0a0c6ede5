"""Switchover with real servers and agents: `binkeeper switchover --to NODE` under a writer.
The old primary goes read-only (its waiting commits still get their ACKs), its history is
committed, the new one is recorded, catches up and is promoted; no acknowledged commit is
lost or doubled, the old primary rejoins as a replica, and the way back works too."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
import trio

from tests.agent.test_membership import post
from tests.failover.test_failover import group_of_three, ids, primary_of, start_group
from tests.replicas.test_stock_replica import checksum
from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.mariadb

APP_USER = "app"  # no READ_ONLY ADMIN: read_only stops it, as it stops applications


class AppWriter:
    """Unique ids as an application user, following `binkeeper primary`; every commit that
    returned is recorded, every failed one counted."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acked: list[int] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        next_id, conn = 0, None
        while not self.stop.is_set():
            try:
                if conn is None:
                    where = primary_of(self.cluster)
                    if where is None:
                        continue
                    conn = pymysql.connect(host=where[0], port=where[1], user=APP_USER,
                                           password="app", autocommit=True, connect_timeout=2,
                                           read_timeout=10, write_timeout=10)
                next_id += 1
                with conn.cursor() as cursor:
                    cursor.execute("INSERT INTO w.t VALUES (%s)", (next_id,))
                self.acked.append(next_id)
            except pymysql.err.MySQLError:
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def switchover(cluster: Cluster, to: str) -> subprocess.CompletedProcess[str]:
    urls = [arg for agent in cluster.agents.values() for arg in ("--url", agent.url)]
    return subprocess.run([sys.executable, "-m", "agent", "switchover", "--to", to, *urls],
                          capture_output=True, text=True, timeout=120)


async def test_switchover_under_a_writer_and_back(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    writer = AppWriter(cluster)
    thread = threading.Thread(target=writer.run, daemon=True)
    old, new = servers["a1"], servers["a2"]
    try:
        old.query(f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY 'app'")
        old.query(f"GRANT SELECT, INSERT ON w.* TO '{APP_USER}'@'%'")
        await start_group(old, cluster)
        thread.start()
        await wait_until(lambda: len(writer.acked) >= 200, 60, "200 commits", cluster.logs)
        failed_before = writer.failed

        started = time.monotonic()
        done = await trio.to_thread.run_sync(switchover, cluster, "a2")
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr + cluster.logs()
        assert f"primary: 127.0.0.1:{new.port} (beside a2), ready" in done.stdout
        print(f"switchover: {took:.2f}s end to end; {done.stdout.strip()}")
        assert primary_of(cluster) == ("127.0.0.1", new.port)
        assert new.variable("read_only") == "0" and old.variable("read_only") == "1"
        urls = [arg for agent in cluster.agents.values() for arg in ("--url", agent.url)]
        watched = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--watch", "--count", "1", *urls],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert f"primary 127.0.0.1:{new.port} (beside a2)" in watched.stdout, watched.stdout
        assert "switchover" in watched.stdout  # the newest decision's reason
        acked_at_switch = len(writer.acked)
        await wait_until(lambda: len(writer.acked) >= acked_at_switch + 100, 60,
                         "writes on the new primary", cluster.logs)
        # Failures only at the moment of the switch: the old primary refused new writes
        # (read-only) while the new one was not ready yet; none after.
        failed_at_switch = writer.failed - failed_before
        print(f"writer: {failed_at_switch} commits refused during the switch")

        # The old primary rejoins by itself: read-only, a new server_id, fed by its agent.
        await wait_until(lambda: ((cluster.agents["a1"].timeline() or {}).get("keeper")
                                  or {}).get("role") == "replica", 60,
                         "the old primary to replicate from its agent", cluster.logs)
        assert old.variable("server_id") != "1" and old.variable("read_only") == "1"

        back = await trio.to_thread.run_sync(switchover, cluster, "a1")
        assert back.returncode == 0, back.stdout + back.stderr + cluster.logs()
        assert primary_of(cluster) == ("127.0.0.1", old.port)
        acked_back = len(writer.acked)
        await wait_until(lambda: len(writer.acked) >= acked_back + 100, 60,
                         "writes on the first primary again", cluster.logs)
        writer.stop.set()
        await trio.to_thread.run_sync(thread.join, 30)

        on_primary = ids(old)
        assert len(on_primary) == len(set(on_primary))  # none twice
        missing = sorted(set(writer.acked) - set(on_primary))
        assert not missing, f"acknowledged commits missing: {missing[:10]}"
        target = old.variable("gtid_binlog_pos")
        for db in (new, servers["a3"]):
            await wait_until(lambda db=db: db.variable("gtid_binlog_pos") == target, 60,
                             f"{db.port} to reach {target}", cluster.logs)
            assert checksum(db, "w.t") == checksum(old, "w.t")
        leader = cluster.leader()
        assert leader is not None
        status: dict[str, Any] = cluster.agents[leader].timeline() or {}
        assert status["failover"]["reason"] == "switchover"
        assert all(server["role"] in ("primary", "replica") and not server["error"]
                   for server in status["servers"]), status["servers"]
    finally:
        writer.stop.set()
        cluster.stop()
        for db in servers.values():
            db.cleanup()


async def test_switchover_refusals_name_the_reason(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    try:
        await start_group(servers["a1"], cluster)
        leader = await wait_until(cluster.leader, 30, "a leader", cluster.logs)
        timeline = (cluster.agents[leader].timeline() or {})["timeline_id"]
        path = f"/v1/timelines/{timeline}/switchover"
        url = cluster.agents[leader].url + path
        assert post(url, b"[1]")[0] == 400
        assert post(url, b'{"to": 7}')[0] == 400
        code, body = post(url, b'{"to": "a1"}')  # the primary's own node
        assert code == 409 and "no live, well-configured replica" in body["error"], body
        code, body = post(url, b'{"to": "nobody"}')
        assert code == 409, body
        follower = next(n for n in cluster.agents if n != leader)
        code, body = post(cluster.agents[follower].url + path, b'{"to": "a2"}')
        assert code == 421 and body["leader"] == leader, body
        servers["a3"].kill()
        code, body = post(url, b'{"to": "a3"}')  # down
        assert code == 409, body
        status: dict[str, Any] = cluster.agents[leader].timeline() or {}
        assert status["failover"]["epoch"] == 1  # nothing was recorded by any refusal
    finally:
        cluster.stop()
        for db in servers.values():
            db.cleanup()
