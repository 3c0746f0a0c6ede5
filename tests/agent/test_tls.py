"""Mutual TLS between agents, HTTPS on the admin API, and every refusal: plaintext to a TLS
port, a certificate from another CA, a certificate for another node id (accepting and
dialing), and listeners beyond loopback without TLS refused at start."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from agent import tls, wire
from agent.config import ConfigError, load_config, parse_config
from agent.harness.ports import free_port
from agent.node.transport import PeerTransport
from agent.wire import peer_pb2 as pb
from tests.support.certs import write_group, write_node, write_unnamed
from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

LOAD = ["--synthetic-load", "100:200:2"]


def tls_table(certs: Path, node: str = "a1", key: str | None = None) -> str:
    return (f'[tls]\nca_file = "{certs / "ca.pem"}"\ncert_file = "{certs / f"{node}.pem"}"\n'
            f'key_file = "{certs / f"{key or node}.key"}"\n')


def base_config(tmp_path: Path, listeners: str) -> str:
    return f'node_id = "a1"\ndata_dir = "{tmp_path / "data"}"\n{listeners}'


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ca = write_group(directory, ["a1", "a2", "a3"])
    write_unnamed(directory, ca, "unnamed")
    return directory


@pytest.mark.parametrize(("listeners", "message"), [
    ('listen_peer = "10.0.0.5:5454"\n', r"listen_peer: .* set \[tls\]"),
    ('listen_peer = "127.0.0.1:5454"\nlisten_http = "0.0.0.0:7676"\n[admin]\n'
     'jwt_secret_file = "SECRET"\n', r"listen_http: .*in the clear: set \[tls\]"),
    ('listen_peer = "127.0.0.1:5454"\nlisten_mysql = "10.0.0.5:3307"\n[replication]\n'
     'password = "pw"\n', r"listen_mysql: .*in the clear: set \[tls\]"),
    ('listen_peer = "127.0.0.1:5454"\n[replication]\nrequire_tls = true\n',
     r"replication.require_tls: needs a \[tls\]"),
    ('listen_peer = "127.0.0.1:5454"\n[[peers]]\nid = "a2"\naddr = "10.0.0.6:5454"\n',
     r"peers\[0\].addr: 10.0.0.6:5454 is not a loopback address.*set \[tls\]"),
])
def test_listeners_beyond_loopback_need_tls(tmp_path: Path, listeners: str,
                                            message: str) -> None:
    secret = tmp_path / "admin.secret"
    secret.write_bytes(b"x" * 40)
    text = base_config(tmp_path, listeners.replace("SECRET", str(secret)))
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(text))


def test_bad_certificates_are_refused_at_start(tmp_path: Path, certs: Path) -> None:
    listeners = 'listen_peer = "10.0.0.5:5454"\n'
    # accepted: every listener beyond loopback, with TLS (and a password, a token secret)
    secret = tmp_path / "admin.secret"
    secret.write_bytes(b"x" * 40)
    config = parse_config(tomllib.loads(base_config(
        tmp_path, listeners + 'listen_http = "10.0.0.5:7676"\nlisten_mysql = "10.0.0.5:3307"\n'
        f'[admin]\njwt_secret_file = "{secret}"\n[replication]\npassword = "pw"\n'
        'require_tls = true\n' + tls_table(certs))))
    assert config.tls is not None and config.replication.require_tls
    # with [tls], replicas must use TLS unless the port is loopback and says otherwise
    assert parse_config(tomllib.loads(base_config(
        tmp_path, 'listen_peer = "127.0.0.1:5454"\n' + tls_table(certs)))).replication.require_tls
    with pytest.raises(ConfigError, match=r"replication.require_tls: must be true"):
        parse_config(tomllib.loads(base_config(
            tmp_path, listeners + 'listen_mysql = "10.0.0.5:3307"\n[replication]\n'
            'password = "pw"\nrequire_tls = false\n' + tls_table(certs))))
    refusals = {
        tls_table(certs, node="a2"): r"tls.cert_file: .*certificate of node 'a2'.*\('a1'\)",
        tls_table(certs, key="a2"): r"tls.cert_file: cannot use .*a1.pem with the key",
        tls_table(certs).replace("ca.pem", "missing.pem"): r"tls.ca_file: cannot use",
        tls_table(certs).replace(f'ca_file = "{certs / "ca.pem"}"\n', ""):
            r"tls.ca_file: required key is missing",
        tls_table(certs) + 'verify = "none"\n': r"unknown key\(s\): tls.verify",
    }
    for table, message in refusals.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(tomllib.loads(base_config(tmp_path, listeners + table)))


def _hello(timeline_id: str, node_id: str) -> bytes:
    return wire.PeerConnection("client").send_hello(pb.Hello(
        protocol_version=wire.PROTOCOL_VERSION, cluster_id="test", timeline_id=timeline_id,
        node_id=node_id))


def _client_context(certs: Path, name: str, ca_file: Path | None = None) -> ssl.SSLContext:
    return tls.peer_client_context(tls.TlsFiles(ca_file or certs / "ca.pem",
                                                certs / f"{name}.pem", certs / f"{name}.key"))


async def _attempt(port: int, hello: bytes, context: ssl.SSLContext | None
                   ) -> pb.HelloReply | str:
    """Connect (TLS when CONTEXT), send HELLO: the reply, or how the connection ended."""
    plain = await trio.open_tcp_stream("127.0.0.1", port)
    stream: trio.abc.Stream = plain if context is None else trio.SSLStream(plain, context)
    conn = wire.PeerConnection("client")
    conn.send_hello(pb.Hello())  # put the codec past its own Hello; HELLO is sent raw
    try:
        with trio.fail_after(10):
            await stream.send_all(hello)
            while (envelope := conn.next_message()) is wire.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return "closed"
                conn.receive_data(data)
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        return f"broken: {exc.__cause__ or exc}"
    finally:
        await plain.aclose()
    assert isinstance(envelope, pb.Envelope)
    return envelope.hello_reply


def _inbound(cluster: Cluster, node_id: str) -> dict[str, int]:
    timeline = cluster.agents[node_id].timeline()
    assert timeline is not None
    counts: dict[str, int] = timeline["peer_connections"]
    return counts


async def test_agents_speak_mutual_tls_and_refuse_impostors(tmp_path: Path, certs: Path) -> None:
    cluster = Cluster(tmp_path, 3, extra_args=LOAD, use_proxies=False, tls_dir=certs)
    try:
        cluster.start()
        leader = await wait_until(cluster.leader, 30, "a leader", cluster.logs)
        for node_id in cluster.agents:  # commits reach every agent, over mutual TLS
            await wait_until(lambda n=node_id: _commit(cluster, n) > 2000, 60,
                             f"{node_id} to commit", cluster.logs)
        status = cluster.agents[leader].timeline()
        assert status is not None and all(peer["tls"] and peer["connected"]
                                          for peer in status["peers"].values())
        a1 = cluster.agents["a1"]
        timeline_id = load_config(a1.config_path).timeline_id
        before = _inbound(cluster, "a1")["refused"]
        other_ca = tmp_path / "other-ca"
        write_group(other_ca, ["a2"])
        # plaintext to the TLS port
        outcome = await _attempt(a1.peer_port, _hello(timeline_id, "a2"), None)
        assert isinstance(outcome, str), outcome
        # a certificate the group's CA did not sign (a2's name, another CA)
        outcome = await _attempt(a1.peer_port, _hello(timeline_id, "a2"),
                                 _client_context(other_ca, "a2", certs / "ca.pem"))
        assert isinstance(outcome, str), outcome
        # a3's genuine certificate, speaking for a2
        outcome = await _attempt(a1.peer_port, _hello(timeline_id, "a2"),
                                 _client_context(certs, "a3"))
        assert isinstance(outcome, pb.HelloReply) and not outcome.accepted
        assert "presented the certificate of node 'a3'" in outcome.reason
        # a certificate of the group's CA that names no node proves no node id
        outcome = await _attempt(a1.peer_port, _hello(timeline_id, "a2"),
                                 _client_context(certs, "unnamed"))
        assert isinstance(outcome, pb.HelloReply) and not outcome.accepted
        assert "presented the certificate of node None" in outcome.reason
        await wait_until(lambda: _inbound(cluster, "a1")["refused"] >= before + 4, 10,
                         "a1 to count 4 refusals", cluster.logs)
        log = a1.log_path.read_text()
        assert "TLS handshake failed" in log and "certificate of node 'a3'" in log
        # the control: a3's certificate speaking for a3 is accepted
        outcome = await _attempt(a1.peer_port, _hello(timeline_id, "a3"),
                                 _client_context(certs, "a3"))
        assert isinstance(outcome, pb.HelloReply) and outcome.accepted, outcome
        # the admin API is HTTPS: the CLI verifies it against the CA; plain HTTP fails
        shown = subprocess.run([sys.executable, "-m", "agent", "status", "--url", a1.url,
                                "--ca", str(certs / "ca.pem")],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "node a1" in shown.stdout, shown.stderr
        untrusted = subprocess.run([sys.executable, "-m", "agent", "status", "--url", a1.url,
                                    "--ca", str(other_ca / "ca.pem")],
                                   capture_output=True, text=True, timeout=60)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{a1.http_port}/v1/status", timeout=5)
        # and the cluster is still committing
        start = _commit(cluster, leader)
        await wait_until(lambda: _commit(cluster, leader) > start + 1000, 60,
                         "commits to go on", cluster.logs)
    finally:
        cluster.stop()


def _commit(cluster: Cluster, node_id: str) -> int:
    timeline = cluster.agents[node_id].timeline()
    return -1 if timeline is None else int(timeline["commit_lsn"])


async def test_a_dialed_peer_must_prove_the_node_id_it_was_dialed_as(
        tmp_path: Path, certs: Path) -> None:
    """a1 dials a2's address and meets a3's (genuine) certificate: it does not talk."""
    impostor_port = free_port()
    text = (f'node_id = "a1"\ndata_dir = "{tmp_path}"\n'
            f'listen_peer = "127.0.0.1:{free_port()}"\ncluster_id = "test"\n'
            f'[[peers]]\nid = "a2"\naddr = "127.0.0.1:{impostor_port}"\n' + tls_table(certs))
    config = parse_config(tomllib.loads(text))
    impostor = tls.peer_server_context(
        tls.TlsFiles(certs / "ca.pem", certs / "a3.pem", certs / "a3.key"))
    delivered: list[Any] = []
    transport = PeerTransport(config, delivered.append)
    accepted = 0

    async def answer(stream: trio.SSLStream[trio.SocketStream]) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await stream.receive_some(65536)  # a Hello would come only after the check
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_ssl_over_tcp, answer, impostor_port, impostor)
        await nursery.start(transport.run)
        link = transport.links["a2"]
        with trio.fail_after(20):
            while "for node 'a3'" not in (link.last_error or ""):
                await trio.sleep(0.05)
        assert not link.connected and accepted >= 1
        assert re.search(r"certificate at 127.0.0.1:\d+ is for node 'a3', not 'a2'",
                         link.last_error or "")
        nursery.cancel_scope.cancel()
    assert delivered == []


def test_certificates_from_another_ca_do_not_verify(tmp_path: Path) -> None:
    """The CA really is checked: a leaf signed by another CA fails against ours."""
    ours, theirs = trustme.CA(), trustme.CA()
    write_group(tmp_path / "ours", ["a1"], ours)
    write_node(tmp_path / "ours", "a2", theirs, name="stranger")
    assert tls.certificate_node_id(tmp_path / "ours" / "stranger.pem") == "a2"
    with pytest.raises(ConfigError, match="certificate of node 'a2'"):
        parse_config(tomllib.loads(
            f'node_id = "a1"\ndata_dir = "{tmp_path}"\nlisten_peer = "127.0.0.1:1"\n'
            + tls_table(tmp_path / "ours", node="stranger")))


def test_binkeeper_certs_makes_a_group_the_agents_accept(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    made = subprocess.run([sys.executable, "-m", "agent", "certs", "--out", str(out),
                           "a1=127.0.0.1,localhost", "a2=10.0.0.2"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert oct((out / "a1.key").stat().st_mode & 0o777) == "0o600"
    ca_before = (out / "ca.pem").read_bytes()
    added = subprocess.run([sys.executable, "-m", "agent", "certs", "--out", str(out), "a3"],
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0 and (out / "ca.pem").read_bytes() == ca_before  # reused
    for node in ("a1", "a2", "a3"):
        config = parse_config(tomllib.loads(
            f'node_id = "{node}"\ndata_dir = "{tmp_path}"\nlisten_peer = "10.0.0.9:5454"\n'
            + tls_table(out, node=node)))
        assert config.tls is not None
    # the certificates work for a real handshake: a1 as server, a3 as client
    server = tls.peer_server_context(tls.TlsFiles(out / "ca.pem", out / "a1.pem", out / "a1.key"))
    client = _client_context(out, "a3")
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server)
    for _ in range(10):  # the handshake in memory, each side's output the other's input
        for side in (client_side, server_side):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
    assert tls.node_id_of(server_side.getpeercert()) == "a3"
    assert tls.node_id_of(client_side.getpeercert()) == "a1"
    bad = subprocess.run([sys.executable, "-m", "agent", "certs", "--out", str(out), "bad id"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a valid node id" in bad.stderr
