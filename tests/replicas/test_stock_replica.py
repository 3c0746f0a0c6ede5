"""A stock MariaDB replica replicates from an agent: committed history only."""

from __future__ import annotations

import threading
from pathlib import Path

import pymysql
import pytest

from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.workload import Workload
from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import (
    REPLICATION_PASSWORD,
    REPLICATION_USER,
    wait_tailing,
    wait_until,
)

pytestmark = pytest.mark.mariadb


def point_replica(replica: LocalMariaDB, port: int, heartbeat: float = 1.0) -> None:
    # (a new host or port resets the heartbeat period unless given again)
    replica.query(
        f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, "
        f"MASTER_HEARTBEAT_PERIOD={heartbeat}, "
        f"MASTER_USER='{REPLICATION_USER}', MASTER_PASSWORD='{REPLICATION_PASSWORD}', "
        "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1")
    replica.query("START SLAVE")


def checksum(db: LocalMariaDB, table: str) -> int:
    return int(db.query(f"CHECKSUM TABLE {table}")[0][1])


async def test_two_replicas_follow_agents_under_load_and_a_leader_kill(tmp_path: Path) -> None:
    replicas = [LocalMariaDB(tmp_path / f"replica{i}", server_id=20 + i).start()
                for i in range(2)]
    try:
        async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
            workload = Workload(primary.connect, seed=7, accounts=50)
            workload.setup()
            # Replicas on agents B and C; the leader (A) tails the primary and is killed mid-load.
            followers = [n for n in cluster.agents if n != leader]
            for replica, agent in zip(replicas, followers, strict=True):
                point_replica(replica, cluster.agents[agent].mysql_port or 0)
            stop = threading.Event()
            writer = threading.Thread(target=workload.run, args=(10_000,), kwargs={"stop": stop},
                                      daemon=True)
            writer.start()
            await wait_until(lambda: len(workload.history.acked) >= 100, 60, "writes", cluster.logs)
            cluster.agents[leader].kill()
            new_leader = await wait_tailing(cluster)
            assert new_leader != leader
            acked = len(workload.history.acked)
            await wait_until(lambda: len(workload.history.acked) >= acked + 100, 60,
                             "writes under the new leader", cluster.logs)
            stop.set()
            writer.join(60)
            target = primary.query("SELECT @@gtid_binlog_pos")[0][0]

            def caught_up(replica: LocalMariaDB) -> bool:
                status = replica.slave_status()
                assert not status.get("Last_IO_Error"), status.get("Last_IO_Error")
                assert not status.get("Last_SQL_Error"), status.get("Last_SQL_Error")
                return replica.query("SELECT @@gtid_slave_pos")[0][0] == target

            for replica in replicas:
                await wait_until(lambda r=replica: caught_up(r), 120,  # type: ignore[misc]
                                 f"replica {replica.server_id} to reach {target}", cluster.logs)
                for table in ("shop.accounts", "shop.orders", "shop.ledger"):
                    assert checksum(replica, table) == checksum(primary, table), table
                # the primary's own coordinates: the same file names and positions
                status = replica.slave_status()
                primary_file, primary_pos = primary.query("SHOW MASTER STATUS")[0][:2]
                assert status["Master_Log_File"] == primary_file
                assert int(str(status["Read_Master_Log_Pos"])) == int(primary_pos)
    finally:
        for replica in replicas:
            replica.cleanup()


def heartbeats(replica: LocalMariaDB) -> int:
    return int(replica.query("SHOW GLOBAL STATUS LIKE 'Slave_received_heartbeats'")[0][1])


async def test_replicas_get_committed_history_only_and_can_move_between_agents(
    tmp_path: Path,
) -> None:
    replica = LocalMariaDB(tmp_path / "replica", server_id=22).start()
    try:
        async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
            primary.query("CREATE DATABASE shop")
            primary.query("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40))")
            primary.query("INSERT INTO shop.items VALUES (1, 'one')")
            others = [n for n in cluster.agents if n != leader]
            # Served by the leader: the agent that stores transactions first.
            point_replica(replica, cluster.agents[leader].mysql_port or 0, heartbeat=0.2)
            committed = primary.query("SELECT @@gtid_binlog_pos")[0][0]
            await wait_until(lambda: replica.query("SELECT @@gtid_slave_pos")[0][0] == committed,
                             60, "the replica to catch up", cluster.logs)

            # The quorum shrinks to the leader alone: the next commit is stored, never committed.
            for name in others:
                cluster.agents[name].kill()
            writer = primary.connect()
            done = threading.Event()

            def blocked_insert() -> None:
                with writer.cursor() as cursor:
                    cursor.execute("INSERT INTO shop.items VALUES (2, 'two')")
                done.set()

            threading.Thread(target=blocked_insert, daemon=True).start()
            agent = cluster.agents[leader]
            await wait_until(lambda: (t := agent.timeline()) is not None
                             and t["last_lsn"] > t["commit_lsn"], 30,
                             "the leader to store the uncommitted transaction", cluster.logs)
            # Heartbeats mean the agent is idle, everything it may serve already sent.
            seen = heartbeats(replica)
            await wait_until(lambda: heartbeats(replica) >= seen + 2, 30, "heartbeats",
                             cluster.logs)
            assert replica.query("SELECT @@gtid_slave_pos")[0][0] == committed
            assert replica.query("SELECT COUNT(*) FROM shop.items")[0][0] == 1
            assert not done.is_set()
            # The agent's GTID position, as replicas and operators read it, is the committed
            # one: the stored but uncommitted transaction is not part of it.
            asked = pymysql.connect(host="127.0.0.1", port=agent.mysql_port or 0,
                                    user=REPLICATION_USER, password=REPLICATION_PASSWORD)
            try:
                with asked.cursor() as cursor:
                    cursor.execute("SELECT @@gtid_binlog_pos")
                    assert cursor.fetchone() == (committed,)
            finally:
                asked.close()
            assert (agent.timeline() or {})["committed_gtid"] == committed

            # An agent returns: the transaction commits, the primary's COMMIT returns, the
            # replica receives it.
            cluster.agents[others[0]].start()
            await wait_until(done.is_set, 60, "the blocked commit to return", cluster.logs)
            writer.close()
            final = primary.query("SELECT @@gtid_binlog_pos")[0][0]
            await wait_until(lambda: replica.query("SELECT @@gtid_slave_pos")[0][0] == final,
                             60, "the replica to receive the commit", cluster.logs)

            # Moved to another agent mid-stream, it resumes by GTID: no gap, no duplicate.
            replica.query("STOP SLAVE")
            point_replica(replica, cluster.agents[others[0]].mysql_port or 0)
            for i in range(3, 30):
                primary.query("INSERT INTO shop.items VALUES (%s, %s)", i, f"item {i}")
            final = primary.query("SELECT @@gtid_binlog_pos")[0][0]

            def converged() -> bool:
                status = replica.slave_status()
                assert not status.get("Last_IO_Error"), status.get("Last_IO_Error")
                assert not status.get("Last_SQL_Error"), status.get("Last_SQL_Error")
                return replica.query("SELECT @@gtid_slave_pos")[0][0] == final

            await wait_until(converged, 60, "the moved replica to converge", cluster.logs)
            assert checksum(replica, "shop.items") == checksum(primary, "shop.items")
    finally:
        replica.cleanup()


async def test_start_slave_until_master_gtid_pos_stops_exactly_there(tmp_path: Path) -> None:
    replica = LocalMariaDB(tmp_path / "replica", server_id=22).start()
    try:
        async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
            primary.query("CREATE DATABASE shop")
            primary.query("CREATE TABLE shop.items (id INT PRIMARY KEY)")
            gtids = []
            for i in range(10):
                primary.query("INSERT INTO shop.items VALUES (%s)", i)
                gtids.append(primary.query("SELECT @@gtid_binlog_pos")[0][0])
            until = gtids[4]
            replica.query(
                f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', "
                f"MASTER_PORT={cluster.agents[leader].mysql_port}, "
                f"MASTER_USER='{REPLICATION_USER}', "
                f"MASTER_PASSWORD='{REPLICATION_PASSWORD}', MASTER_USE_GTID=slave_pos")
            replica.query(f"START SLAVE UNTIL master_gtid_pos = '{until}'")

            def stopped() -> bool:
                status = replica.slave_status()
                assert not status.get("Last_IO_Error"), status.get("Last_IO_Error")
                return status.get("Slave_SQL_Running") == "No"

            await wait_until(stopped, 60, "the replica to stop at its UNTIL position", cluster.logs)
            assert replica.query("SELECT @@gtid_slave_pos")[0][0] == until
            assert replica.query("SELECT COUNT(*) FROM shop.items")[0][0] == 5
    finally:
        replica.cleanup()
