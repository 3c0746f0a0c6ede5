"""Real mariadbd: the launcher, the OLTP workload, and the binlog file reader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.binlog.files import BinlogFileError, read_events, read_transactions
from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.workload import Workload
from agent.mariadb.binaries import find_binary
from walstore import Gtid

pytestmark = pytest.mark.mariadb


def test_server_settings(mariadb: LocalMariaDB) -> None:
    assert mariadb.variable("binlog_format") == "ROW"
    assert mariadb.variable("binlog_checksum") == "CRC32"
    assert mariadb.variable("log_bin") == "1"
    assert mariadb.variable("server_id") == "1"


def test_semi_sync_settings(tmp_path: Path) -> None:
    with LocalMariaDB(tmp_path / "db", semi_sync=True) as server:
        assert server.variable("rpl_semi_sync_master_enabled") == "1"
        assert server.variable("rpl_semi_sync_master_wait_point") == "AFTER_SYNC"
        assert server.variable("rpl_semi_sync_master_timeout") == "4294967295"


def test_workload_history_matches_the_ledger(mariadb: LocalMariaDB) -> None:
    workload = Workload(lambda: mariadb.connect(), seed=3)
    workload.setup()
    history = workload.run(200)
    assert len(history.acked) == 200 and not history.failed and not history.unknown
    rows = mariadb.query("SELECT id FROM shop.ledger")
    assert {r[0] for r in rows} == history.acked


def test_binlog_reader_agrees_with_the_server_and_mariadb_binlog(mariadb: LocalMariaDB) -> None:
    workload = Workload(lambda: mariadb.connect(), seed=4)
    workload.setup()
    workload.run(100)
    mariadb.query("FLUSH BINARY LOGS")  # a ROTATE, and a second file
    workload.run(50)
    files = mariadb.binlog_files()
    assert len(files) == 2
    transactions = list(read_transactions(files))
    gtid_pos = mariadb.query("SELECT @@gtid_binlog_pos")[0][0]
    assert transactions[-1].gtid == gtid_pos
    seqs = [Gtid.parse(t.gtid).seq_no for t in transactions]
    assert seqs == list(range(1, len(seqs) + 1))  # every transaction, none twice
    result = subprocess.run(
        [find_binary("mariadb-binlog"), "--verify-binlog-checksum", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr.upper()
    listed = [
        line.split("GTID ")[1].split()[0]
        for line in result.stdout.splitlines()
        if "\tGTID " in line or (" GTID " in line and "end_log_pos" in line)
    ]
    assert listed == [t.gtid for t in transactions]


def test_flipped_byte_names_the_offset(mariadb: LocalMariaDB, tmp_path: Path) -> None:
    mariadb.query("CREATE DATABASE x")
    source = mariadb.binlog_files()[0]
    events = list(read_events(source))
    offset, event = events[-1]
    damaged = bytearray(source.read_bytes())
    damaged[offset + event.event_length - 6] ^= 0x20
    copy = tmp_path / "bin.000001"
    copy.write_bytes(bytes(damaged))
    with pytest.raises(BinlogFileError, match=f"offset {offset}: CRC32 mismatch"):
        list(read_events(copy))


def test_kill_and_restart_leave_no_process(tmp_path: Path) -> None:
    server = LocalMariaDB(tmp_path / "db").start()
    try:
        server.query("CREATE DATABASE kept")
        pid = server.process.pid  # type: ignore[union-attr]
        server.kill()
        assert not server.alive
        server.restart()
        assert server.process.pid != pid  # type: ignore[union-attr]
        assert ("kept",) in server.query("SHOW DATABASES")
    finally:
        server.cleanup()
    assert not server.alive
    with pytest.raises(OSError):
        import os

        os.kill(pid, 0)
