"""TLS on the replication port: a stock replica with MASTER_SSL=1 (the server certificate
verified against the group's CA) and `mariadb-binlog --ssl` read committed history; with
`require_tls` a login in the clear is refused with MariaDB's own error (3159)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pymysql
import pytest

from agent.harness.local_mariadb import LocalMariaDB
from agent.mariadb.binaries import find_binary
from tests.replicas.support import primary_with_serving_agents
from tests.replicas.test_stock_replica import checksum
from tests.support.certs import write_group
from tests.support.cluster import REPLICATION_PASSWORD, REPLICATION_USER, wait_until

pytestmark = pytest.mark.mariadb


def slave_status(replica: LocalMariaDB) -> dict[str, object]:
    with replica.connect() as conn, conn.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SHOW SLAVE STATUS")
        row = cursor.fetchone()
    assert row is not None
    return dict(row)


def mariadb_binlog(port: int, file_name: str, *ssl: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("mariadb-binlog"), "--read-from-remote-server", "--host=127.0.0.1",
         f"--port={port}", f"--user={REPLICATION_USER}", f"--password={REPLICATION_PASSWORD}",
         *ssl, file_name], capture_output=True, text=True, timeout=60)


async def test_replicas_and_mariadb_binlog_over_tls(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    write_group(certs, ["a1", "a2", "a3"])
    ca = certs / "ca.pem"
    secure = LocalMariaDB(tmp_path / "secure", server_id=40).start()
    clear = LocalMariaDB(tmp_path / "clear", server_id=41).start()
    try:
        async with primary_with_serving_agents(tmp_path, tls_dir=certs, require_tls=True) as (
                primary, cluster, leader):
            primary.query("CREATE DATABASE s")
            primary.query("CREATE TABLE s.t (id INT PRIMARY KEY, v VARCHAR(20))")
            for i in range(50):
                primary.query("INSERT INTO s.t VALUES (%s, %s)", i, f"row {i}")
            follower = next(n for n in cluster.agents if n != leader)
            port = cluster.agents[follower].mysql_port or 0
            # MASTER_SSL with the CA: the agent's certificate (127.0.0.1 among its names)
            # is verified, host name included.
            secure.query(
                f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, "
                f"MASTER_USER='{REPLICATION_USER}', MASTER_PASSWORD='{REPLICATION_PASSWORD}', "
                f"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_SSL=1, "
                f"MASTER_SSL_CA='{ca}', MASTER_SSL_VERIFY_SERVER_CERT=1")
            secure.query("START SLAVE")
            target = primary.variable("gtid_binlog_pos")
            await wait_until(lambda: secure.variable("gtid_slave_pos") == target, 60,
                             f"the TLS replica to reach {target}", cluster.logs)
            assert checksum(primary, "s.t") == checksum(secure, "s.t")
            assert slave_status(secure)["Master_SSL_Allowed"] == "Yes"
            timeline = cluster.agents[follower].timeline()
            assert timeline is not None
            assert [r["tls"] for r in timeline["replication"]["replicas"]] == [True]

            # In the clear: refused with require_secure_transport's error, retried, refused.
            clear.query(
                f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, "
                f"MASTER_USER='{REPLICATION_USER}', MASTER_PASSWORD='{REPLICATION_PASSWORD}', "
                "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_SSL=0")
            clear.query("START SLAVE")
            await wait_until(lambda: slave_status(clear)["Last_IO_Errno"] == 3159, 60,
                             "the plaintext replica to be refused with 3159", cluster.logs)
            assert "insecure transport" in str(slave_status(clear)["Last_IO_Error"])
            assert not clear.query("SHOW DATABASES LIKE 's'")

            first_file = primary.binlog_files()[0].name
            decoded = mariadb_binlog(port, first_file, "--ssl", f"--ssl-ca={ca}",
                                     "--ssl-verify-server-cert")
            assert decoded.returncode == 0, decoded.stderr
            assert "row 49" in decoded.stdout or "INSERT INTO" in decoded.stdout
            refused = mariadb_binlog(port, first_file, "--skip-ssl")
            assert refused.returncode != 0 and "insecure transport" in refused.stderr

            # binkeeper restore verifies the agent's certificate too
            restored = subprocess.run(
                [sys.executable, "-m", "agent", "restore", "--from", f"127.0.0.1:{port}",
                 "--user", REPLICATION_USER, "--password", REPLICATION_PASSWORD,
                 "--ssl-ca", str(ca), "--to-gtid", target, "--out", str(tmp_path / "pitr")],
                capture_output=True, text=True, timeout=120)
            assert restored.returncode == 0, restored.stderr
            assert f"up to GTID {target}" in restored.stdout
    finally:
        secure.cleanup()
        clear.cleanup()
