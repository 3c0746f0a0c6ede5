"""The MariaDB source: while this agent leads, tail the primary into the quorum and ACK.

A worker thread runs the blocking replication connection (agent/source/tailer.py) and hands
whole transactions to the event loop (`run_sync_soon`, no task in between). Each is
appended verbatim, in binlog order, through `TimelineNode.submit` (split into `continued`
pieces when larger than a record) and queued; a commit listener on the node loop takes
the queue's committed head, in order, and only then sends the primary the semi-sync ACK
for it — so the client's COMMIT returns only once a majority of agents has the
transaction on disk, and as soon as the node loop learns it.

Threads: each session runs its threads (connect, read, ACK) on a CapacityLimiter of its own,
never trio's default one, which the WAL's fsync worker uses; they are never abandoned. Ending
a session (leadership lost, an error, shutdown) stops them — the replication socket is shut
down, the reader's wait for room released, the ACK thread closed — and waits for them, so
when `_session()` returns no thread of it still runs or touches the stream.

Resuming: every session starts after the newest GTID of each domain in this leader's log,
so nothing is skipped and nothing is stored twice; a transaction the primary sends again
(already in the log) is not appended again but still acknowledged once committed.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import pymysql
import trio

import consensus
import walstore
from agent.binlog.events import GTID, GTID_LIST, HEARTBEAT, BinlogEventError
from agent.binlog.meta import BinlogMeta, is_new, is_stored_meta
from agent.binlog.transactions import Transaction, TransactionGrouper
from agent.config import MariaDBConfig, derived_server_id
from agent.node.loop import CommitOutcomeUnknown, TimelineNode
from agent.source.ack_sender import AckSender
from agent.source.latency import StageLatencies
from agent.source.tailer import (
    PrimarySettingsError,
    ReplicationError,
    ReplicationStream,
    StreamEvent,
)

log = logging.getLogger("binkeeper.source")

PIECE_SIZE = 4 << 20  # bytes per record of a transaction too big for one
QUEUE = 256  # transactions read ahead of the quorum
SETTINGS_RETRY = 0.5  # seconds before asking a primary with unsafe settings again
TARGET_POLL = 0.05  # seconds between looks at which server is the recorded primary (a lookup)
# A transaction's way through the leader: read whole from the primary (worker thread) ->
# handed to the quorum on the event loop -> committed by the quorum -> ACK written.
STAGES = ("read_to_append", "append_to_commit", "commit_to_ack", "read_to_ack")
SESSION_THREADS = 2  # a session's threads at once: connect, then read and ACK
# Thread names (15 characters at most: the OS keeps no more).
CONNECT_THREAD, READ_THREAD, ACK_THREAD = "bk-source-conn", "bk-source-read", "bk-source-ack"

T = TypeVar("T")


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
    failures: int = 0  # sessions (or attempts) that ended with an error
    last_read: float = 0.0  # time.monotonic() of the newest event or heartbeat read

    latency: StageLatencies = field(default_factory=lambda: StageLatencies(STAGES))

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "latency"} | {
            "latency": self.latency.summary()}


@dataclass
class _Item:
    transaction: Transaction | None  # None: metadata or a position marker
    ack: tuple[str, int] | None  # (file, position) to acknowledge once committed
    meta: BinlogMeta | None = None  # an event between transactions, to store
    pieces: list[bytes] = field(default_factory=list)  # the transaction, cut to record size
    waiters: list[Any] = field(default_factory=list)
    known_end: int | None = None  # already in the log: wait for this LSN instead
    read_at: float = 0.0  # when its last event was read (time.perf_counter)
    appended_at: float = 0.0


class MariaDBSource:
    def __init__(self, config: MariaDBConfig, node_id: str, node: TimelineNode,
                 store: walstore.WalStore,
                 target: Callable[[], tuple[str, int] | None] | None = None) -> None:
        """TARGET: the recorded primary's (host, port), None while none is recorded; by
        default `[mariadb]`'s server."""
        self.config = config
        self._target = target or (lambda: (config.host, config.port))
        self.tailing: tuple[str, int] | None = None  # the server of the current session
        self.node = node
        self.store = store
        self.server_id = config.server_id or derived_server_id(node_id)
        self.status = SourceStatus()
        # Metrics (agent/ops/metrics.py): each acknowledged transaction's wait from its
        # proposal to its ACK written, seconds. Called on the event loop; must not block.
        self.observe_ack_wait: Callable[[float], None] | None = None

    async def run(self) -> None:
        backoff = 0.1
        while True:
            if self.node.role != "leader":
                await self.node.wait_role_change()
                continue
            target = self._target()
            if target is None:  # no primary recorded yet (adoption comes first)
                await trio.sleep(TARGET_POLL)
                continue
            # The session's tasks fail together, so errors arrive as exception groups.
            try:
                await self._session(target)
                backoff = 0.1
            except* PrimarySettingsError as group:
                # Also what a just-recorded primary says until its keeper has promoted it:
                # retried soon, logged once per message.
                if str(group.exceptions[0]) != self.status.error:
                    log.error("%s", group.exceptions[0])
                self.status.error = str(group.exceptions[0])
                self.status.failures += 1
                backoff = SETTINGS_RETRY
            except* (ReplicationError, pymysql.err.MySQLError, OSError, EOFError) as group:
                exc = group.exceptions[0]
                self.status.error = f"{type(exc).__name__}: {exc}"
                self.status.failures += 1
                log.warning("replication from %s:%d interrupted: %s", *target,
                            self.status.error)
            except* (consensus.NotLeader, CommitOutcomeUnknown):
                pass  # leadership moved on; the new leader resumes from its own log
            finally:
                self.status.connected = False
            # Back off, but try a newly recorded primary at once: after a failover the old
            # one is gone, and the new one is where commits wait.
            until = trio.current_time() + backoff
            while trio.current_time() < until and self._target() == target:
                await trio.sleep(min(TARGET_POLL, backoff))
            backoff = min(5.0, backoff * 2)

    def _gtid_state(self) -> str:
        return walstore.format_position(self.store.last_gtids())

    async def _session(self, target: tuple[str, int]) -> None:
        self.tailing = target
        stream = ReplicationStream(target[0], target[1], self.config.user,
                                   self.config.password, self.server_id)
        limiter = trio.CapacityLimiter(SESSION_THREADS)
        try:
            await run_in_thread(partial(stream.connect, self._gtid_state()),
                                name=CONNECT_THREAD, limiter=limiter, unblock=stream.close)
            self.status.connected = True
            self.status.sessions += 1
            self.status.error = None
            sender = AckSender(stream.ack_packet, stream.send_raw, stream.send_raw_nowait)
            # Nothing is acknowledged before this leader's whole log is committed.
            session = _Session(stream, sender, limiter, log_end=self.store.end_lsn)
            listener = partial(self._ack_committed, session)
            self.node.add_commit_listener(listener)
            try:
                # Any task's end cancels the others; each thread's task then stops its
                # thread and waits for it, so the nursery closes with none running.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_leadership, nursery.cancel_scope)
                    nursery.start_soon(self._watch_target, target, nursery.cancel_scope)
                    nursery.start_soon(self._send_acks, session)
                    nursery.start_soon(self._read_thread, session)
                    await session.failed.wait()
                    assert session.error is not None
                    raise session.error
            finally:
                session.stop()
                self.node.remove_commit_listener(listener)
        finally:
            stream.close()

    async def _read_thread(self, session: _Session) -> None:
        token = trio.lowlevel.current_trio_token()
        stream, room = session.stream, session.room
        last_meta = self.store.last_binlog_meta()
        last_position = BinlogMeta.decode(last_meta.payload).position if last_meta else None

        def deliver(item: _Item) -> None:
            # Runs on the event loop, straight from the reading thread: the item is proposed
            # here, with no task in between. An exception here would take the loop down.
            if session.closed:
                return  # the session ended meanwhile; the next one reads again from the log
            room.release()
            try:
                self._append(item)
                session.pending.append(item)
                self._ack_committed(session, self.node.commit_lsn)
            except Exception as exc:
                session.fail(exc)

        def hand_over(item: _Item) -> None:
            room.acquire()  # at most QUEUE transactions read ahead of the quorum
            if session.closed:  # stop() released the room to wake this thread
                raise _Stopped
            token.run_sync_soon(deliver, item)

        def loop() -> None:
            try:
                read()
            except Exception:
                if not session.closed:
                    raise
                # Stopped: the error is the closed socket or _Stopped; nothing to report.

        def read() -> None:
            nonlocal last_position
            grouper = TransactionGrouper()
            while True:
                item = stream.read()
                self.status.last_read = time.monotonic()
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
                try:
                    transaction = grouper.feed(event)
                except BinlogEventError as exc:
                    # The session ends and a new one reads again after the log's newest
                    # GTIDs: nothing is skipped, nothing acknowledged that is not stored.
                    raise ReplicationError(
                        f"cannot group the binlog at {item.file_name}:{event.next_pos} "
                        f"(event type {event.type_code:#04x}): {exc}") from exc
                if transaction is not None:
                    # Cut here, off the event loop: copying a large transaction on the
                    # loop would delay heartbeats long enough to cause an election.
                    hand_over(_Item(transaction, _ack_of(item),
                                    pieces=transaction.pieces(PIECE_SIZE),
                                    read_at=time.perf_counter()))

        await run_in_thread(loop, name=READ_THREAD, limiter=session.limiter,
                            unblock=session.stop)

    def _append(self, item: _Item) -> None:
        if item.meta is not None:
            item.waiters.append(self.node.submit(
                item.meta.encode(), kind=consensus.RecordKind.BINLOG_META))
        transaction = item.transaction
        if transaction is None:
            return
        item.appended_at = time.perf_counter()
        known = self.store.gtid_end_lsn(transaction.gtid)
        if known is not None:
            item.known_end = known  # sent again after a reconnect: never stored twice
            return
        pieces = item.pieces
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            item.waiters.append(self.node.submit(
                piece, gtid=transaction.gtid if last else None, continued=not last))

    async def _send_acks(self, session: _Session) -> None:
        def send() -> None:
            try:
                session.sender.run()
            except Exception:
                if not session.closed:
                    raise  # a write failed: the session ends with it

        await run_in_thread(send, name=ACK_THREAD, limiter=session.limiter,
                            unblock=session.stop)

    def _ack_committed(self, session: _Session, commit_lsn: int) -> None:
        """Acknowledge, in order, every item the quorum has committed. Runs on the node loop
        as a commit listener, and when an item arrives (it may be in the log already)."""
        if session.closed or commit_lsn < session.log_end:
            return
        pending = session.pending
        while pending:
            item = pending[0]
            end = item.known_end if item.known_end is not None else -1
            for waiter in item.waiters:
                if waiter.error is not None:
                    session.fail(waiter.error)
                    return
                if waiter.end_lsn < 0:
                    return  # not proposed yet: its turn comes with a later commit
                end = max(end, waiter.end_lsn)
            if end > commit_lsn:
                return
            pending.popleft()
            committed_at = time.perf_counter()
            if item.meta is not None:
                self.status.meta_events += 1
            if item.transaction is not None:
                self.status.transactions += 1
                self.status.last_gtid = item.transaction.gtid
            if item.ack is not None:
                try:
                    session.sender.post(*item.ack)
                except OSError as exc:
                    session.fail(exc)
                    return
                self.status.acks += 1
                self.status.acks_direct = session.sender.sent_direct
            if item.read_at and item.known_end is None and item.ack is not None:
                acked_at = time.perf_counter()
                latency = self.status.latency
                latency.record("read_to_append", item.appended_at - item.read_at)
                latency.record("append_to_commit", committed_at - item.appended_at)
                latency.record("commit_to_ack", acked_at - committed_at)
                latency.record("read_to_ack", acked_at - item.read_at)
                if self.observe_ack_wait is not None:
                    self.observe_ack_wait(acked_at - item.appended_at)

    async def _watch_target(self, target: tuple[str, int], scope: trio.CancelScope) -> None:
        # Fencing: once another server is the recorded primary, this one is not tailed, so
        # nothing it commits from now on is acknowledged.
        while self._target() == target:
            await trio.sleep(TARGET_POLL)
        log.info("%s:%d is no longer the recorded primary: stopping its tail", *target)
        scope.cancel()

    async def _watch_leadership(self, scope: trio.CancelScope) -> None:
        while self.node.role == "leader":
            await self.node.wait_role_change()
        log.info("no longer the leader: stopping the tail of the primary")
        scope.cancel()


class _Stopped(Exception):
    """The session was stopped while its reading thread waited for room."""


class _Session:
    """One connection to the primary: what awaits the quorum, how to acknowledge it, and
    the threads that do it."""

    def __init__(self, stream: ReplicationStream, sender: AckSender,
                 limiter: trio.CapacityLimiter, *, log_end: int) -> None:
        self.stream = stream
        self.sender = sender
        self.limiter = limiter  # this session's threads only
        self.room = threading.Semaphore(QUEUE)
        self.log_end = log_end
        self.pending: collections.deque[_Item] = collections.deque()  # in binlog order
        self.closed = False
        self.error: BaseException | None = None
        self.failed = trio.Event()

    def stop(self) -> None:
        """Make the session's threads return soon; never blocks, may run more than once."""
        if self.closed:
            return
        self.closed = True  # first: the threads read it once woken
        self.sender.close()
        self.stream.close()  # ends a blocked read or ACK write
        self.room.release()  # wakes a reader waiting for room

    def fail(self, error: BaseException) -> None:
        """End the session with ERROR (raised by its task, off the node loop)."""
        if self.error is None:
            self.error = error
        self.failed.set()


async def run_in_thread(fn: Callable[[], T], *, name: str, limiter: trio.CapacityLimiter,
                        unblock: Callable[[], None]) -> T:
    """FN in a worker thread of LIMITER, never abandoned: when the caller is cancelled,
    UNBLOCK (which must not block) makes FN return soon, and this waits until it has.

    An error FN raises once unblocked is the unblocking's doing: Cancelled is raised instead.
    """
    finished = False
    unblocked = False

    async def unblock_on_cancel() -> None:
        nonlocal unblocked
        try:
            await trio.sleep_forever()
        finally:
            if not finished:
                unblocked = True
                unblock()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(unblock_on_cancel)
        try:
            return await trio.to_thread.run_sync(fn, thread_name=name, limiter=limiter)
        except Exception:
            if unblocked or trio.current_effective_deadline() == float("-inf"):
                await trio.lowlevel.checkpoint()  # raises Cancelled
            raise
        finally:
            finished = True
            nursery.cancel_scope.cancel()


def _ack_of(item: StreamEvent) -> tuple[str, int] | None:
    return (item.file_name, item.event.next_pos) if item.ack_requested else None
