"""Peer transport: one outbound connection per peer for sending, inbound ones for receiving.

Each direction of traffic between two agents has its own TCP connection: an agent dials
every peer and only sends on that connection (after the handshake), and only receives on
the connections peers dialed to it. So there is never a question of which of two
connections to keep, and a partition proxy can cut one direction cleanly.

A message goes straight onto the socket from the caller (the node loop) when the link is
idle — nothing queued, no write in progress — and the kernel takes the whole frame at once;
that is nearly always the case, and it saves a task hand-off on the commit path. Otherwise,
or for what the kernel did not take, the link's sending task writes it, in order.

With `[tls]`, both directions run mutual TLS (agent/tls.py): the node id a connection
speaks for is the Common Name of the certificate the peer proved, and a Hello or message
claiming another id is refused. (The direct write above is for plain TCP only: under TLS
every frame goes through the sending task, which owns the TLS state.)

Outbound queues are bounded; when a peer is down or slow, messages beyond the bound are
dropped (and counted): the consensus core retransmits, and a lagging peer must never make
this agent buffer without bound (DESIGN.md invariant 6).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

import consensus
from agent import tls, wire
from agent.config import Address, Config, ConfigError, is_loopback, parse_address
from agent.node import translate
from agent.wire import peer_pb2 as pb

log = logging.getLogger("binkeeper.peers")

QUEUE_MESSAGES = 4096
# Bytes of record payload queued for one peer: a little more than the core keeps in flight
# (max_inflight_bytes), so a live follower never loses an append to it, and a dead one
# never makes the leader buffer without bound (DESIGN invariant 6).
QUEUE_BYTES = 16 << 20
# A peer that takes no bytes for this long is cut off and dialled again: its queue stays
# bounded, and the core retransmits once it is back.
WRITE_DEADLINE = 10.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
HANDSHAKE_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
# Inbound connections at once, and from one host: a peer needs one; more is a misconfigured
# or hostile client, refused before any handshake.
MAX_INBOUND = 256
MAX_INBOUND_PER_HOST = 32
COALESCE_BYTES = 256 << 10


@dataclass
class PeerLink:
    peer_id: str
    addr: Address
    send_channel: trio.MemorySendChannel[Any]
    receive_channel: trio.MemoryReceiveChannel[Any]
    scope: trio.CancelScope | None = None
    conn: wire.PeerConnection | None = None  # the current connection's protocol state
    connected: bool = False
    dropped: int = 0
    queued_bytes: int = 0  # estimated bytes of the items waiting in the channel
    sent: int = 0
    sent_direct: int = 0  # of which written by the caller, without the sending task
    last_error: str | None = None
    protocol_errors: int = 0  # connections to it closed because it broke the protocol
    refused: int = 0  # handshakes it (or its certificate) refused
    # Bytes encoded for it by earlier connections (before and after compression); the
    # current connection's own count is added when it is replaced (bytes_sent()).
    raw_sent_before: int = 0
    wire_sent_before: int = 0
    direct: socket.socket | None = None  # a duplicate of the connection's socket, or None
    # Something was handed to the sending task and is not yet fully written. (Not the
    # channel's fill level: a channel hands an item straight to a waiting receiver.)
    busy: bool = False

    def idle(self) -> bool:
        return self.direct is not None and not self.busy

    def bytes_sent(self) -> tuple[int, int]:
        """Bytes encoded for this peer since start: (protobuf bodies before compression,
        frames after it). A frame cut short by a lost connection still counts."""
        conn = self.conn
        if conn is None:
            return self.raw_sent_before, self.wire_sent_before
        return (self.raw_sent_before + conn.raw_bytes_sent,
                self.wire_sent_before + conn.wire_bytes_sent)


def _size(item: Any) -> int:
    """What an item queued for a peer costs: its record payloads, plus a little."""
    return len(item.data) if isinstance(item, _Unsent) else translate.message_size(item)


@dataclass(frozen=True)
class _Unsent:
    """The end of a frame a direct write left behind: written before anything else."""

    data: bytes


class PeerTransport:
    def __init__(self, config: Config, deliver: Callable[[Any], None],
                 room: Callable[[], Awaitable[None]] | None = None) -> None:
        """DELIVER takes each message received; ROOM, awaited before each read, holds the
        receivers back while the node's inbox is full."""
        self.config = config
        self._deliver = deliver
        self._room = room
        self.links: dict[str, PeerLink] = {}
        for peer in config.peers:
            send, receive = trio.open_memory_channel[Any](QUEUE_MESSAGES)
            self.links[peer.id] = PeerLink(peer.id, peer.addr, send, receive)
        self.known_nodes = frozenset(config.member_ids)
        # node id -> the address of the MariaDB server beside it, from its Hello
        self.peer_servers: dict[str, Address] = {}
        self.refused_inbound = 0  # handshakes refused: TLS, certificate, Hello
        self.broken_inbound = 0  # connections closed for a protocol error after the handshake
        self.received_bytes: dict[str, int] = {}  # peer id -> bytes read after its handshake
        self._inbound = 0  # connections being served, handshaking ones included
        self._inbound_by_host: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        self._complain = Throttled(log)
        self._server_tls: ssl.SSLContext | None = None
        self._client_tls: ssl.SSLContext | None = None
        if config.tls is not None:
            self._server_tls = tls.peer_server_context(config.tls)
            self._client_tls = tls.peer_client_context(config.tls)

    def hello(self) -> pb.Hello:
        mariadb = self.config.mariadb
        return pb.Hello(
            protocol_version=wire.PROTOCOL_VERSION,
            cluster_id=self.config.cluster_id,
            timeline_id=self.config.timeline_id,
            node_id=self.config.node_id,
            server_host=mariadb.host if mariadb.enabled else "",
            server_port=mariadb.port if mariadb.enabled else 0,
        )

    def send(self, dst: str, msg: Any) -> None:
        link = self.links.get(dst)
        if link is None:
            log.warning("no link to %s; message dropped", dst)
            return
        item: Any = msg
        if isinstance(msg, consensus.VoteRequest | consensus.VoteResponse) and not link.connected:
            # A vote is worth sending only now: queued for a peer that is away, it would
            # arrive stale (an old "I am empty" pre-vote could mislead a rebuilding node).
            link.dropped += 1
            return
        if link.idle() and link.conn is not None and link.direct is not None:
            frame = link.conn.send(translate.to_envelope(msg))
            try:
                written = link.direct.send(frame, socket.MSG_DONTWAIT)
            except BlockingIOError:
                written = 0
            except OSError:
                # The sending task meets the same error and reconnects (a fresh codec);
                # the core retransmits whatever is lost with this connection.
                direct, link.direct = link.direct, None
                direct.close()
                return
            if written == len(frame):
                link.sent += 1
                link.sent_direct += 1
                return
            item = _Unsent(frame[written:])
        size = _size(item)
        if link.queued_bytes + size > QUEUE_BYTES and not isinstance(item, _Unsent):
            link.dropped += 1  # the core retransmits what a live peer did not get
            return
        link.busy = True
        try:
            link.send_channel.send_nowait(item)
        except trio.WouldBlock:
            link.dropped += 1
            return
        link.queued_bytes += size

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listen = self.config.listen_peer
        listeners = await trio.open_tcp_listeners(listen.port, host=listen.host)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for link in self.links.values():
                nursery.start_soon(self._dial_loop, link)
            await nursery.start(trio.serve_listeners, self._serve_inbound, listeners)
            task_status.started()

    # ---- outbound -------------------------------------------------------------------------

    def update_members(self, members: frozenset[str], addresses: dict[str, str]) -> None:
        """Follow a membership change: dial new members, drop removed ones."""
        self.known_nodes = frozenset(members | {p.id for p in self.config.peers})
        for member in sorted(members - {self.config.node_id} - set(self.links)):
            text = addresses.get(member)
            if text is None:
                log.warning("member %s has no known address; cannot reach it", member)
                continue
            try:
                address = parse_address(text, f"the address of member {member}")
            except ConfigError as exc:  # from the log: never let it stop the agent
                log.error("%s; cannot reach it", exc)
                continue
            if self._client_tls is None and not is_loopback(address):
                log.error("member %s is at %s, not a loopback address: without [tls] this "
                          "agent does not send it the log in the clear", member, text)
                continue
            send, receive = trio.open_memory_channel[Any](QUEUE_MESSAGES)
            link = PeerLink(member, address, send, receive)
            self.links[member] = link
            if self._nursery is not None:
                self._nursery.start_soon(self._dial_loop, link)
            log.info("dialing new member %s at %s", member, text)
        for member in sorted(set(self.links) - members):
            link = self.links.pop(member)
            if link.scope is not None:
                link.scope.cancel()
            log.info("dropped link to removed member %s", member)

    async def _dial_loop(self, link: PeerLink) -> None:
        with trio.CancelScope() as scope:
            link.scope = scope
            await self._dial_forever(link)

    async def _dial_forever(self, link: PeerLink) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                plain = await trio.open_tcp_stream(link.addr.host, link.addr.port)
            except OSError as exc:
                link.last_error = f"connect: {exc.strerror or exc}"
            else:
                stream: trio.abc.Stream = plain
                if self._client_tls is not None:
                    stream = trio.SSLStream(plain, self._client_tls)
                async with _closing(stream):
                    try:
                        await self._handshake_out(stream, link)
                        backoff = BACKOFF_FIRST
                        link.connected = True
                        log.info("connected to %s at %s", link.peer_id, link.addr)
                        await self._pump_out(stream, link)
                    # _pump_out runs a nursery, so its failures arrive as exception groups.
                    except* (OSError, trio.BrokenResourceError, trio.TooSlowError,
                             trio.ClosedResourceError) as group:
                        error = group.exceptions[0]
                        link.last_error = f"{type(error).__name__}: {error}"
                    except* wire.ProtocolError as group:
                        link.protocol_errors += 1
                        link.last_error = f"protocol error: {group.exceptions[0]}"
                        self._complain(logging.WARNING, link.peer_id, "protocol",
                                       "peer %s broke the protocol: %s", link.peer_id,
                                       group.exceptions[0])
                    except* TlsRefused as group:  # e.g. a certificate from another CA
                        link.refused += 1
                        link.last_error = str(group.exceptions[0])
                        self._complain(logging.ERROR, link.peer_id, "tls",
                                       "TLS with %s failed: %s", link.peer_id, link.last_error)
                    except* PeerRefused as group:
                        link.refused += 1
                        link.last_error = str(group.exceptions[0])
                        self._complain(logging.ERROR, link.peer_id, "refused",
                                       "peer %s refused us: %s", link.peer_id, link.last_error)
                    finally:
                        if link.connected:
                            log.info("lost %s: %s", link.peer_id, link.last_error)
                        link.connected = False
            # Exponential backoff with full jitter, so restarted agents do not reconnect in step.
            await trio.sleep(random.uniform(0, backoff))
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _handshake_out(self, stream: trio.abc.Stream, link: PeerLink) -> None:
        conn = wire.PeerConnection("client")
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            if isinstance(stream, trio.SSLStream):
                await _tls_handshake(stream)
                owner = tls.node_id_of(stream.getpeercert())
                if owner != link.peer_id:
                    raise PeerRefused(f"the certificate at {link.addr} is for node {owner!r}, "
                                      f"not {link.peer_id!r}")
            await stream.send_all(conn.send_hello(self.hello()))
            reply = await _receive_one(stream, conn)
        if not reply.HasField("hello_reply"):
            raise wire.ProtocolError("expected HelloReply")
        if not reply.hello_reply.accepted:
            raise PeerRefused(f"{link.peer_id} refused the handshake: {reply.hello_reply.reason}")
        if link.conn is not None:  # its byte counts stay in the peer's totals
            raw, wire_bytes = link.bytes_sent()
            link.raw_sent_before, link.wire_sent_before = raw, wire_bytes
        link.conn = conn

    async def _pump_out(self, stream: trio.abc.Stream, link: PeerLink) -> None:
        conn = link.conn
        assert conn is not None
        if isinstance(stream, trio.SocketStream):
            link.direct = socket.socket(fileno=os.dup(stream.socket.fileno()))
        try:
            async with trio.open_nursery() as nursery:
                # The receiving side never talks after the handshake; reading detects a close.
                nursery.start_soon(_watch_close, stream, nursery.cancel_scope)
                while True:
                    item = await link.receive_channel.receive()
                    link.queued_bytes -= _size(item)
                    batch = [_encoded(conn, item)]
                    size = len(batch[0])
                    # Coalesce queued messages into one write, but not so many that encoding
                    # them keeps the event loop from everything else.
                    while len(batch) < 256 and size < COALESCE_BYTES:
                        try:
                            item = link.receive_channel.receive_nowait()
                        except trio.WouldBlock:
                            break
                        link.queued_bytes -= _size(item)
                        batch.append(_encoded(conn, item))
                        size += len(batch[-1])
                    with trio.fail_after(WRITE_DEADLINE):
                        await stream.send_all(b"".join(batch))
                    link.sent += len(batch)
                    if link.receive_channel.statistics().current_buffer_used == 0:
                        link.busy = False  # all written: the caller may write directly again
        finally:
            direct, link.direct = link.direct, None
            if direct is not None:
                direct.close()
            # Queued messages wait for the next connection, whose codec encodes them afresh;
            # the unsent end of a frame belonged to this connection's codec: dropped.
            queued = []
            while True:
                try:
                    queued.append(link.receive_channel.receive_nowait())
                except trio.WouldBlock:
                    break
            link.queued_bytes = 0
            for item in queued:
                if not isinstance(item, _Unsent | consensus.VoteRequest | consensus.VoteResponse):
                    link.send_channel.send_nowait(item)
                    link.queued_bytes += _size(item)
            link.busy = link.send_channel.statistics().current_buffer_used > 0

    # ---- inbound --------------------------------------------------------------------------

    async def _serve_inbound(self, plain: trio.SocketStream) -> None:
        host = _remote(plain).rpartition(":")[0]
        per_host = self._inbound_by_host.get(host, 0)
        if self._inbound >= MAX_INBOUND or per_host >= MAX_INBOUND_PER_HOST:
            # Before any handshake: whoever can connect must not hold every descriptor.
            self.refused_inbound += 1
            self._complain(logging.WARNING, host, "too-many",
                           "refused connection from %s: %d connections open (%d from it)",
                           host, self._inbound, per_host)
            await plain.aclose()
            return
        self._inbound += 1
        self._inbound_by_host[host] = per_host + 1
        try:
            await self._serve_counted(plain)
        finally:
            self._inbound -= 1
            self._inbound_by_host[host] -= 1
            if not self._inbound_by_host[host]:
                del self._inbound_by_host[host]

    async def _serve_counted(self, plain: trio.SocketStream) -> None:
        stream: trio.abc.Stream = plain
        if self._server_tls is not None:
            stream = trio.SSLStream(plain, self._server_tls, server_side=True)
        async with _closing(stream):
            conn = wire.PeerConnection("server")
            host = _remote(plain).rpartition(":")[0]
            peer_id = "?"
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    proven: str | None = None
                    if isinstance(stream, trio.SSLStream):
                        await _tls_handshake(stream)
                        proven = tls.node_id_of(stream.getpeercert())
                    first = await _receive_one(stream, conn)
                if not first.HasField("hello"):
                    raise wire.ProtocolError("the first frame must be Hello")
                hello = first.hello
                peer_id = hello.node_id
                reason = wire.check_hello(
                    hello,
                    cluster_id=self.config.cluster_id,
                    timeline_id=self.config.timeline_id,
                    known_nodes=self.known_nodes - {self.config.node_id},
                )
                if reason is None and self._server_tls is not None and proven != hello.node_id:
                    # No Common Name proves nothing: a certificate must name its node.
                    reason = (f"node {hello.node_id!r} presented the certificate of node "
                              f"{proven!r}")
                await stream.send_all(
                    conn.send_hello_reply(
                        pb.HelloReply(
                            protocol_version=wire.PROTOCOL_VERSION,
                            node_id=self.config.node_id,
                            accepted=reason is None,
                            reason=reason or "",
                        )
                    )
                )
                if reason is None and hello.server_host:
                    try:
                        self.peer_servers[peer_id] = Address(hello.server_host,
                                                             int(hello.server_port))
                    except ValueError:
                        pass
                if reason is not None:
                    self.refused_inbound += 1
                    self._complain(logging.WARNING, host, "refused",
                                   "refused connection from %r (%s): %s", peer_id, host,
                                   reason)
                    return
                await self._pump_in(stream, conn, peer_id)
            except TlsRefused as exc:
                self.refused_inbound += 1
                self._complain(logging.WARNING, host, "tls",
                               "refused connection from %s: %s", host, exc)
            except wire.ProtocolError as exc:
                self.broken_inbound += 1
                self._complain(logging.WARNING, host, "protocol",
                               "closing connection from %s (%s): protocol error: %s",
                               peer_id, host, exc)
            except translate.TranslationError as exc:
                self.broken_inbound += 1
                self._complain(logging.WARNING, host, "protocol",
                               "closing connection from %s (%s): %s", peer_id, host, exc)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                pass

    async def _pump_in(
        self, stream: trio.abc.Stream, conn: wire.PeerConnection, peer_id: str
    ) -> None:
        while True:
            if self._room is not None:
                await self._room()
            data = await stream.receive_some(1 << 16)
            if not data:
                return
            self.received_bytes[peer_id] = self.received_bytes.get(peer_id, 0) + len(data)
            conn.receive_data(data)
            while (envelope := conn.next_message()) is not wire.NEED_DATA:
                msg = translate.from_envelope(envelope)  # type: ignore[arg-type]
                if translate.sender_of(msg) != peer_id:
                    raise wire.ProtocolError(
                        f"message claims sender {translate.sender_of(msg)!r} "
                        f"on {peer_id}'s connection"
                    )
                self._deliver(msg)

    def inbound_counts(self) -> dict[str, int]:
        return {"refused": self.refused_inbound, "protocol_errors": self.broken_inbound}

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for link in self.links.values():
            raw, wire_bytes = link.bytes_sent()
            out[link.peer_id] = {
                "connected": link.connected,
                "sent": link.sent,
                "sent_direct": link.sent_direct,
                "dropped": link.dropped,
                "queued_bytes": link.queued_bytes,
                "last_error": link.last_error,
                "tls": self._client_tls is not None,
                "bytes_sent": raw,  # before compression
                "bytes_sent_wire": wire_bytes,  # after compression, frame headers included
                "bytes_received": self.received_bytes.get(link.peer_id, 0),
                "protocol_errors": link.protocol_errors,
                "refused": link.refused,
            }
        return out


class PeerRefused(Exception):
    pass


class Throttled:
    """Log repeated complaints sparingly: the same complaint (key, kind, text) once a minute
    with how many were held back, and at most PER_KEY different ones a minute per key (a
    peer, a remote host). A hostile or misconfigured client that reconnects in a loop must
    not flood the log, yet the first of each kind is seen at once."""

    PERIOD = 60.0
    PER_KEY = 10

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._per_key: dict[str, tuple[float, int]] = {}

    def __call__(self, level: int, key: str, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        what = (key, f"{kind}:{message % args}")
        last, held = self._last.get(what, (-math.inf, 0))
        window, logged = self._per_key.get(key, (now, 0))
        if now - window >= self.PERIOD:
            window, logged = now, 0
        if len(self._last) > 10_000 or len(self._per_key) > 10_000:  # bounded, whoever connects
            self._last.clear()
            self._per_key.clear()
        if now - last < self.PERIOD or logged >= self.PER_KEY:
            self._last[what] = (last, held + 1)
            return
        self._last[what] = (now, 0)
        self._per_key[key] = (window, logged + 1)
        suffix = f" ({held} more like it in the last minute)" if held else ""
        self._log.log(level, message + suffix, *args)


class TlsRefused(Exception):
    """The TLS handshake failed: plaintext on a TLS port, or a certificate the CA did not
    sign."""


async def _tls_handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        raise TlsRefused(f"TLS handshake failed: {cause or exc}") from exc


@asynccontextmanager
async def _closing(stream: trio.abc.Stream) -> AsyncIterator[None]:
    """Close STREAM on the way out within CLOSE_TIMEOUT: a TLS close_notify to a peer that
    stopped reading must not hold the task and its descriptor."""
    try:
        yield
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await stream.aclose()
        await trio.aclose_forcefully(stream)  # a no-op when already closed


def _remote(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def _encoded(conn: wire.PeerConnection, item: Any) -> bytes:
    return item.data if isinstance(item, _Unsent) else conn.send(translate.to_envelope(item))


async def _receive_one(stream: trio.abc.Stream, conn: wire.PeerConnection) -> pb.Envelope:
    while (envelope := conn.next_message()) is wire.NEED_DATA:
        data = await stream.receive_some(1 << 16)
        if not data:
            raise trio.BrokenResourceError("connection closed during handshake")
        conn.receive_data(data)
    return envelope  # type: ignore[return-value]


async def _watch_close(stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while await stream.receive_some(4096):
            pass
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
