"""XA transactions through the quorum: a prepared transaction is acknowledged like any
other (it ends with an XA_PREPARE_LOG event), its later XA COMMIT or XA ROLLBACK too, and a
stock replica fed by an agent applies them all to the same table contents."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from agent.harness.local_mariadb import LocalMariaDB
from tests.mariadb.test_semisync import enable_semi_sync
from tests.replicas.support import primary_with_serving_agents
from tests.replicas.test_stock_replica import checksum, point_replica
from tests.support.cluster import Cluster, wait_until

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
                assert timeline is not None and not (timeline["source"] or {}).get("error")
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"an XA statement did not return: {exc}")
    finally:
        replica.cleanup()


def _tailing_leader(cluster: Cluster, other_than: str | None = None) -> str | None:
    leader = cluster.leader()
    if leader is None or leader == other_than:
        return None
    primary = (cluster.agents[leader].timeline() or {}).get("source") or {}
    return leader if primary.get("connected") else None


async def test_xa_across_a_leader_kill_and_primary_restarts(tmp_path: Path) -> None:
    """Prepared transactions outlive the agent that stored their PREPARE (SIGKILL) and the
    primary (a clean restart, then a crash): each later XA COMMIT / XA ROLLBACK returns,
    and a replica fed by the agent that was killed — restarted, caught up — ends equal."""
    replica = LocalMariaDB(tmp_path / "replica", server_id=31).start()
    try:
        async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
            primary.query("CREATE DATABASE xa")
            primary.query("CREATE TABLE xa.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
            run(primary, "XA START 'k1'", "INSERT INTO t VALUES (1, 1)", "XA END 'k1'",
                "XA PREPARE 'k1'")
            cluster.agents[leader].kill()  # SIGKILL, the PREPARE stored and acknowledged
            await wait_until(lambda: _tailing_leader(cluster, other_than=leader), 30,
                             "another agent to lead and tail the primary", cluster.logs)
            run(primary, "XA COMMIT 'k1'")  # acknowledged by the new leader's quorum

            run(primary, "XA START 'k2'", "INSERT INTO t VALUES (2, 2)", "XA END 'k2'",
                "XA PREPARE 'k2'")
            primary.restart()  # clean shutdown: the prepared transaction survives it
            enable_semi_sync(primary)
            assert [row[3] for row in primary.query("XA RECOVER")] == [b"k2"]
            await wait_until(lambda: _tailing_leader(cluster), 30,
                             "the leader to tail the restarted primary", cluster.logs)
            run(primary, "XA COMMIT 'k2'")

            run(primary, "XA START 'k3'", "INSERT INTO t VALUES (3, 3)", "XA END 'k3'",
                "XA PREPARE 'k3'")
            primary.kill()  # a crash: InnoDB recovers the prepared transaction
            primary.restart()
            enable_semi_sync(primary)
            assert [row[3] for row in primary.query("XA RECOVER")] == [b"k3"]
            await wait_until(lambda: _tailing_leader(cluster), 30,
                             "the leader to tail the recovered primary", cluster.logs)
            run(primary, "XA ROLLBACK 'k3'")
            run(primary, "INSERT INTO t VALUES (4, 4)")

            cluster.agents[leader].start()  # the killed agent catches up, then serves
            point_replica(replica, cluster.agents[leader].mysql_port or 0)
            target = primary.variable("gtid_binlog_pos")
            await wait_until(lambda: replica.variable("gtid_slave_pos") == target, 60,
                             f"the replica to reach {target}", cluster.logs)
            assert [row[0] for row in replica.query("SELECT id FROM xa.t ORDER BY id")] == [
                1, 2, 4]
            assert checksum(primary, "xa.t") == checksum(replica, "xa.t")
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"an XA statement did not return: {exc}")
    finally:
        replica.cleanup()
