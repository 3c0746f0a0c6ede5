"""The peer transport in one process over real loopback sockets: frames written straight
from the caller, and the ends the kernel did not take finished by the sending task, in order."""

from __future__ import annotations

import logging
import random
import tomllib

import pytest
import trio

import consensus
from agent.config import parse_config
from agent.harness.ports import free_port
from agent.node.transport import MAX_INBOUND_PER_HOST, QUEUE_BYTES, PeerTransport, Throttled

RECORD = 1 << 20


def config(node: str, ports: dict[str, int]) -> object:
    peers = "".join(f'[[peers]]\nid = "{p}"\naddr = "127.0.0.1:{port}"\n'
                    for p, port in ports.items() if p != node)
    return parse_config(tomllib.loads(
        f'node_id = "{node}"\ndata_dir = "/nonexistent"\n'
        f'listen_peer = "127.0.0.1:{ports[node]}"\nlisten_http = "127.0.0.1:0"\n{peers}'
        '[mariadb]\nhost = "127.0.0.1"\nport = 3306\nuser = "root"\npassword = ""\n'
        'timeline = "main"\n'))


def append(index: int) -> consensus.AppendRequest:
    payload = random.Random(index).randbytes(RECORD)  # incompressible: zstd cannot shrink it
    entry = consensus.Entry(lsn=index * RECORD, term=1, kind=consensus.RecordKind.DATA,
                            payload=payload, gtid=None, continued=False)
    return consensus.AppendRequest(1, "a1", index * RECORD, 1 if index else 0, 0, (entry,))


async def test_direct_writes_and_unsent_ends_arrive_whole_and_in_order() -> None:
    ports = {"a1": free_port(), "a2": free_port()}
    received: list[consensus.AppendRequest] = []
    sender = PeerTransport(config("a1", ports), lambda msg: None)  # type: ignore[arg-type]
    receiver = PeerTransport(config("a2", ports), received.append)  # type: ignore[arg-type]
    count = 12  # 12 MiB sent without yielding: far more than a socket buffer holds
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        await nursery.start(sender.run)
        link = sender.links["a2"]
        with trio.fail_after(10):
            while not link.idle():
                await trio.sleep(0.01)
        sender.send("a2", consensus.Heartbeat(1, "a1", 0))  # small: the kernel takes it
        for index in range(count):
            sender.send("a2", append(index))
        with trio.fail_after(30):
            while len(received) < count + 1:
                await trio.sleep(0.01)
        idle_after = link.idle()  # all written: direct writes may resume
        nursery.cancel_scope.cancel()
    assert received[0] == consensus.Heartbeat(1, "a1", 0)
    appends = received[1:]
    assert [m.prev_lsn for m in appends] == [i * RECORD for i in range(count)]
    assert all(m.entries[0].payload == append(i).entries[0].payload
               for i, m in enumerate(appends))
    assert link.dropped == 0 and link.sent == count + 1
    # The heartbeat went straight out; the first append only in part (its end finished by
    # the sending task, which held it while the others queued behind it: a direct write
    # then would have cut into the middle of a frame).
    assert link.sent_direct == 1
    assert idle_after


async def test_a_peer_that_takes_nothing_never_makes_the_queue_grow_past_its_bound() -> None:
    """Queues are bounded in bytes, not messages: what does not fit is dropped and counted
    (the core retransmits to a live peer), so a dead one cannot bloat the leader."""
    ports = {"a1": free_port(), "a2": free_port()}  # nobody listens on a2's port
    sender = PeerTransport(config("a1", ports), lambda msg: None)  # type: ignore[arg-type]
    link = sender.links["a2"]
    for index in range(40):
        sender.send("a2", append(index))  # 1 MiB each
    assert link.queued_bytes <= QUEUE_BYTES
    kept = link.send_channel.statistics().current_buffer_used
    assert kept == QUEUE_BYTES // (RECORD + 64) and link.dropped == 40 - kept


def test_repeated_complaints_are_logged_once_a_minute(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("agent.node.transport.time.monotonic", lambda: clock[0])
    complain = Throttled(logging.getLogger("throttle-test"))
    with caplog.at_level(logging.WARNING, "throttle-test"):
        for _ in range(50):  # a client reconnecting in a loop
            complain(logging.WARNING, "10.0.0.9", "tls", "refused %s", "10.0.0.9:1")
        complain(logging.WARNING, "10.0.0.9", "protocol", "broke %s", "it")  # another kind
        complain(logging.WARNING, "10.0.0.8", "tls", "refused %s", "10.0.0.8:1")  # another host
        for claimed in range(30):  # a different complaint each time: 10 a minute per host
            complain(logging.WARNING, "10.0.0.7", "refused", "node %r refused", f"n{claimed}")
        clock[0] += 61
        complain(logging.WARNING, "10.0.0.9", "tls", "refused %s", "10.0.0.9:1")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["refused 10.0.0.9:1", "broke it", "refused 10.0.0.8:1"]
    assert messages[3:13] == [f"node 'n{i}' refused" for i in range(10)]
    assert messages[13:] == ["refused 10.0.0.9:1 (49 more like it in the last minute)"]


async def test_connections_beyond_the_caps_are_refused_before_any_handshake() -> None:
    ports = {"a1": free_port(), "a2": free_port()}
    transport = PeerTransport(config("a1", ports), lambda msg: None)  # type: ignore[arg-type]
    held: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        # Connections that never say Hello: up to the per-host cap they wait for one
        for _ in range(MAX_INBOUND_PER_HOST):
            held.append(await trio.open_tcp_stream("127.0.0.1", ports["a1"]))
        with trio.fail_after(10):
            while transport._inbound < MAX_INBOUND_PER_HOST:
                await trio.sleep(0.01)
        extra = await trio.open_tcp_stream("127.0.0.1", ports["a1"])
        with trio.fail_after(10):  # closed at once, not after the handshake deadline
            assert await extra.receive_some(100) == b""
        assert transport.refused_inbound == 1
        await extra.aclose()
        for stream in held:
            await stream.aclose()
        with trio.fail_after(10):
            while transport._inbound:
                await trio.sleep(0.01)
        again = await trio.open_tcp_stream("127.0.0.1", ports["a1"])  # room again
        with trio.fail_after(10):
            while transport._inbound < 1:
                await trio.sleep(0.01)
        await again.aclose()
        nursery.cancel_scope.cancel()
