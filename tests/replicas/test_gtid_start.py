"""A dump by GTID starts where MariaDB's own would, for every domain (sql_repl.cc,
gtid_find_binlog_file): a domain the replica's position does not name is sent from its first
transaction, a named one after the replica's GTID, nothing twice, nothing skipped.

A real mariadbd writes two interleaved domains over several binlog files; its files are
loaded into a WAL the way the source stores them, and for each replica position the GTIDs
a `BinlogStream` sends are compared with those the real primary sends to the same request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consensus
import walstore
from agent.binlog.events import GTID, Event, gtid_of
from agent.binlog.files import read_events
from agent.binlog.meta import BinlogMeta, is_stored_meta
from agent.binlog.transactions import TransactionGrouper
from agent.harness.local_mariadb import LocalMariaDB
from agent.mariadb.dump_client import (
    BINLOG_DUMP_NON_BLOCK,
    error_text,
    is_end_of_stream,
    read_packet,
    register_replica,
    start_dump,
)
from agent.serving.binlog_stream import BinlogStream, DumpError
from tests.replicas.support import primary_with_serving_agents
from tests.replicas.test_stock_replica import checksum, point_replica
from tests.support.cluster import wait_until

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    """Domains 0 and 1 interleaved over three binlog files; domain 1 begins in the first."""
    db = LocalMariaDB(tmp_path_factory.mktemp("gtid-start") / "primary").start()
    try:
        statements = ["CREATE DATABASE t", "CREATE TABLE t.x (d INT, n INT)"]
        for n in range(1, 10):
            for domain in (0, 1) if n % 3 else (0,):
                statements += [f"SET SESSION gtid_domain_id={domain}",
                               f"INSERT INTO t.x VALUES ({domain}, {n})"]
            if n in (4, 7):
                statements.append("FLUSH BINARY LOGS")
        db.execute(*statements)
        yield db
    finally:
        db.cleanup()


def load_wal(files: list[Path], directory: Path) -> walstore.WalStore:
    """The files' transactions and metadata events as the source stores them."""
    store = walstore.WalStore.open(directory)
    grouper = TransactionGrouper()
    for path in files:
        for _offset, event in read_events(path):
            if not grouper.in_transaction and event.type_code != GTID:
                if is_stored_meta(event):
                    store.append(1, BinlogMeta(path.name, event).encode(),
                                 kind=consensus.RecordKind.BINLOG_META)
                continue
            transaction = grouper.feed(event)
            if transaction is not None:
                store.append(1, transaction.raw, gtid=transaction.gtid)
    store.flush()
    return store


def gtids_in(events: list[bytes | memoryview]) -> list[str]:
    parsed = (Event.parse(bytes(raw)) for raw in events)
    return [gtid_of(event)[0] for event in parsed if event.type_code == GTID]


def agent_sends(store: walstore.WalStore, state: str) -> list[str]:
    """The GTIDs a dump from STATE sends, the whole committed log being committed."""
    stream = BinlogStream(store, server_id=100)
    sent = gtids_in(list(stream.start_by_gtid(state, store.end_lsn)))
    while True:
        events, _until = stream.read(store.end_lsn, 1 << 20)
        if not events:
            return sent
        sent += gtids_in(events)


def primary_sends(db: LocalMariaDB, state: str) -> list[str]:
    """The GTIDs the real primary sends a replica connecting with @slave_connect_state STATE
    (non-blocking dump: it ends at the end of the binlog); raises DumpError on its ERR."""
    conn = db.connect()
    try:
        with conn.cursor() as cursor:
            for statement in ("SET @master_binlog_checksum = @@global.binlog_checksum",
                              "SET @mariadb_slave_capability = 4",
                              f"SET @slave_connect_state = '{state}'",
                              "SET @slave_gtid_strict_mode = 1"):
                cursor.execute(statement)
        register_replica(conn, 99)
        start_dump(conn, 99, BINLOG_DUMP_NON_BLOCK)
        sent: list[str] = []
        while True:
            packet = read_packet(conn)
            if packet[:1] == b"\xff":
                raise DumpError(error_text(packet))
            if is_end_of_stream(packet):
                return sent
            sent += gtids_in([packet[1:]])
    finally:
        conn.close()


def everything(db: LocalMariaDB) -> list[str]:
    return primary_sends(db, "")


@pytest.fixture
def store(primary: LocalMariaDB, tmp_path: Path) -> Iterator[walstore.WalStore]:
    wal = load_wal(primary.binlog_files(), tmp_path / "wal")
    try:
        yield wal
    finally:
        wal.close()


def expected_after(history: list[str], state: str) -> list[str]:
    """What a replica at STATE lacks: per named domain what follows its GTID, the whole of
    every other domain — in binlog order."""
    named = walstore.parse_position(state)
    result, reached = [], {d for d in named if str(named[d]) not in history}
    for gtid in history:
        domain = walstore.Gtid.parse(gtid).domain
        if domain not in named or domain in reached:
            result.append(gtid)
        elif gtid == str(named[domain]):
            reached.add(domain)
    return result


def test_each_domain_starts_where_the_replica_is(primary: LocalMariaDB,
                                                 store: walstore.WalStore) -> None:
    history = everything(primary)
    domains = {walstore.Gtid.parse(g).domain for g in history}
    assert domains == {0, 1} and len(primary.binlog_files()) == 3
    d0 = [g for g in history if g.startswith("0-")]
    d1 = [g for g in history if g.startswith("1-")]
    states = [
        "",
        d0[4],  # only domain 0 named: domain 1 comes whole, from the first file
        d0[-1],  # domain 0 complete: still all of domain 1
        d1[2],  # only domain 1 named
        f"{d0[8]},{d1[1]}",  # both, with different progress (in different files)
        f"{d0[1]},{d1[-2]}",
        f"{d0[-1]},{d1[-1]}",  # up to date: nothing
    ]
    for state in states:
        sent = agent_sends(store, state)
        assert len(sent) == len(set(sent)), f"{state!r}: sent twice"
        assert sent == expected_after(history, state), state
        assert sent == primary_sends(primary, state), f"{state!r}: unlike the primary"
    assert set(agent_sends(store, d0[4])) >= set(d1)


def test_a_domain_begun_before_the_agents_history_is_refused(
        primary: LocalMariaDB, tmp_path: Path) -> None:
    """The WAL holds the files from the second on (domain 1 began in the first): a replica
    needing domain 1 whole gets ERR 1236, as from a primary whose first binlog was purged."""
    files = primary.binlog_files()
    history = everything(primary)
    d0 = [g for g in history if g.startswith("0-")]
    d1 = [g for g in history if g.startswith("1-")]
    store = load_wal(files[1:], tmp_path / "wal")
    try:
        with pytest.raises(DumpError, match="domain 1"):
            agent_sends(store, d0[-2])
        # naming domain 1 too, past the missing part, is served
        late = f"{d0[-2]},{d1[-2]}"
        assert agent_sends(store, late) == expected_after(history, late)
    finally:
        store.close()
    primary.query(f"PURGE BINARY LOGS TO '{files[1].name}'")
    with pytest.raises(DumpError, match="1236"):
        primary_sends(primary, d0[-2])
    assert primary_sends(primary, late) == expected_after(history, late)


async def test_a_stock_replica_naming_one_domain_receives_the_other(tmp_path: Path) -> None:
    """A replica seeded with domain 0 up to 0-1-5 and nothing of domain 1, which began before
    0-1-5, replicates from an agent: it gets all of domain 1, and domain 0 after 0-1-5."""
    replica = LocalMariaDB(tmp_path / "replica", server_id=30).start()
    try:
        async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
            schema = ["CREATE DATABASE t", "CREATE TABLE t.x (d INT, n INT)"]
            domain_0 = [f"INSERT INTO t.x VALUES (0, {n})" for n in range(3)]
            primary.execute(*schema)
            primary.execute("SET SESSION gtid_domain_id=1",
                            *[f"INSERT INTO t.x VALUES (1, {n})" for n in range(3)])
            primary.execute(*domain_0)
            seeded = primary.query("SELECT @@gtid_binlog_pos")[0][0]
            primary.execute("SET SESSION gtid_domain_id=1",
                            *[f"INSERT INTO t.x VALUES (1, {n})" for n in range(3, 6)])
            primary.execute(*[f"INSERT INTO t.x VALUES (0, {n})" for n in range(3, 6)])
            position = ",".join(g for g in seeded.split(",") if g.startswith("0-"))
            replica.execute("SET SESSION sql_log_bin=0", *schema, *domain_0,
                            f"SET GLOBAL gtid_slave_pos='{position}'")
            follower = next(n for n in cluster.agents if n != leader)
            point_replica(replica, cluster.agents[follower].mysql_port or 0)
            target = primary.query("SELECT @@gtid_binlog_pos")[0][0]

            def caught_up() -> bool:
                status = replica.slave_status()
                assert not status.get("Last_IO_Error"), status.get("Last_IO_Error")
                assert not status.get("Last_SQL_Error"), status.get("Last_SQL_Error")
                return bool(replica.query("SELECT @@gtid_slave_pos")[0][0] == target)

            await wait_until(caught_up, 60, f"the replica to reach {target}", cluster.logs)
            assert checksum(replica, "t.x") == checksum(primary, "t.x")
    finally:
        replica.cleanup()


GTIDS = st.builds(lambda d, s, n: f"{d}-{s}-{n}", st.sampled_from([0, 1, 2, 4294967295]),
                  st.sampled_from([1, 2, 0]), st.integers(0, 30))
STATES = st.one_of(
    st.lists(GTIDS, max_size=3).map(",".join),
    st.text(alphabet="0123456789-,; x", max_size=30),
    st.sampled_from(["", "0-1-99999999999999999999", "-1-1-1", "0-1-1,0-1-2", ",", "1-1"]),
)


FILES = st.sampled_from(["", "bin.000001", "x", "../etc"]) | st.text(max_size=12)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(STATES.map(lambda s: ("gtid", s, "", 0)),
                 st.tuples(st.just("position"), st.just(""), FILES,
                           st.integers(0, 2**32 - 1))),
       st.one_of(st.none(), STATES))
def test_any_dump_request_is_served_or_refused(
        store: walstore.WalStore, request_: tuple[str, str, str, int], until: str | None) -> None:
    """Whatever a replica asks — any GTID state, file, position, UNTIL — the stream serves
    committed events or refuses with DumpError (ERR 1236); it never raises anything else."""
    mode, state, file_name, position = request_
    stream = BinlogStream(store, server_id=100)
    try:
        if mode == "gtid":
            stream.start_by_gtid(state, store.end_lsn)
        else:
            stream.start_by_position(file_name, position)
        stream.set_until(until)
        for _ in range(100):
            events, done = stream.read(store.end_lsn, 1 << 16)
            if done or not events:
                break
    except DumpError:
        pass
