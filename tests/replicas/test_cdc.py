"""Change-data capture through an agent: python-mysql-replication's BinLogStreamReader,
pointed at an agent's replication port, decodes the row events of committed transactions
— and only those."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent
from pymysqlreplication.row_event import WriteRowsEvent

from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, wait_until

pytestmark = [
    pytest.mark.mariadb,
    # the library's own control connection still passes pymysql's deprecated `db=`
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]


def read_inserts(port: int, start: str, schema_port: int) -> list[tuple[str, dict[str, Any]]]:
    """Every row inserted after GTID position START that the agent at PORT serves, with its
    GTID. Column names come from the events' metadata (binlog_row_metadata=FULL); the
    reader asks a server of the group (SCHEMA_PORT) whether it is on."""
    reader = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": port, "user": REPLICATION_USER,
                             "password": REPLICATION_PASSWORD},
        ctl_connection_settings={"host": "127.0.0.1", "port": schema_port, "user": "root"},
        server_id=901, blocking=False, is_mariadb=True, auto_position=start,
        only_events=[MariadbGtidEvent, GtidEvent, WriteRowsEvent])
    rows: list[tuple[str, dict[str, Any]]] = []
    gtid = ""
    try:
        for event in reader:
            if isinstance(event, MariadbGtidEvent | GtidEvent):
                gtid = event.gtid
            elif isinstance(event, WriteRowsEvent):
                rows += [(gtid, row["values"]) for row in event.rows]
    finally:
        reader.close()
    return rows


async def test_a_cdc_reader_decodes_committed_rows(tmp_path: Path) -> None:
    async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
        primary.query("SET GLOBAL binlog_row_metadata = FULL")  # column names in the events
        start = primary.variable("gtid_binlog_pos")
        primary.query("CREATE DATABASE cdc")
        primary.query("CREATE TABLE cdc.t (id INT PRIMARY KEY, note VARCHAR(20))")
        for i in range(1, 6):
            primary.query("INSERT INTO cdc.t VALUES (%s, %s)", i, f"row {i}")
        target = primary.variable("gtid_binlog_pos")
        follower = next(n for n in cluster.agents if n != leader)
        port = cluster.agents[follower].mysql_port or 0
        await wait_until(lambda: (cluster.agents[follower].timeline() or {})
                         .get("committed_gtid") == target, 30, "the follower", cluster.logs)
        rows = read_inserts(port, start, primary.port)
        assert [values for _, values in rows] == [
            {"id": i, "note": f"row {i}"} for i in range(1, 6)], rows
