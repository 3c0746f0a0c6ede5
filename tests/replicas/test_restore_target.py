"""`binkeeper restore --target`: the target server replicates from an agent until the
restore point, so a history `mariadb-binlog | mariadb` cannot replay under
gtid_strict_mode (CREATE TABLE … AS SELECT, then DDL) restores; non-empty targets and
points the history does not hold are refused, the target untouched; an interrupted
restore says where it stopped, and the same command resumes it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.harness.local_mariadb import LocalMariaDB
from agent.mariadb.binaries import find_binary
from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, wait_until

pytestmark = pytest.mark.mariadb

TABLES = ("shop.t1", "shop.t2", "shop.t3", "shop.t4")


def restore_command(port: int, target: LocalMariaDB, *point: str) -> list[str]:
    return [sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
            "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD,
            "--timeline", "main", *point, "--target", f"mysql://root@127.0.0.1:{target.port}"]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def checksums(db: LocalMariaDB) -> dict[str, int]:
    return {table: int(db.query(f"CHECKSUM TABLE {table}")[0][1]) for table in TABLES}


def seq(gtid: str) -> int:
    return int(gtid.rsplit("-", 1)[1])


def position(db: LocalMariaDB) -> str:
    return str(db.query("SELECT @@gtid_slave_pos")[0][0])


def untouched(db: LocalMariaDB, binlog_pos: str = "") -> None:
    assert db.query("SHOW ALL SLAVES STATUS") == []
    assert db.query("SELECT @@gtid_slave_pos, @@gtid_binlog_pos")[0] == ("", binlog_pos)


async def test_restore_into_a_server_by_replication(tmp_path: Path) -> None:
    async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
        def gtid() -> str:
            return str(primary.query("SELECT @@gtid_binlog_pos")[0][0])

        primary.query("CREATE DATABASE shop")
        primary.query("CREATE TABLE shop.t1 (id INT PRIMARY KEY, v VARCHAR(40))")
        for i in range(20):
            primary.query("INSERT INTO shop.t1 VALUES (%s, %s)", i, f"row {i}")
        # The history of issue 15: CREATE … SELECT then DDL breaks `mariadb-binlog | mariadb`
        # under gtid_strict_mode (ERROR 1950).
        primary.query("CREATE TABLE shop.t2 AS SELECT * FROM shop.t1 WHERE id < 10")
        primary.query("CREATE TABLE shop.t3 (id INT PRIMARY KEY, note TEXT)")
        primary.query("ALTER TABLE shop.t2 ADD COLUMN extra INT DEFAULT 7")
        primary.query("INSERT INTO shop.t3 VALUES (1, 'after the DDL')")
        first_part = gtid()
        cutoff = int(time.time())
        await wait_until(lambda: int(time.time()) > cutoff, 5, "the next second")
        for i in range(20, 25):
            primary.query("INSERT INTO shop.t1 VALUES (%s, %s)", i, f"row {i}")
        before_update = gtid()
        primary.query("UPDATE shop.t1 SET v = 'changed' WHERE id = 5")
        primary.query("CREATE TABLE shop.t4 AS SELECT id, v FROM shop.t1")
        primary.query("ALTER TABLE shop.t4 ADD PRIMARY KEY (id)")
        for i in range(25, 40):
            primary.query("INSERT INTO shop.t1 VALUES (%s, %s)", i, f"row {i}")
        final = gtid()
        expected = checksums(primary)
        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        port = cluster.agents[next(n for n in cluster.agents if n != leader)].mysql_port or 0

        # The old way fails on this history: binlog files replayed by mariadb-binlog | mariadb.
        out = tmp_path / "files"
        files = run([sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
                     "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD,
                     "--to-gtid", final, "--out", str(out)])
        assert files.returncode == 0, files.stderr
        with LocalMariaDB(tmp_path / "piped", server_id=30) as piped:
            decoded = subprocess.run([find_binary("mariadb-binlog"), *sorted(map(
                str, out.iterdir()))], capture_output=True, check=True, timeout=120)
            replayed = subprocess.run(
                [find_binary("mariadb"), "--host=127.0.0.1", f"--port={piped.port}",
                 "--user=root"], input=decoded.stdout, capture_output=True, timeout=120)
            assert replayed.returncode != 0 and b"1950" in replayed.stderr, replayed.stderr

        # Through replication it restores, gtid_strict_mode on, and leaves a plain server.
        with LocalMariaDB(tmp_path / "whole", server_id=31) as whole:
            assert whole.query("SELECT @@gtid_strict_mode")[0][0] == 1
            result = run(restore_command(port, whole, "--to-gtid", final))
            assert result.returncode == 0, result.stderr
            assert f"up to GTID {final}" in result.stdout, result.stdout
            assert f"applied {seq(final)} transaction(s)" in result.stdout, result.stdout
            assert f"applying {seq(final)} transaction(s)" in result.stderr, result.stderr
            assert checksums(whole) == expected
            assert position(whole) == final
            assert whole.query("SHOW ALL SLAVES STATUS") == []
            # again: nothing to apply, nothing changed
            again = run(restore_command(port, whole, "--to-gtid", final))
            assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stderr
            # a point before where it is: refused
            past = run(restore_command(port, whole, "--to-gtid", first_part))
            assert past.returncode == 1 and "already past" in past.stderr, past.stderr

        # --to-time: up to the last transaction committed at or before the time.
        with LocalMariaDB(tmp_path / "by-time", server_id=32) as by_time:
            result = run(restore_command(port, by_time, "--to-time", str(cutoff)))
            assert result.returncode == 0, result.stderr
            assert f"up to GTID {first_part}" in result.stdout, result.stdout
            assert position(by_time) == first_part
            assert by_time.query("SELECT COUNT(*) FROM shop.t1")[0][0] == 20
            assert by_time.query("SELECT COUNT(*) FROM shop.t3")[0][0] == 1

        # Refused, changing nothing: a point the history does not hold, a server_id of the
        # history, data without GTIDs, GTIDs of its own.
        with LocalMariaDB(tmp_path / "refused", server_id=33) as refused:
            missing = run(restore_command(port, refused, "--to-gtid", "0-1-99999"))
            assert missing.returncode == 1, missing.stderr
            assert "not in the committed history" in missing.stderr
            other_server = run(restore_command(port, refused, "--to-gtid", "0-7-3"))
            assert "not in the committed history" in other_server.stderr, other_server.stderr
            untouched(refused)
            refused.query("SET GLOBAL server_id = 1")
            same_id = run(restore_command(port, refused, "--to-gtid", final))
            assert same_id.returncode == 1 and "server_id 1" in same_id.stderr, same_id.stderr
            refused.query("SET GLOBAL server_id = 33")
            untouched(refused)
            refused.query("SET GLOBAL gtid_slave_pos = '0-5-3'")  # a position of elsewhere
            foreign = run(restore_command(port, refused, "--to-gtid", final))
            assert foreign.returncode == 1, foreign.stderr
            assert "holds other GTIDs: its position 0-5-3 is not in" in foreign.stderr
            assert refused.query("SELECT @@gtid_slave_pos")[0][0] == "0-5-3"
            refused.query("SET GLOBAL gtid_slave_pos = ''")
            untouched(refused)
            conn = refused.connect()
            with conn.cursor() as cursor:
                cursor.execute("SET sql_log_bin = 0")
                cursor.execute("CREATE DATABASE mine")
            conn.close()
            data = run(restore_command(port, refused, "--to-gtid", final))
            assert data.returncode == 1 and "already holds data (schemas: mine)" in data.stderr
            untouched(refused)
            refused.query("CREATE DATABASE other")
            own = refused.query("SELECT @@gtid_binlog_pos")[0][0]
            gtids = run(restore_command(port, refused, "--to-gtid", final))
            assert gtids.returncode == 1 and "holds other GTIDs" in gtids.stderr, gtids.stderr
            untouched(refused, own)

        # Interrupted (Ctrl-C) while the target waits on a row lock before the UPDATE: it
        # says where it stopped; the same command resumes and completes.
        with LocalMariaDB(tmp_path / "resumed", server_id=34) as resumed:
            result = run(restore_command(port, resumed, "--to-gtid", first_part))
            assert result.returncode == 0, result.stderr
            # (a replica's STOP SLAVE waits out a row lock wait: keep that short)
            resumed.query("SET GLOBAL innodb_lock_wait_timeout = 3")
            blocker = resumed.connect()
            with blocker.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT * FROM shop.t1 WHERE id = 5 FOR UPDATE")
            command = restore_command(port, resumed, "--to-gtid", final)
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            try:
                await wait_until(lambda: resumed.query(
                    "SELECT COUNT(*) FROM information_schema.innodb_trx "
                    "WHERE trx_state = 'LOCK WAIT'")[0][0] > 0, 60,
                    "the restore to wait for the row lock")
                assert position(resumed) == before_update
                process.send_signal(signal.SIGINT)
                _stdout, stderr = process.communicate(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            assert process.returncode == 130, stderr
            assert f"the target is at GTID position {before_update}" in stderr, stderr
            assert "run the same command again to resume" in stderr, stderr
            assert resumed.query("SHOW ALL SLAVES STATUS") == []
            assert position(resumed) == before_update

            # Killed outright (no chance to clean up): the target is left replicating from
            # the agent, blocked. The same command takes that over instead of refusing it;
            # still blocked, it gives up after --stall-timeout, saying where it stopped.
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            try:
                await wait_until(lambda: resumed.query(
                    "SELECT COUNT(*) FROM information_schema.innodb_trx "
                    "WHERE trx_state = 'LOCK WAIT'")[0][0] > 0, 60,
                    "the second restore to wait for the row lock")
            finally:
                process.kill()
                process.communicate(timeout=60)
            assert len(resumed.query("SHOW ALL SLAVES STATUS")) == 1
            stalled = run([*command, "--stall-timeout", "2"])
            assert stalled.returncode == 1, stalled.stderr
            assert "no progress for 2 s" in stalled.stderr, stalled.stderr
            assert f"the target is at GTID position {before_update}" in stalled.stderr
            assert resumed.query("SHOW ALL SLAVES STATUS") == []

            blocker.rollback()
            blocker.close()
            result = run(command)
            assert result.returncode == 0, result.stderr
            assert f"after {before_update}" in result.stdout, result.stdout
            applied = seq(final) - seq(before_update)
            assert f"applied {applied} transaction(s)" in result.stdout, result.stdout
            assert checksums(resumed) == expected
            assert position(resumed) == final
            assert resumed.query("SHOW ALL SLAVES STATUS") == []
