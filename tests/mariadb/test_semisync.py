"""A real semi-sync primary tailed by a 3-agent quorum: COMMIT returns only once a majority
of agents holds the transaction, byte for byte as in the primary's binlog."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.binlog.files import read_transactions
from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.workload import Workload
from tests.support.cluster import Cluster, wait_until
from walstore import Gtid

pytestmark = pytest.mark.mariadb


def enable_semi_sync(db: LocalMariaDB) -> None:
    for statement in (
        "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
        "SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON",
        "SET GLOBAL rpl_semi_sync_master_timeout = 4294967295",
        "SET GLOBAL rpl_semi_sync_master_enabled = ON",
    ):
        db.query(statement)


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[LocalMariaDB]:
    db = LocalMariaDB(tmp_path / "primary").start()
    try:
        Workload(lambda: db.connect(), seed=1, accounts=50).setup()  # schema before semi-sync
        yield db
    finally:
        db.cleanup()


def status(db: LocalMariaDB, name: str) -> int:
    return int(db.query(f"SHOW GLOBAL STATUS LIKE '{name}'")[0][1])


def _read_wal(data_dir: Path, script: str) -> list[list[str]]:
    """Run SCRIPT with `s`, the agent's opened WAL, in a fresh process; its output's words."""
    [timeline] = (data_dir / "timelines").iterdir()
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, consensus, walstore\ns = walstore.WalStore.open(sys.argv[1], create=False)\n"
         + script, str(timeline)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [line.split() for line in out.splitlines()]


def stored_transactions(data_dir: Path) -> dict[str, bytes]:
    """GTID -> whole transaction bytes from an agent's WAL (pieces joined)."""
    result: dict[str, bytes] = {}
    for gtid, data in _read_wal(data_dir, (
        "from agent.binlog.transactions import whole_transactions\n"
        "records = s.read(s.first_lsn)\n"
        "for gtid, raw in whole_transactions(records, upto_lsn=s.control.commit_lsn):\n"
        "    print(gtid, raw.hex())\n")):
        assert gtid not in result, f"{gtid} stored twice"
        result[gtid] = bytes.fromhex(data)
    return result


def stored_meta(data_dir: Path) -> list[tuple[str, int, bytes]]:
    """(binlog file, end position, event) of each committed BINLOG_META record, in order."""
    return [(name, int(pos), bytes.fromhex(raw)) for name, pos, raw in _read_wal(data_dir, (
        "from agent.binlog.meta import BinlogMeta\n"
        "for r in s.read(s.first_lsn):\n"
        "    if r.end_lsn > s.control.commit_lsn: break\n"
        "    if r.kind is consensus.RecordKind.BINLOG_META:\n"
        "        m = BinlogMeta.decode(r.payload)\n"
        "        print(m.file_name, m.event.next_pos, m.event.raw.hex())\n"))]


async def test_commits_wait_for_the_quorum(primary: LocalMariaDB, tmp_path: Path) -> None:
    enable_semi_sync(primary)  # the agents refuse a primary that would not wait for them
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port)
    cluster.start()
    try:
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        await wait_until(
            lambda: (t := cluster.agents[leader].timeline()) and (t["source"] or {}).get(
                "connected"), 15, "the leader to tail the primary", cluster.logs)

        # every commit is acknowledged through the quorum (none falls back to asynchronous)
        workload = Workload(lambda: primary.connect(), seed=2, accounts=50)
        writer = threading.Thread(target=workload.run, args=(200,), daemon=True)
        writer.start()
        await wait_until(lambda: not writer.is_alive(), 60, "200 commits", cluster.logs)
        assert len(workload.history.acked) == 200
        assert status(primary, "Rpl_semi_sync_master_no_tx") == 0
        assert status(primary, "Rpl_semi_sync_master_yes_tx") >= 200
        # The leader reports where each transaction's time went, stage by stage.
        source = (cluster.agents[leader].timeline() or {})["source"]
        assert source["acks"] >= 200
        stages = source["latency"]
        assert set(stages) == {"read_to_append", "append_to_commit", "commit_to_ack",
                               "read_to_ack"}
        assert stages["read_to_ack"]["samples"] >= 200
        assert stages["read_to_ack"]["p50_ms"] >= stages["append_to_commit"]["p50_ms"] > 0

        # with 2 of 3 agents down, a commit blocks instead of being acknowledged ...
        followers = [n for n in cluster.agents if n != leader]
        for name in followers:
            cluster.agents[name].kill()
        done = threading.Event()

        def one_insert() -> None:
            primary.query("INSERT INTO shop.ledger VALUES (424242, 9, NOW(6))")
            done.set()

        thread = threading.Thread(target=one_insert, daemon=True)
        thread.start()
        await wait_until(lambda: status(primary, "Rpl_semi_sync_master_wait_sessions") >= 1,
                         10, "the primary to wait for the quorum")
        assert not done.is_set()
        # ... and resumes when an agent returns
        cluster.agents[followers[0]].start()
        await wait_until(done.is_set, 20, "the blocked commit to return", cluster.logs)
        thread.join(5)
        cluster.agents[followers[1]].start()

        # byte for byte: the quorum holds exactly the primary's binlog transactions
        expected = {t.gtid: t.raw for t in read_transactions(primary.binlog_files())}
        last = primary.query("SELECT @@gtid_binlog_pos")[0][0]
        await wait_until(cluster.converged, 20, "all agents to hold the same committed log")
        cluster.stop()
        for name, agent in cluster.agents.items():
            stored = stored_transactions(agent.data_dir)
            assert last in stored, f"{name} lacks {last}"
            tail = {g: raw for g, raw in expected.items() if g in stored}
            differ = [g for g in tail if tail[g] != stored[g]]
            assert not differ, (f"{name} differs from the binlog at {differ[:5]}: "
                                f"{tail[differ[0]][:80].hex()} vs {stored[differ[0]][:80].hex()}")
            # everything after the schema setup (which predates the agents) is stored
            assert set(stored) >= {g for g in expected if Gtid.parse(g).seq_no > 4}
    finally:
        cluster.stop()


async def test_unsafe_primary_settings_are_named(primary: LocalMariaDB, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "agents", 1, use_proxies=False, mariadb_port=primary.port)
    cluster.start()
    try:
        agent = cluster.agents["a1"]
        error = await wait_until(
            lambda: ((agent.timeline() or {}).get("source") or {}).get("error"), 20,
            "a settings error", cluster.logs)
        assert "rpl_semi_sync_master_enabled" in error
        assert "SET GLOBAL rpl_semi_sync_master_enabled=ON" in error
        assert "rpl_semi_sync_master_timeout" in error
    finally:
        cluster.stop()


async def test_leader_killed_under_load_loses_no_acknowledged_commit(
    primary: LocalMariaDB, tmp_path: Path
) -> None:
    """Jepsen set-full style: every id whose COMMIT returned is in the quorum, once."""
    enable_semi_sync(primary)
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port)
    cluster.start()
    try:
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        workload = Workload(lambda: primary.connect(), seed=5, accounts=50)
        stop = threading.Event()
        writer = threading.Thread(target=workload.run, args=(100_000,),
                                  kwargs={"stop": stop}, daemon=True)
        writer.start()
        await wait_until(lambda: len(workload.history.acked) >= 150, 30, "commits")
        cluster.agents[leader].kill()  # kill -9 the leader mid-stream
        before = len(workload.history.acked)
        await wait_until(lambda: len(workload.history.acked) >= before + 150, 30,
                         "commits to resume under a new leader", cluster.logs)
        stop.set()
        await wait_until(lambda: not writer.is_alive(), 30, "the writer to stop")
        cluster.agents[leader].start()

        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        cluster.stop()
        histories = [stored_transactions(a.data_dir) for a in cluster.agents.values()]
        assert histories[0] == histories[1] == histories[2]
        stored = b"".join(histories[0].values())
        missing = [i for i in workload.history.acked if struct.pack("<q", i) not in stored]
        assert not missing, f"{len(missing)} acknowledged commits are not in the quorum"
        seqs = sorted(Gtid.parse(g).seq_no for g in histories[0])
        assert len(seqs) == len(set(seqs))  # nothing stored twice
    finally:
        cluster.stop()


async def test_primary_killed_and_restarted(tmp_path: Path) -> None:
    """kill -9 of the primary: the leader reconnects after the restart, no gap, no duplicate."""
    primary = LocalMariaDB(tmp_path / "primary", semi_sync=True).start()  # survives restarts
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port)
    cluster.start()
    try:
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        workload = Workload(lambda: primary.connect(), seed=8, accounts=20)
        await wait_until(lambda: (t := cluster.agents[leader].timeline()) and
                         (t["source"] or {}).get("connected"), 15, "tailing", cluster.logs)
        setup = threading.Thread(target=workload.setup, daemon=True)
        setup.start()
        await wait_until(lambda: not setup.is_alive(), 30, "the schema (through the quorum)")
        stop = threading.Event()
        writer = threading.Thread(target=workload.run, args=(100_000,),
                                  kwargs={"stop": stop}, daemon=True)
        writer.start()
        await wait_until(lambda: len(workload.history.acked) >= 100, 30, "commits")
        primary.kill()
        await wait_until(lambda: workload.history.unknown or not writer.is_alive(), 30,
                         "the writer to notice")
        primary.restart()
        before = len(workload.history.acked)
        await wait_until(lambda: len(workload.history.acked) >= before + 100, 60,
                         "commits after the primary's restart", cluster.logs)
        stop.set()
        await wait_until(lambda: not writer.is_alive(), 30, "the writer to stop")

        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        expected = {t.gtid: t.raw for t in read_transactions(primary.binlog_files())}
        cluster.stop()
        for agent in cluster.agents.values():
            stored = stored_transactions(agent.data_dir)
            assert stored == expected  # the whole binlog, across the crash: no gap, no double
        stored_bytes = b"".join(expected.values())
        missing = [i for i in workload.history.acked if struct.pack("<q", i) not in stored_bytes]
        assert not missing
    finally:
        cluster.stop()
        primary.cleanup()
