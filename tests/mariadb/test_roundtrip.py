"""DDL, multi-statement transactions, a 50 MB transaction and compressed binlog events all
reach the quorum byte for byte as the primary wrote them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.binlog.events import GTID, without_in_use
from agent.binlog.files import read_events, read_transactions
from agent.binlog.transactions import TransactionGrouper
from agent.harness.local_mariadb import LocalMariaDB
from tests.mariadb.test_semisync import enable_semi_sync, stored_meta, stored_transactions
from tests.support.cluster import Cluster, wait_tailing, wait_until

pytestmark = pytest.mark.mariadb


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "log_bin_compress"])
async def test_roundtrip_byte_for_byte(tmp_path: Path, compress: bool) -> None:
    primary = LocalMariaDB(tmp_path / "primary", log_bin_compress=compress,
                           extra_args=["--max-allowed-packet=256M"]).start()
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port)
    try:
        enable_semi_sync(primary)
        cluster.start()
        await wait_tailing(cluster)
        big = "x" * (50 << 20)
        done = threading.Event()

        def write() -> None:
            primary.execute(*[
                "CREATE DATABASE rt",
                "CREATE TABLE rt.t (id INT PRIMARY KEY, note VARCHAR(64), blob_ LONGBLOB,"
                " KEY by_note (note))",
                "BEGIN",
                "INSERT INTO rt.t VALUES (1, 'one', NULL), (2, 'two', NULL)",
                "UPDATE rt.t SET note = CONCAT(note, '!') WHERE id = 1",
                "DELETE FROM rt.t WHERE id = 2",
                "COMMIT",
                f"INSERT INTO rt.t VALUES (3, 'big', '{big}')",
                "ALTER TABLE rt.t ADD COLUMN extra INT DEFAULT 7",
                "FLUSH BINARY LOGS",  # ROTATE, then a new file's FDE, GTID_LIST, checkpoint
                "INSERT INTO rt.t VALUES (4, 'after rotate', NULL, 8)",
            ])
            done.set()

        threading.Thread(target=write, daemon=True).start()
        await wait_until(done.is_set, 120, "the statements to commit", cluster.logs)
        expected = {t.gtid: t.raw for t in read_transactions(primary.binlog_files())}
        assert max(len(raw) for raw in expected.values()) > 50 << 20
        expected_meta = binlog_meta_events(primary.binlog_files())
        assert {name for name, _pos, _raw in expected_meta} == {
            p.name for p in primary.binlog_files()}

        await wait_until(cluster.converged, 60, "all agents to converge", cluster.logs)
        cluster.stop()
        for name, agent in cluster.agents.items():
            stored = stored_transactions(agent.data_dir)
            differ = sorted(set(stored) ^ set(expected)) + [
                g for g in expected if g in stored and stored[g] != expected[g]]
            assert stored == expected, (
                f"{name}'s history differs from the primary's binlog at {differ[:5]}: "
                f"{[(len(stored.get(g, b'')), len(expected.get(g, b''))) for g in differ[:5]]}"
                + cluster.logs())
            meta = [(n, pos, without_in_use(raw)) for n, pos, raw in stored_meta(agent.data_dir)]
            assert meta == expected_meta, f"{name}'s binlog metadata events differ"
    finally:
        cluster.stop()
        primary.cleanup()


def binlog_meta_events(paths: list[Path]) -> list[tuple[str, int, bytes]]:
    """(file, end position, event) of every event outside a transaction in binlog files."""
    events = []
    grouper = TransactionGrouper()
    for path in paths:
        for _offset, event in read_events(path):
            if not grouper.in_transaction and event.type_code != GTID:
                events.append((path.name, event.next_pos, without_in_use(event.raw)))
            grouper.feed(event)
    return events
