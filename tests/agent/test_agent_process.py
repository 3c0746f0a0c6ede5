"""One real `binkeeper run` process: config errors, handshake refusals, garbage, status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import wire
from agent.config import load_config
from agent.wire import peer_pb2 as pb
from tests.support.cluster import Cluster


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_bad_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        'node_id = "a1"\ndata_dir = "/tmp/x"\nlisten_peer = "127.0.0.1:1"\n'
        "[mariadb]\nport = 70000\n"
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert "mariadb.port" in result.stderr


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 1, use_proxies=False)
    cluster.start()
    agent = cluster.agents["a1"]
    deadline = time.monotonic() + 20
    while agent.timeline() is None or agent.timeline()["role"] != "leader":  # type: ignore[index]
        assert agent.alive, agent.log_tail()
        assert time.monotonic() < deadline, agent.log_tail()
        time.sleep(0.05)
    yield cluster
    cluster.stop()


def handshake(port: int, hello: pb.Hello) -> pb.HelloReply:
    conn = wire.PeerConnection("client")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.send_hello(hello))
        while (envelope := conn.next_message()) is wire.NEED_DATA:
            data = sock.recv(65536)
            assert data, "closed before the HelloReply"
            conn.receive_data(data)
    assert isinstance(envelope, pb.Envelope)
    return envelope.hello_reply


def test_handshake_refusals_are_explained(agent: Cluster) -> None:
    proc = agent.agents["a1"]
    config = load_config(proc.config_path)
    good = dict(
        protocol_version=wire.PROTOCOL_VERSION,
        cluster_id="test",
        timeline_id=config.timeline_id,
        node_id="a1",
    )
    cases = [
        ({"cluster_id": "other"}, "cluster id"),
        ({"node_id": "stranger"}, "not a member"),
        ({"protocol_version": 99}, "protocol version"),
        ({"timeline_id": "0" * 32}, "timeline"),
    ]
    for change, reason in cases:
        reply = handshake(proc.peer_port, pb.Hello(**{**good, **change}))  # type: ignore[arg-type]
        assert not reply.accepted and reason in reply.reason
    log = proc.log_tail(200)
    assert "refused connection from 'stranger'" in log


def test_garbage_closes_only_that_connection(agent: Cluster) -> None:
    proc = agent.agents["a1"]
    for junk in (b"\xff" * 64, b"\x00\x00\x00\x05\x00hello", os.urandom(4096)):
        with socket.create_connection(("127.0.0.1", proc.peer_port), timeout=10) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass  # the agent closes the connection
    assert proc.alive
    assert proc.timeline() is not None
    result = run_cli("status", "--url", proc.url)
    assert result.returncode == 0, result.stderr
    assert "node a1" in result.stdout and "role leader" in result.stdout


def test_status_of_an_unreachable_agent() -> None:
    result = run_cli("status", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot reach" in result.stderr


async def test_status_lists_every_member_with_its_flush_lsn(tmp_path: Path) -> None:
    from tests.support.cluster import wait_until

    cluster = Cluster(tmp_path, 3, extra_args=["--synthetic-load", "50:200:1"],
                      use_proxies=False)
    cluster.start()
    try:
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)

        def members_flushed() -> list[dict[str, object]] | None:
            timeline = cluster.agents[leader].timeline()
            members = (timeline or {}).get("members") or []
            if len(members) == 3 and all(isinstance(m["flush_lsn"], int)
                                         and m["flush_lsn"] > 0 for m in members):
                return members
            return None

        members = await wait_until(members_flushed, 15, "flush LSNs of all members")
        assert [m["id"] for m in members] == ["a1", "a2", "a3"]
        result = run_cli("status", "--url", cluster.agents[leader].url)
        assert result.returncode == 0 and "a2" in result.stdout and "voter" in result.stdout

        # The live view: every agent's row, the one that does not answer named as such.
        urls = [arg for agent in cluster.agents.values() for arg in ("--url", agent.url)]
        watched = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--watch", "--count", "2", *urls,
             "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
        assert watched.returncode == 0, watched.stderr
        rows = [line for line in watched.stdout.splitlines() if line.startswith("│ a")]
        assert {row.split()[1] for row in rows} >= {"a1", "a2", "a3"}, watched.stdout
        assert sum("leader" in row for row in rows) >= 1 and "unreachable" in watched.stdout
        assert "no primary" in watched.stdout  # no [mariadb]: nothing recorded
    finally:
        cluster.stop()
