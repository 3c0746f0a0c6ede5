"""Change-data capture through an agent: python-mysql-replication's BinLogStreamReader,
pointed at an agent's replication port, decodes the row events of committed transactions
— and only those: after a failover from a primary cut off from its agents, a reader of
that primary saw transactions the new primary never had; a reader of an agent did not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent
from pymysqlreplication.row_event import WriteRowsEvent

from tests.failover.test_fencing import DIRECT_ID, partition_the_primary, proxied_group
from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, wait_until
from tests.support.group import ids

pytestmark = [
    pytest.mark.mariadb,
    # the library's own control connection still passes pymysql's deprecated `db=`
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]


def read_inserts(port: int, start: str, schema_port: int, user: str = REPLICATION_USER,
                 password: str = REPLICATION_PASSWORD) -> list[tuple[str, dict[str, Any]]]:
    """Every row inserted after GTID position START that the agent at PORT serves, with its
    GTID. Column names come from the events' metadata (binlog_row_metadata=FULL); the
    reader asks a server of the group (SCHEMA_PORT) whether it is on."""
    reader = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": port, "user": user,
                             "password": password},
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


async def test_after_a_failover_a_cdc_reader_of_the_agents_never_saw_the_lost_primarys_tail(
        tmp_path: Path) -> None:
    async with proxied_group(tmp_path) as group:
        old = group.servers["a1"]
        start = "0-1-1"  # after the first transaction: both readers start at the same place
        clients, new = await partition_the_primary(group, mid_load=False)
        stuck = {client.row_id for client in clients.values()}
        assert stuck and min(stuck) >= DIRECT_ID
        await trio.to_thread.run_sync(group.writer.pause)
        acked = set(group.writer.acked)
        agent = next(a for n, a in group.cluster.agents.items() if n != "a1")
        target = new.variable("gtid_binlog_pos")
        await wait_until(lambda: (agent.timeline() or {}).get("committed_gtid") == target, 30,
                         "the agent to hold the new primary's history", group.cluster.logs)

        def first_column(rows: list[tuple[str, dict[str, Any]]]) -> list[int]:
            return [int(next(iter(values.values()))) for _, values in rows]

        # A reader of the cut-off primary itself saw its unacknowledged tail...
        direct = first_column(await trio.to_thread.run_sync(
            read_inserts, old.port, start, old.port, "root", ""))
        assert stuck <= set(direct), (sorted(stuck), direct[-5:])
        # ...which the new primary never had, and a reader of the agents never sees.
        through_agent = first_column(await trio.to_thread.run_sync(
            read_inserts, agent.mysql_port or 0, start, new.port))
        assert not stuck & set(through_agent)
        assert not stuck & set(ids(new))
        assert len(through_agent) == len(set(through_agent))  # none twice
        missing = acked - set(through_agent)
        assert not missing, f"acknowledged rows the CDC reader missed: {sorted(missing)[:10]}"
        group.writer.resume()
