"""XA transactions through the quorum: a prepared transaction is acknowledged like any
other (it ends with an XA_PREPARE_LOG event), its later XA COMMIT or XA ROLLBACK too, and a
stock replica fed by an agent applies them all to the same table contents."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from agent.harness.local_mariadb import LocalMariaDB
from tests.replicas.support import primary_with_serving_agents
from tests.replicas.test_stock_replica import checksum, point_replica
from tests.support.cluster import wait_until

pytestmark = pytest.mark.mariadb


def run(primary: LocalMariaDB, *statements: str) -> None:
    """On one connection; every statement must return (a read timeout means it hung)."""
    primary.execute(*statements, database="xa", read_timeout=30)


async def test_xa_prepare_commit_and_rollback_are_acknowledged_and_replicated(
        tmp_path: Path) -> None:
    replica = LocalMariaDB(tmp_path / "replica", server_id=30).start()
    try:
        async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
            primary.query("CREATE DATABASE xa")
            primary.query("CREATE TABLE xa.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
            run(primary, "XA START 'x1'", "INSERT INTO t VALUES (1, 1)", "XA END 'x1'",
                "XA PREPARE 'x1'")  # hung for ever before: the agents never acknowledged it
            run(primary, "XA START 'x2'", "INSERT INTO t VALUES (2, 2)", "XA END 'x2'",
                "XA PREPARE 'x2'")
            run(primary, "XA COMMIT 'x1'")
            run(primary, "XA ROLLBACK 'x2'")
            run(primary, "XA START 'x3'", "INSERT INTO t VALUES (3, 3)", "XA END 'x3'",
                "XA COMMIT 'x3' ONE PHASE")
            run(primary, "INSERT INTO t VALUES (4, 4)")  # and ordinary commits go on
            follower = next(n for n in cluster.agents if n != leader)
            point_replica(replica, cluster.agents[follower].mysql_port or 0)
            target = primary.variable("gtid_binlog_pos")
            await wait_until(lambda: replica.variable("gtid_slave_pos") == target, 60,
                             f"the replica to reach {target}", cluster.logs)
            assert primary.query("SELECT id, v FROM xa.t ORDER BY id") == (
                replica.query("SELECT id, v FROM xa.t ORDER BY id"))
            assert checksum(primary, "xa.t") == checksum(replica, "xa.t")
            assert [row[0] for row in replica.query("SELECT id FROM xa.t ORDER BY id")] == [
                1, 3, 4]
            for agent in cluster.agents.values():
                timeline = agent.timeline()
                assert timeline is not None and not (timeline["primary"] or {}).get("error")
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"an XA statement did not return: {exc}")
    finally:
        replica.cleanup()
