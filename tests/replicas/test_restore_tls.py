"""`binkeeper restore --target` over TLS: the target server replicates from an agent that
requires TLS, verifying its certificate against the CA given to the restore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.harness.local_mariadb import LocalMariaDB
from tests.replicas.support import primary_with_serving_agents
from tests.support.certs import write_group
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, wait_until

pytestmark = pytest.mark.mariadb


async def test_restore_into_a_server_over_tls(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    write_group(certs, ["a1", "a2", "a3"])
    async with primary_with_serving_agents(tmp_path, tls_dir=certs, require_tls=True) as (
            primary, cluster, leader):
        primary.query("CREATE DATABASE s")
        primary.query("CREATE TABLE s.t (id INT PRIMARY KEY, v VARCHAR(20))")
        for i in range(30):
            primary.query("INSERT INTO s.t VALUES (%s, %s)", i, f"row {i}")
        final = primary.query("SELECT @@gtid_binlog_pos")[0][0]
        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        port = cluster.agents[next(n for n in cluster.agents if n != leader)].mysql_port or 0
        with LocalMariaDB(tmp_path / "target", server_id=42) as target:
            result = subprocess.run(
                [sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
                 "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD,
                 "--ssl-ca", str(certs / "ca.pem"), "--to-gtid", final,
                 "--target", f"mysql://root@127.0.0.1:{target.port}"],
                capture_output=True, text=True, timeout=180)
            assert result.returncode == 0, result.stderr
            assert f"up to GTID {final}" in result.stdout, result.stdout
            assert target.query("SELECT @@gtid_slave_pos")[0][0] == final
            assert target.query("SELECT COUNT(*) FROM s.t")[0][0] == 30
            assert target.query("SHOW ALL SLAVES STATUS") == []
