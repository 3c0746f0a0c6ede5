"""The MariaDB source: while this agent leads, tail the primary into the quorum and ACK.

A worker thread runs the blocking replication connection (agent/tailer.py) and hands
whole transactions to the trio side through a channel. Each transaction is appended
verbatim, in binlog order, through `TimelineNode.submit` (split into `continued` pieces when
larger than a record); an acker task waits for each one's commit, in order, and only then
sends the primary the semi-sync ACK for it — so the client's COMMIT returns only once a
majority of agents has the transaction on disk.

Resuming: every session starts after the newest GTID of each domain in this leader's log,
so nothing is skipped and nothing is stored twice; a transaction the primary sends again
(already in the log) is not appended again but still acknowledged once committed.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import pymysql
import trio

import consensus
import walstore
from agent.ack_sender import AckSender
from agent.binlog_events import GTID, GTID_LIST, HEARTBEAT, Transaction, TransactionGrouper
from agent.binlog_meta import BinlogMeta, is_new, is_stored_meta
from agent.config import MariaDBConfig
from agent.tailer import (
    PrimarySettingsError,
    ReplicationError,
    ReplicationStream,
    StreamEvent,
    derived_server_id,
)
from agent.timeline import CommitOutcomeUnknown, NotLeaderError, TimelineNode

log = logging.getLogger("binkeeper.source")

PIECE_SIZE = 4 << 20  # bytes per record of a transaction too big for one
QUEUE = 256  # transactions read ahead of the quorum


@dataclass
class SourceStatus:
    connected: bool = False
    transactions: int = 0
    meta_events: int = 0  # binlog events between transactions stored (FDE, ROTATE, ...)
    acks: int = 0
    acks_direct: int = 0  # ACK packets written from the event loop, without the thread
    last_gtid: str | None = None
    error: str | None = None
    sessions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Item:
    transaction: Transaction | None  # None: metadata or a position marker
    ack: tuple[str, int] | None  # (file, position) to acknowledge once committed
    meta: BinlogMeta | None = None  # an event between transactions, to store
    pieces: list[bytes] = field(default_factory=list)  # the transaction, cut to record size
    waiters: list[Any] = field(default_factory=list)
    known_end: int | None = None  # already in the log: wait for this LSN instead


class MariaDBSource:
    def __init__(self, config: MariaDBConfig, node_id: str, node: TimelineNode,
                 store: walstore.WalStore) -> None:
        self.config = config
        self.node = node
        self.store = store
        self.server_id = config.server_id or derived_server_id(node_id)
        self.status = SourceStatus()
        self._room = threading.Semaphore(QUEUE)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            if self.node.role != "leader":
                await self.node.wait_role_change()
                continue
            # The session's tasks fail together, so errors arrive as exception groups.
            try:
                await self._session()
                backoff = 0.1
            except* PrimarySettingsError as group:
                self.status.error = str(group.exceptions[0])
                log.error("%s", self.status.error)
                backoff = 5.0
            except* (ReplicationError, pymysql.err.MySQLError, OSError, EOFError) as group:
                exc = group.exceptions[0]
                self.status.error = f"{type(exc).__name__}: {exc}"
                log.warning("replication from %s:%d interrupted: %s", self.config.host,
                            self.config.port, self.status.error)
            except* (NotLeaderError, CommitOutcomeUnknown):
                pass  # leadership moved on; the new leader resumes from its own log
            finally:
                self.status.connected = False
            await trio.sleep(backoff)
            backoff = min(5.0, backoff * 2)

    def _gtid_state(self) -> str:
        return ",".join(sorted(self.store.last_gtids().values()))

    async def _session(self) -> None:
        stream = ReplicationStream(self.config.host, self.config.port, self.config.user,
                                   self.config.password, self.server_id)
        try:
            await trio.to_thread.run_sync(stream.connect, self._gtid_state())
            self.status.connected = True
            self.status.sessions += 1
            self.status.error = None
            # Unbounded here; the reading thread bounds itself with self._room instead, so
            # it never waits for the event loop to take each transaction.
            send, receive = trio.open_memory_channel[_Item](math.inf)
            self._room = threading.Semaphore(QUEUE)
            acks_send, acks_receive = trio.open_memory_channel[_Item](math.inf)
            sender = AckSender(stream.ack_packet, stream.send_raw, stream.send_raw_nowait)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_leadership, nursery.cancel_scope)
                nursery.start_soon(self._send_acks, sender)
                nursery.start_soon(self._acker, sender, acks_receive, self.store.end_lsn)
                nursery.start_soon(self._read_thread, stream, send)
                async with receive, acks_send:
                    async for item in receive:
                        self._room.release()
                        self._append(item)
                        acks_send.send_nowait(item)
        finally:
            stream.close()  # also unblocks the reading thread

    async def _read_thread(self, stream: ReplicationStream,
                           send: trio.MemorySendChannel[_Item]) -> None:
        token = trio.lowlevel.current_trio_token()
        room = self._room
        last_meta = self.store.last_binlog_meta()
        last_position = BinlogMeta.decode(last_meta.payload).position if last_meta else None

        def deliver(item: _Item) -> None:
            # Runs on the event loop; an exception here would take the whole loop down.
            try:
                send.send_nowait(item)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the session ended meanwhile; the next one reads again from the log

        def hand_over(item: _Item) -> None:
            room.acquire()  # at most QUEUE transactions read ahead of the quorum
            token.run_sync_soon(deliver, item)

        def loop() -> None:
            nonlocal last_position
            grouper = TransactionGrouper()
            while True:
                item = stream.read()
                event = item.event
                if not grouper.in_transaction and event.type_code != GTID:
                    # A position between transactions: once everything before it is
                    # committed, acknowledging it releases any commit the primary still
                    # waits for from before a reconnect or a change of leader.
                    marker = event.type_code in (HEARTBEAT, GTID_LIST) and event.next_pos > 0
                    ack = (item.file_name, event.next_pos) if marker else None
                    meta = None
                    if is_stored_meta(event):
                        candidate = BinlogMeta(item.file_name, event)
                        if is_new(candidate.position, last_position):
                            meta, last_position = candidate, candidate.position
                    if meta is not None or ack is not None:
                        hand_over(_Item(None, ack, meta))
                    continue
                transaction = grouper.feed(event)
                if transaction is not None:
                    # Cut here, off the event loop: copying a large transaction on the
                    # loop would delay heartbeats long enough to cause an election.
                    hand_over(_Item(transaction, _ack_of(item),
                                    pieces=transaction.pieces(PIECE_SIZE)))

        async with send:
            await trio.to_thread.run_sync(loop, abandon_on_cancel=True)

    def _append(self, item: _Item) -> None:
        if item.meta is not None:
            item.waiters.append(self.node.submit(
                item.meta.encode(), kind=consensus.RecordKind.BINLOG_META))
        transaction = item.transaction
        if transaction is None:
            return
        known = self.store.gtid_end_lsn(transaction.gtid)
        if known is not None:
            item.known_end = known  # sent again after a reconnect: never stored twice
            return
        pieces = item.pieces
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            item.waiters.append(self.node.submit(
                piece, gtid=transaction.gtid if last else None, continued=not last))

    async def _send_acks(self, sender: AckSender) -> None:
        try:
            await trio.to_thread.run_sync(sender.run, abandon_on_cancel=True)
        finally:
            sender.close()

    async def _acker(self, sender: AckSender,
                     receive: trio.MemoryReceiveChannel[_Item], log_end: int) -> None:
        # Nothing is acknowledged before this leader's whole log is committed.
        await self.node.wait_committed(log_end)
        async for item in receive:
            if item.known_end is not None:
                await self.node.wait_committed(item.known_end)
            for waiter in item.waiters:
                await self.node.wait(waiter)
            if item.meta is not None:
                self.status.meta_events += 1
            if item.transaction is not None:
                self.status.transactions += 1
                self.status.last_gtid = item.transaction.gtid
            if item.ack is not None:
                sender.post(*item.ack)
                self.status.acks += 1
                self.status.acks_direct = sender.sent_direct

    async def _watch_leadership(self, scope: trio.CancelScope) -> None:
        while self.node.role == "leader":
            await self.node.wait_role_change()
        log.info("no longer the leader: stopping the tail of the primary")
        scope.cancel()


def _ack_of(item: StreamEvent) -> tuple[str, int] | None:
    return (item.file_name, item.event.next_pos) if item.ack_requested else None
