"""The replication port: a thin trio loop around the sans-I/O session and binlog stream.

Each connection gets a session (handshake, queries, COM_BINLOG_DUMP); a dump then sends
committed events as the commit LSN advances, heartbeats when idle. Limits keep a bad or
slow client from costing more than its own connection: a connection cap, a handshake
deadline, bounded reads from the log per send, and a deadline on every send (a replica
that stops reading is disconnected, never buffered for).
"""

from __future__ import annotations

import itertools
import logging
import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

import walstore
from agent import tls as tls_files
from agent.config import Address, ReplicationConfig
from agent.node.loop import TimelineNode
from agent.serving import packets
from agent.serving.binlog_stream import (
    ER_MASTER_FATAL_ERROR_READING_BINLOG,
    BinlogStream,
    DumpError,
)
from agent.serving.packets import PacketWriter
from agent.serving.queries import QueryContext
from agent.serving.session import Close, DumpRequest, Session, StartTls

log = logging.getLogger("binkeeper.replicas")

SERVER_VERSION = "5.5.5-10.11.99-MariaDB-binkeeper"
HANDSHAKE_TIMEOUT = 10.0
READ_BYTES = 256 << 10  # records read from the log per send
READ_THREADS = 4
DEFAULT_HEARTBEAT = 30.0
BINLOG_DUMP_NON_BLOCK = 0x01
ER_CON_COUNT = 1040


@dataclass
class ReplicaInfo:
    peer: str
    server_id: int | None = None
    mode: str = ""
    file_name: str = ""
    position: int = 0
    last_gtid: str | None = None
    events_sent: int = 0
    bytes_sent: int = 0
    tls: bool = False
    lsn: int | None = None  # while dumping: the log position served up to
    # time.monotonic() of a moment whose whole committed history has been sent to it: its
    # lag in seconds is the time since (an upper bound, by one read-and-send round)
    synced_at: float = 0.0

    def as_dict(self, commit_lsn: int, now: float) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "synced_at"}
        behind = commit_lsn - self.lsn if self.lsn is not None else None
        out["lag_bytes"] = max(0, behind) if behind is not None else None
        out["lag_s"] = (None if behind is None
                        else 0.0 if behind <= 0 else round(now - self.synced_at, 3))
        return out


@dataclass
class ReplicationServerStatus:
    connections: int = 0
    refused: int = 0
    errors: int = 0
    dropped_slow: int = 0  # replicas that took no data for send_timeout seconds
    connections_total: int = 0  # connections accepted since start
    bytes_sent: int = 0  # binlog bytes served to replicas since start, all connections
    replicas: dict[int, ReplicaInfo] = field(default_factory=dict)

    def as_dict(self, commit_lsn: int) -> dict[str, Any]:
        now = time.monotonic()
        return {"connections": self.connections, "refused": self.refused,
                "errors": self.errors, "dropped_slow": self.dropped_slow,
                "connections_total": self.connections_total, "bytes_sent": self.bytes_sent,
                "replicas": [r.as_dict(commit_lsn, now) for r in self.replicas.values()]}


class ReplicationServer:
    def __init__(self, listen: Address, config: ReplicationConfig, node: TimelineNode,
                 store: walstore.WalStore, server_id: int, timeline: str = "main",
                 tls: tls_files.TlsFiles | None = None) -> None:
        self.timeline = timeline
        self._tls: ssl.SSLContext | None = (
            tls_files.server_context(tls) if tls is not None else None)
        self.listen = listen
        self.config = config
        self.node = node
        self.store = store
        self.server_id = server_id
        self.status = ReplicationServerStatus()
        # Threads reading the log for replicas: a few, so many replicas cannot take every
        # thread (the WAL's fsync worker uses trio's default limiter).
        self._readers = trio.CapacityLimiter(READ_THREADS)
        self._ids = itertools.count(1)
        self.port: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.listen.port, host=self.listen.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("serving committed binlog to replicas on %s:%d", self.listen.host, self.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve, listeners)
            task_status.started()

    def status_dict(self) -> dict[str, Any]:
        return self.status.as_dict(self.node.commit_lsn)

    def _committed_gtids(self) -> str:
        return walstore.format_position(self.store.gtids_at(self.node.commit_lsn))

    async def _serve(self, stream: trio.SocketStream) -> None:
        connection_id = next(self._ids)
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "?"
        async with stream:
            if self.status.connections >= self.config.max_connections:
                self.status.refused += 1
                await self._send(stream, PacketWriter(0).frame(packets.err_packet(
                    ER_CON_COUNT, "Too many connections", "08004")))
                return
            self.status.connections += 1
            self.status.connections_total += 1
            info = ReplicaInfo(peer)
            self.status.replicas[connection_id] = info
            try:
                await self._converse(stream, connection_id, info)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            except trio.TooSlowError:
                log.info("replica %s: dropped, it took no data for %.0f s", peer,
                         self.config.send_timeout)
                self.status.dropped_slow += 1
            except Exception:
                # One connection's failure never takes the port (or the agent) down.
                self.status.errors += 1
                log.exception("replica %s: connection failed", peer)
            finally:
                self.status.connections -= 1
                del self.status.replicas[connection_id]

    async def _converse(self, stream: trio.abc.Stream, connection_id: int,
                        info: ReplicaInfo) -> None:
        context = QueryContext(server_id=self.server_id, server_version=SERVER_VERSION,
                               gtid_binlog_pos=self._committed_gtids(), timeline=self.timeline)
        session = Session(user=self.config.user, password=self.config.password,
                          context=context, connection_id=connection_id,
                          tls=self._tls is not None, require_tls=self.config.require_tls)
        await self._send(stream, session.greeting())
        deadline = trio.current_time() + HANDSHAKE_TIMEOUT
        while True:
            authenticating = session.state in ("handshake", "auth_switch")
            with trio.move_on_at(deadline if authenticating else math.inf) as waited:
                data = await stream.receive_some(65536)
            if waited.cancelled_caught or not data:
                return  # closed, or no login within the handshake deadline
            context.gtid_binlog_pos = self._committed_gtids()
            for action in session.receive_data(data):
                if isinstance(action, bytes):
                    await self._send(stream, action)
                elif isinstance(action, Close):
                    if "malformed" in action.reason or "bad packet" in action.reason:
                        self.status.errors += 1
                        log.warning("replica %s: %s", info.peer, action.reason)
                    return
                elif isinstance(action, DumpRequest):
                    await self._dump(stream, action, info)
                    return
                elif isinstance(action, StartTls):
                    assert self._tls is not None
                    with trio.move_on_at(deadline) as waited:
                        stream = await _start_tls(stream, session.take_buffered(), self._tls)
                    if waited.cancelled_caught:
                        return
                    session.tls_started()
                    info.tls = True

    async def _dump(self, stream: trio.abc.Stream, request: DumpRequest,
                    info: ReplicaInfo) -> None:
        writer = PacketWriter(request.first_seq)
        binlog = BinlogStream(self.store, self.server_id, rotate_checksum=request.checksum)
        info.server_id = request.server_id
        try:
            if request.gtid_state is not None:
                info.mode = "gtid"
                start = binlog.start_by_gtid(request.gtid_state, self.node.commit_lsn)
            else:
                info.mode = "position"
                start = binlog.start_by_position(request.file_name, request.position)
            start += binlog.set_until(request.until_gtid)
        except DumpError as exc:
            self.status.errors += 1
            log.warning("replica %s (server id %d): %s", info.peer, request.server_id, exc)
            await self._send(stream, writer.frame(packets.err_packet(
                ER_MASTER_FATAL_ERROR_READING_BINLOG, str(exc))))
            return
        log.info("replica %s (server id %d) dumping by %s from %s", info.peer,
                 request.server_id, info.mode, request.gtid_state or
                 f"{request.file_name}:{request.position}")
        await self._send_events(stream, writer, start)
        info.lsn, info.synced_at = binlog.lsn, time.monotonic()
        if request.until_gtid and binlog.until_done:
            await self._send(stream, writer.frame(packets.eof_packet()))
            return
        period = request.heartbeat_period or DEFAULT_HEARTBEAT
        while True:
            commit, read_at = self.node.commit_lsn, time.monotonic()
            try:
                # Off the event loop: a cold read from disk must not delay heartbeats and
                # commits. Safe in a thread: only committed records are read, and those are
                # never truncated; the stream's state belongs to this connection alone.
                events, done = await trio.to_thread.run_sync(
                    binlog.read, commit, READ_BYTES, limiter=self._readers)
            except (DumpError, walstore.WalError) as exc:
                # e.g. a record that fails its checksum: never served, the replica told why
                self.status.errors += 1
                log.error("replica %s: cannot serve: %s", info.peer, exc)
                await self._send(stream, writer.frame(packets.err_packet(
                    ER_MASTER_FATAL_ERROR_READING_BINLOG, f"cannot read the history: {exc}")))
                return
            if events:
                await self._send_events(stream, writer, events)
                info.file_name, info.position = binlog.file_name, binlog.position
                info.last_gtid = binlog.last_gtid
                self.status.bytes_sent += binlog.bytes_sent - info.bytes_sent
                info.events_sent, info.bytes_sent = binlog.events_sent, binlog.bytes_sent
            info.lsn = binlog.lsn
            if binlog.lsn >= commit:  # it has everything committed when this read began
                info.synced_at = read_at
            if done:
                await self._send(stream, writer.frame(packets.eof_packet()))
                return
            if binlog.lsn < self.node.commit_lsn:
                continue  # more to read
            if request.flags & BINLOG_DUMP_NON_BLOCK:
                await self._send(stream, writer.frame(packets.eof_packet()))
                return
            changed = self.node.commit_changed
            with trio.move_on_after(period) as idle:
                await changed.wait()
            if idle.cancelled_caught:
                await self._send_events(stream, writer, [binlog.heartbeat()])

    async def _send_events(self, stream: trio.abc.Stream, writer: PacketWriter,
                           events: Sequence[bytes | memoryview]) -> None:
        out = bytearray()
        for event in events:
            writer.frame_into(out, b"\x00", event)
        await self._send(stream, out)

    async def _send(self, stream: trio.abc.Stream, data: bytes | bytearray) -> None:
        with trio.fail_after(self.config.send_timeout):
            await stream.send_all(data)



async def _start_tls(stream: trio.abc.Stream, head: bytes,
                     context: ssl.SSLContext) -> trio.SSLStream[trio.abc.Stream]:
    """TLS over STREAM, server side; HEAD is what the client already sent of its TLS
    handshake (it follows the SSL request without waiting)."""
    secure: trio.SSLStream[trio.abc.Stream] = trio.SSLStream(
        _Replayed(stream, head), context, server_side=True)
    await secure.do_handshake()
    return secure


class _Replayed(trio.abc.Stream):
    """A stream whose first bytes were already read: they are received again first."""

    def __init__(self, inner: trio.abc.Stream, head: bytes) -> None:
        self.inner = inner
        self._head = head

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            size = len(self._head) if max_bytes is None else max_bytes
            data, self._head = self._head[:size], self._head[size:]
            return data
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
