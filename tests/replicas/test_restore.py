"""`binkeeper restore` writes binlog files mariadb-binlog reads cleanly and replays."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.harness.local_mariadb import LocalMariaDB
from agent.mariadb.binaries import find_binary
from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import (
    REPLICATION_PASSWORD,
    REPLICATION_USER,
    wait_until,
)

pytestmark = pytest.mark.mariadb


def run_restore(port: int, out: Path, *target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
         "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD, "--timeline", "main",
         "--out", str(out), *target], capture_output=True, text=True, timeout=120)


def replay(files: list[Path], target: LocalMariaDB) -> None:
    decoded = subprocess.run([find_binary("mariadb-binlog"), *map(str, files)],
                             capture_output=True, check=True, timeout=120)
    subprocess.run([find_binary("mariadb"), "--host=127.0.0.1", f"--port={target.port}",
                    "--user=root"], input=decoded.stdout, check=True, timeout=120)


async def test_restore_to_gtid_and_to_time(tmp_path: Path) -> None:
    async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
        primary.query("CREATE DATABASE shop")
        primary.query("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40))")
        gtids = {}
        for i in range(10):
            primary.query("INSERT INTO shop.items VALUES (%s, %s)", i, f"item {i}")
            gtids[i] = primary.query("SELECT @@gtid_binlog_pos")[0][0]
        primary.query("FLUSH BINARY LOGS")  # the history spans two files
        cutoff = int(time.time())
        await wait_until(lambda: int(time.time()) > cutoff, 5, "the next second")
        for i in range(10, 20):
            primary.query("INSERT INTO shop.items VALUES (%s, %s)", i, f"item {i}")
            gtids[i] = primary.query("SELECT @@gtid_binlog_pos")[0][0]
        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        follower = next(n for n in cluster.agents if n != leader)
        port = cluster.agents[follower].mysql_port or 0

        cases = [("gtid", ["--to-gtid", gtids[14]], 15), ("time", ["--to-time", str(cutoff)], 10)]
        for name, target, rows in cases:
            out = tmp_path / f"restore-{name}"
            result = run_restore(port, out, *target)
            assert result.returncode == 0, result.stderr
            files = sorted(out.iterdir())
            assert len(files) == 2 if name == "gtid" else len(files) >= 1
            check = subprocess.run(
                [find_binary("mariadb-binlog"), "--verify-binlog-checksum", *map(str, files)],
                capture_output=True, text=True, timeout=60)
            assert check.returncode == 0 and not check.stderr.strip(), check.stderr
            with LocalMariaDB(tmp_path / f"empty-{name}", server_id=3) as empty:
                replay(files, empty)
                count, top = empty.query("SELECT COUNT(*), MAX(id) FROM shop.items")[0]
                assert (count, top) == (rows, rows - 1)

        # --target: the server replicates from the agent up to the GTID (no files at all;
        # tests/replicas/test_restore_target.py has the rest).
        with LocalMariaDB(tmp_path / "empty-target", server_id=4) as empty:
            result = subprocess.run(
                [sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
                 "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD,
                 "--to-gtid", gtids[16], "--target", f"mysql://root@127.0.0.1:{empty.port}"],
                capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            assert f"up to GTID {gtids[16]}" in result.stdout
            assert empty.query("SELECT COUNT(*), MAX(id) FROM shop.items")[0] == (17, 16)
            refused = subprocess.run(
                [sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
                 "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD,
                 "--to-gtid", gtids[3], "--target", f"mysql://nobody:x@127.0.0.1:{empty.port}"],
                capture_output=True, text=True, timeout=120)
            assert refused.returncode == 1, refused.stderr
            assert "cannot connect to the target" in refused.stderr, refused.stderr
        bad_url = subprocess.run(
            [sys.executable, "-m", "agent", "restore", "--to-gtid", gtids[3],
             "--target", "http://127.0.0.1:1/"], capture_output=True, text=True, timeout=60)
        assert bad_url.returncode == 2 and "is not mysql://" in bad_url.stderr
        both = subprocess.run(
            [sys.executable, "-m", "agent", "restore", "--to-gtid", gtids[3], "--out", "x",
             "--target", "mysql://root@h"], capture_output=True, text=True, timeout=60)
        assert both.returncode == 2 and "not allowed with" in both.stderr

        # A GTID the timeline never had: a clear error, nothing claimed.
        result = run_restore(port, tmp_path / "restore-missing", "--to-gtid", "0-1-99999")
        assert result.returncode == 1 and "not in the committed history" in result.stderr
        # ... and nothing half-written: the files are moved into place only when complete
        assert not (tmp_path / "restore-missing").exists()
        assert not list(tmp_path.glob(".binkeeper-restore-*"))
