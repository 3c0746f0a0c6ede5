"""A stock MariaDB replica replicates from an agent: committed history only."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.mariadb_local import LocalMariaDB
from tests.mariadb.test_semisync import enable_semi_sync
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, Cluster, wait_until

pytestmark = pytest.mark.mariadb


def point_replica(replica: LocalMariaDB, port: int) -> None:
    replica.query(
        f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, "
        f"MASTER_USER='{REPLICATION_USER}', MASTER_PASSWORD='{REPLICATION_PASSWORD}', "
        "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1")
    replica.query("START SLAVE")


def slave_status(replica: LocalMariaDB) -> dict[str, object]:
    conn = replica.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW SLAVE STATUS")
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description or ()]
    finally:
        conn.close()
    return dict(zip(names, row or (), strict=False))


def checksum(db: LocalMariaDB, table: str) -> int:
    return int(db.query(f"CHECKSUM TABLE {table}")[0][1])


async def test_stock_replica_follows_an_agent(tmp_path: Path) -> None:
    primary = LocalMariaDB(tmp_path / "primary").start()
    replica = LocalMariaDB(tmp_path / "replica", server_id=22).start()
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port,
                      serve_replicas=True)
    try:
        enable_semi_sync(primary)
        cluster.start()
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        await wait_until(
            lambda: ((cluster.agents[leader].timeline() or {}).get("primary") or {}).get(
                "connected"), 15, "the leader to tail the primary", cluster.logs)
        primary.query("CREATE DATABASE shop")
        primary.query("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40))")
        for i in range(50):
            primary.query("INSERT INTO shop.items VALUES (%s, %s)", i, f"item {i}")
        follower = next(n for n in cluster.agents if n != leader)
        point_replica(replica, cluster.agents[follower].mysql_port or 0)
        target = primary.query("SELECT @@gtid_binlog_pos")[0][0]

        def caught_up() -> bool:
            status = slave_status(replica)
            assert not status.get("Last_IO_Error"), status.get("Last_IO_Error")
            assert not status.get("Last_SQL_Error"), status.get("Last_SQL_Error")
            return replica.query("SELECT @@gtid_slave_pos")[0][0] == target

        await wait_until(caught_up, 60, f"the replica to reach {target}", cluster.logs)
        assert checksum(replica, "shop.items") == checksum(primary, "shop.items")
        status = slave_status(replica)
        # the primary's own coordinates: the same file names and positions
        primary_file, primary_pos = primary.query("SHOW MASTER STATUS")[0][:2]
        assert status["Master_Log_File"] == primary_file
        assert int(status["Read_Master_Log_Pos"]) == int(primary_pos)  # type: ignore[call-overload]
    finally:
        cluster.stop()
        replica.cleanup()
        primary.cleanup()
