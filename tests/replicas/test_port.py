"""The replication port over real sockets: real clients, bad clients, many clients."""

from __future__ import annotations

import socket
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymysql
import pytest

from agent.mariadb.binaries import find_binary
from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import (
    REPLICATION_PASSWORD,
    REPLICATION_USER,
    wait_until,
)

pytestmark = pytest.mark.mariadb


def remote_binlog(port: int, user: str, password: str, file_name: str) -> str:
    """`mariadb-binlog --read-from-remote-server` of one file: what it decodes, as text."""
    out = subprocess.run(
        [find_binary("mariadb-binlog"), "--read-from-remote-server", "--host=127.0.0.1",
         f"--port={port}", f"--user={user}", f"--password={password}", file_name],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERROR" not in out.stderr and "WARNING" not in out.stderr, out.stderr
    return out.stdout


async def test_replication_port_with_real_and_bad_clients(tmp_path: Path) -> None:
    async with primary_with_serving_agents(tmp_path, max_connections=55, send_timeout=2) as (
            primary, cluster, leader):
        primary.query("CREATE DATABASE shop")
        primary.query("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40))")
        for i in range(20):
            primary.query("INSERT INTO shop.items VALUES (%s, %s)", i, f"item {i}")
        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        port = cluster.agents[leader].mysql_port or 0
        first_file = primary.binlog_files()[0].name

        # mariadb-binlog decodes the agent's stream exactly as the primary's own.
        from_agent = remote_binlog(port, REPLICATION_USER, REPLICATION_PASSWORD, first_file)
        from_primary = remote_binlog(primary.port, "root", "", first_file)
        assert "INSERT INTO shop.items VALUES (19" in from_agent
        assert from_agent == from_primary

        # Wrong credentials: the usual error.
        with pytest.raises(pymysql.err.OperationalError) as denied:
            pymysql.connect(host="127.0.0.1", port=port, user=REPLICATION_USER,
                            password="wrong")
        assert denied.value.args[0] == 1045

        # Garbage, a half handshake, an oversized packet: closed, nothing else disturbed.
        for junk in (b"\x00" * 3, b"GET / HTTP/1.1\r\n\r\n", b"\xff\xff\xff\x01" + b"x" * 100,
                     bytes(range(256)) * 4):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.recv(4096)  # the greeting
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass  # the agent answers with an error or just closes; it never hangs

        # Beyond max_connections: the usual "Too many connections", the others unharmed.
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(55)]
        try:
            for sock in idle:
                assert sock.recv(4096)[4] == 10  # each got a greeting (protocol 10)
            with pytest.raises(pymysql.err.OperationalError) as refused:
                pymysql.connect(host="127.0.0.1", port=port, user=REPLICATION_USER,
                                password=REPLICATION_PASSWORD)
            assert refused.value.args[0] == 1040
        finally:
            for sock in idle:
                sock.close()
        await wait_until(lambda: (cluster.agents[leader].timeline() or {})["replication"][
            "connections"] == 0, 15, "the idle connections to be gone", cluster.logs)

        # 50 replicas at once, each reading the whole file.
        with ThreadPoolExecutor(50) as pool:
            outputs = list(pool.map(
                lambda _: remote_binlog(port, REPLICATION_USER, REPLICATION_PASSWORD,
                                        first_file), range(50)))
        assert all(out == from_primary for out in outputs)
        status = cluster.agents[leader].timeline() or {}
        assert status["replication"]["connections"] == 0

        # A replica that stops reading is dropped after send_timeout; nothing is buffered
        # for it and everyone else is served meanwhile. (20 MB of history: more than the
        # socket buffers hold.)
        primary.query("FLUSH BINARY LOGS")
        primary.query("CREATE TABLE shop.big (id INT PRIMARY KEY, v LONGTEXT)")
        for i in range(20):
            primary.query("INSERT INTO shop.big SELECT %s, REPEAT(SHA2(RAND(), 256), 16384)", i)
        await wait_until(cluster.converged, 30, "all agents to converge", cluster.logs)
        stuck = pymysql.connect(host="127.0.0.1", port=port, user=REPLICATION_USER,
                                password=REPLICATION_PASSWORD)
        try:
            stuck._next_seq_id = 0
            stuck.write_packet(b"\x12" + struct.pack("<IHI", 4, 0, 77) + first_file.encode())
            assert remote_binlog(port, REPLICATION_USER, REPLICATION_PASSWORD,
                                 first_file) == remote_binlog(primary.port, "root", "",
                                                              first_file)
            await wait_until(lambda: (cluster.agents[leader].timeline() or {})["replication"][
                "dropped_slow"] == 1, 30, "the stuck replica to be dropped", cluster.logs)
        finally:
            stuck.close()
        assert cluster.agents[leader].alive
