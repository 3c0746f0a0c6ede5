"""One timeline's node loop: runs the node driver (agent/node/driver.py) with real disk,
network and time.

A single task owns the driver and its core. Everything else (peer receivers, the tick
timer, the fsync worker, proposers) talks to it through one inbox channel, so the core
never sees two inputs at once. Each pass drains every queued input, then has the driver
apply one Ready (persist term/vote, truncate, append, commit, send), then makes the batch
durable — on the loop for a small batch on a fast disk, otherwise in the group-commit
worker, whose durability report (`walstore.Durable`) comes back through the inbox.

A full disk (ENOSPC, EDQUOT) is not fatal: WAL writes stay pending and are retried, so
nothing is acknowledged beyond the disk; a Ready whose control-file write fails is held
(no input reaches the core, no tick) and retried; a leader hands leadership to a caught-up
voter. Status shows `disk_full`; once there is room the node catches up by itself.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

import consensus
import walstore
from agent.node import translate
from agent.node.driver import Applied, NodeDriver
from agent.node.lag import MemberLag

log = logging.getLogger("binkeeper.timeline")

# How often a commit-LSN-only change reaches the control file; term and vote changes are
# written (and fsynced) before any message that depends on them.
COMMIT_PERSIST_INTERVAL = 0.2

# When the loop has nothing else to do, a small batch is written and fsynced on the event
# loop itself: the hand-off to a worker thread and back costs more CPU and latency than a
# fast fdatasync (a leader's appends are already on the wire by then). Under load, for
# large batches, and on a disk whose recent fsyncs were slow, the group-commit worker does
# it, overlapping the loop's other work and keeping heartbeats flowing.
INLINE_FLUSH_BYTES = 32 << 10
INLINE_FLUSH_SLOW = 0.005  # seconds: a smoothed flush time above this uses the worker

# A full disk is retried with a bounded backoff: soon after space returns, the node resumes.
DISK_RETRY_FIRST = 0.1
DISK_RETRY_MAX = 1.0
# A leader with a full disk offers leadership to a caught-up voter at most this often.
STEP_ASIDE_INTERVAL = 1.0
# Peer messages waiting for the loop: past either bound, peer receivers stop reading.
INBOX_MESSAGES = 4096
INBOX_BYTES = 64 << 20


class CommitOutcomeUnknown(Exception):
    """Leadership was lost before the proposal committed: it may or may not commit later."""


@dataclass
class _Waiter:
    end_lsn: int
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None
    proposed: float = 0.0  # time.perf_counter() at submit, for the commit-time histogram


@dataclass(frozen=True)
class _Propose:
    payload: bytes
    gtid: str | None
    continued: bool
    reply: _Waiter
    kind: consensus.RecordKind = consensus.RecordKind.DATA


@dataclass(frozen=True)
class _Flushed:
    report: walstore.Durable


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _StepAside:
    """The disk is full: a leader hands leadership to a caught-up voter."""


@dataclass(frozen=True)
class _Message:
    msg: Any
    size: int  # what it counts against INBOX_BYTES


@dataclass(frozen=True)
class _Admin:
    """Run ACTION on the core in the node loop; an int result is an LSN to await commit of."""

    action: Callable[[consensus.Node], int | None]
    reply: _Waiter


Send = Callable[[str, Any], None]


class TimelineNode:
    def __init__(
        self,
        *,
        node_id: str,
        initial_membership: consensus.Membership,
        store: walstore.WalStore,
        send: Send,
        tick_seconds: float,
        core_config: consensus.Config,
        rng: random.Random | None = None,
        on_membership: Callable[[consensus.Membership], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self._tick_seconds = tick_seconds
        self.driver = NodeDriver[_Waiter](
            node_id=node_id, store=store, initial_membership=initial_membership,
            core_config=core_config, rng=rng or random.Random(), send=send,
            on_membership=on_membership)
        self.core = self.driver.core
        control = store.control
        # Unbounded as a channel — timers, the fsync worker and proposers must never block
        # on it (proposals are bounded by their producers) — but peer messages are counted
        # and their receivers wait for room (wait_inbox_room).
        self._inbox_send, self._inbox = trio.open_memory_channel[object](math.inf)
        self._inbox_messages = 0
        self._inbox_bytes = 0
        self._inbox_room = trio.Event()
        self._inbox_room.set()
        self.inbox_waits = 0
        self._dirty = trio.Event()
        self._last_commit_persist = 0.0
        self._persist_due = trio.Event()
        self._read_ahead_due = trio.Event()
        self.commit_lsn = control.commit_lsn
        self.commit_changed = trio.Event()
        self.role = "follower"
        self.term = control.term
        self.leader: str | None = None
        self._role_changed = trio.Event()
        self.disk_full_errors = 0
        self.disk_error: str | None = None  # the last ENOSPC while the disk is full
        self._holding = False  # a Ready waits for room for its control-file write
        self._last_step_aside = -math.inf
        self._flush_seconds = 0.0  # smoothed duration of flushes
        self._last_flush_end = 0.0
        self.inline_flushes = 0
        # Control-file writes and catch-up reads: threads of their own, apart from trio's
        # default limiter (the WAL's fsync worker uses that one), at most one each at a time.
        self._workers = trio.CapacityLimiter(3)
        # Counted as the loop sees role changes (status and metrics).
        self.elections = 0  # times this agent stood for election in a new term
        self.elections_won = 0
        self.leader_changes = 0  # times the leader this agent knows changed to another
        self._last_leader: str | None = None
        self.member_lag = MemberLag()
        # Metrics observers (agent/ops/metrics.py), seconds: each WAL write+fsync batch,
        # and each proposal from submit to commit. Called on the event loop; never block.
        self.observe_flush: Callable[[float], None] | None = None
        self.observe_commit: Callable[[float], None] | None = None

    # ---- inputs from other tasks -------------------------------------------------------

    def deliver(self, msg: Any) -> None:
        size = translate.message_size(msg)
        self._inbox_messages += 1
        self._inbox_bytes += size
        if ((self._inbox_messages >= INBOX_MESSAGES or self._inbox_bytes >= INBOX_BYTES)
                and self._inbox_room.is_set()):
            self._inbox_room = trio.Event()  # one Event per full spell: every waiter wakes
        self._inbox_send.send_nowait(_Message(msg, size))

    async def wait_inbox_room(self) -> None:
        """Returns when peer messages may be delivered again. Peer receivers wait here
        before reading more: while the loop is behind (a slow disk, a Ready held on a full
        one) the inbox stays bounded and TCP pushes back on the senders."""
        while self._inbox_messages >= INBOX_MESSAGES or self._inbox_bytes >= INBOX_BYTES:
            self.inbox_waits += 1
            await self._inbox_room.wait()

    async def propose(
        self, payload: bytes, *, gtid: str | None = None, continued: bool = False
    ) -> int:
        """Append through the quorum; returns the end LSN once it is committed."""
        return await self.wait(self.submit(payload, gtid=gtid, continued=continued))

    def submit(
        self, payload: bytes, *, gtid: str | None = None, continued: bool = False,
        kind: consensus.RecordKind = consensus.RecordKind.DATA,
    ) -> _Waiter:
        """Queue a proposal without waiting: submissions keep their order in the log."""
        waiter = _Waiter(end_lsn=-1, proposed=time.perf_counter())
        self._inbox_send.send_nowait(_Propose(payload, gtid, continued, waiter, kind))
        return waiter

    @staticmethod
    async def wait(waiter: _Waiter) -> int:
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.end_lsn

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call LISTENER(commit_lsn) on the node loop whenever the commit LSN advances, before
        that pass sends anything: the quickest way to act on a commit. It must not block."""
        self.driver.commit_listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        if listener in self.driver.commit_listeners:
            self.driver.commit_listeners.remove(listener)

    async def admin(self, action: Callable[[consensus.Node], int | None]) -> int:
        """Run an admin ACTION on the core; if it returns an LSN, wait until it commits."""
        waiter = _Waiter(end_lsn=-1)
        self._inbox_send.send_nowait(_Admin(action, waiter))
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.end_lsn

    async def change_membership(
        self, build: Callable[[consensus.Membership], consensus.Membership]
    ) -> consensus.Membership:
        """Propose BUILD(current membership); returns it once the change is committed."""
        await self.admin(lambda core: core.propose_membership(build(core.membership)))
        return self.core.membership

    async def transfer_leadership(self, to: str) -> None:
        def start(core: consensus.Node) -> None:
            core.transfer_leadership(to)

        await self.admin(start)

    # ---- the loop ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._syncer)
            nursery.start_soon(self._commit_persister)
            nursery.start_soon(self._reader_ahead)
            task_status.started()
            await self._main_loop()

    def persist_commit_now(self) -> None:
        """On shutdown: the control file gets the latest commit LSN (never beyond the disk)."""
        if self.commit_lsn != self.driver.persisted_commit:
            try:
                self.driver.persist_commit()
            except walstore.DiskFullError as exc:  # re-learned from the leader at restart
                log.warning("%s: commit LSN not saved at shutdown: %s", self.node_id, exc)

    async def _ticker(self) -> None:
        next_at = trio.current_time()
        while True:
            next_at += self._tick_seconds
            await trio.sleep_until(next_at)
            if not self._holding:  # a node that cannot persist its term lets time stand
                self._inbox_send.send_nowait(_Tick())

    async def _syncer(self) -> None:
        # Group commit: one fsync covers everything appended while the previous one ran.
        backoff = DISK_RETRY_FIRST
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            started = time.perf_counter()
            try:
                await self.store.sync()
            except walstore.DiskFullError as exc:
                # Nothing is lost: the records stay pending and are retried; no acks meanwhile.
                self._disk_full(exc)
                if self.role == "leader":
                    self._inbox_send.send_nowait(_StepAside())
                self._dirty.set()
                await trio.sleep(backoff)
                backoff = min(DISK_RETRY_MAX, backoff * 2)
                continue
            backoff = DISK_RETRY_FIRST
            self._disk_ok()
            # The worker's timings tell the loop when its disk is fast (or idle) again.
            self._last_flush_end = time.perf_counter()
            self._flush_seconds += (self._last_flush_end - started - self._flush_seconds) / 8
            if self.observe_flush is not None:
                self.observe_flush(self._last_flush_end - started)
            # The report is taken now, with no await since the sync finished: it names the
            # LSN, term and truncation epoch it covers, so it stays checkable in the inbox.
            self._inbox_send.send_nowait(_Flushed(self.store.durable()))

    async def _main_loop(self) -> None:
        while True:
            item = await self._inbox.receive()
            self._apply(item)
            while True:  # drain: one Ready (and one fsync) for everything queued
                try:
                    item = self._inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                self._apply(item)
            await self._handle_ready()

    def _apply(self, item: object) -> None:
        core = self.core
        if isinstance(item, _Message):
            self._inbox_messages -= 1
            self._inbox_bytes -= item.size
            if self._inbox_messages < INBOX_MESSAGES and self._inbox_bytes < INBOX_BYTES:
                self._inbox_room.set()
            core.step(item.msg)
        elif isinstance(item, _Tick):
            core.tick()
        elif isinstance(item, _Flushed):
            # Dropped if a truncation or a newer leader's log has replaced what it covers.
            self.driver.durable(item.report)
        elif isinstance(item, _Propose):
            try:
                item.reply.end_lsn = self.driver.propose(
                    item.payload, item.reply, gtid=item.gtid, continued=item.continued,
                    kind=item.kind)
            except consensus.NotLeader as exc:
                item.reply.error = exc
                item.reply.done.set()
        elif isinstance(item, _StepAside):
            self._step_aside()
        elif isinstance(item, _Admin):
            try:
                result = item.action(core)
            except (consensus.NotLeader, consensus.ConfigChangeError, ValueError) as exc:
                # (MembershipError is a ValueError: a change that does not apply)
                item.reply.error = exc
                item.reply.done.set()
                return
            if isinstance(result, int):  # an LSN to wait for: released once committed
                item.reply.end_lsn = result
                self.driver.wait_for(result, item.reply)
            else:
                item.reply.done.set()

    async def _handle_ready(self) -> None:
        driver = self.driver
        if not driver.has_ready():
            self._note_role()
            self._maybe_persist_commit()
            return
        rd = driver.ready()
        applied = await self._apply_ready(rd)
        self._fail(applied.failed, CommitOutcomeUnknown(
            "the proposal was replaced by a newer leader's log"))
        if rd.commit_lsn is not None and rd.commit_lsn > self.commit_lsn:
            self.commit_lsn = rd.commit_lsn
            for waiter in applied.committed:
                waiter.done.set()
            if self.observe_commit is not None:
                now = time.perf_counter()
                for waiter in applied.committed:
                    if waiter.proposed:  # (admin actions' waiters have no submit time)
                        self.observe_commit(now - waiter.proposed)
            self.commit_changed.set()
            self.commit_changed = trio.Event()
        flushed_inline = False
        if applied.appended:
            flushed_inline = self._flush_inline()
            if not flushed_inline:
                self._dirty.set()
        self._note_role()
        self._maybe_persist_commit()
        if driver.storage.read_ahead_from(self._committed_on_disk()) is not None:
            self._read_ahead_due.set()
        if flushed_inline and driver.has_ready():
            await self._handle_ready()  # the acks the flush made possible, right away

    async def _apply_ready(self, rd: consensus.Ready) -> Applied[_Waiter]:
        """Have the driver apply RD; while its control-file write finds the disk full, hold
        RD and retry — nothing else reaches the core meanwhile, and nothing is sent."""
        backoff = DISK_RETRY_FIRST
        while True:
            try:
                if self.driver.control_changes(rd):
                    # Off the event loop (it may wait for the commit LSN's writer too);
                    # nothing of RD is sent before it is written.
                    await trio.to_thread.run_sync(self.driver.persist_control, rd,
                                                   limiter=self._workers)
                if rd.truncate_to is not None:
                    # The files must be at rest to cut them; no await between this and
                    # apply, or the syncer could start another round.
                    await self.store.wait_idle()
                applied = self.driver.apply(rd)
            except walstore.DiskFullError as exc:
                self._disk_full(exc)
                self._holding = True
                await trio.sleep(backoff)
                backoff = min(DISK_RETRY_MAX, backoff * 2)
                continue
            if self._holding:
                self._holding = False
                self._disk_ok()
            return applied

    def _disk_full(self, exc: walstore.DiskFullError) -> None:
        self.disk_full_errors += 1
        if self.disk_error is None:  # one error per episode, not one per retry
            log.error("%s: %s; not acknowledging until there is room (retrying every "
                      "%.1fs at most)", self.node_id, exc, DISK_RETRY_MAX)
        self.disk_error = str(exc)

    def _disk_ok(self) -> None:
        if self.disk_error is not None and not self._holding:
            log.warning("%s: the disk has room again (%d failed writes so far); resuming",
                        self.node_id, self.disk_full_errors)
            self.disk_error = None

    def _step_aside(self) -> None:
        """A leader whose disk is full hands leadership to a caught-up voter: the others
        commit without it anyway, and it should not keep buffering proposals it cannot
        write. Without such a voter it stays (a majority still needs its copy)."""
        now = time.monotonic()
        if self.disk_error is None or now - self._last_step_aside < STEP_ASIDE_INTERVAL:
            return
        target = self.driver.handover_target()
        if target is None:
            return
        self._last_step_aside = now
        log.warning("%s: the disk is full: handing leadership to %s", self.node_id, target)
        try:
            self.core.transfer_leadership(target)
        except (consensus.NotLeader, ValueError):
            pass

    def _flush_inline(self) -> bool:
        """Write and fsync a small batch here; False: leave it to the worker."""
        store = self.store
        if (store.syncing or self.disk_error is not None  # full: the worker's backoff retries
                or store.unflushed_bytes > INLINE_FLUSH_BYTES
                or self._flush_seconds > INLINE_FLUSH_SLOW
                or self._inbox.statistics().current_buffer_used
                or trio.lowlevel.current_statistics().tasks_runnable):
            # Under load the worker's fsync overlaps the loop's work on what is queued or
            # ready to run (proposers woken by the last commit, for one).
            return False
        started = time.perf_counter()
        if started - self._last_flush_end < self._flush_seconds:
            return False  # the disk is busy more than half the time: a streaming load
        try:
            store.flush()
        except walstore.DiskFullError as exc:
            self._disk_full(exc)
            return False  # the worker retries with backoff; the records stay pending
        self._disk_ok()
        self._last_flush_end = time.perf_counter()
        self._flush_seconds += (self._last_flush_end - started - self._flush_seconds) / 8
        self.inline_flushes += 1
        if self.observe_flush is not None:
            self.observe_flush(self._last_flush_end - started)
        self.driver.durable(store.durable())
        return True

    def _note_role(self) -> None:
        core = self.core  # read directly: this runs on every pass of the loop
        role, term, leader = core.role.value, core.term, core.leader
        if (role, term, leader) != (self.role, self.term, self.leader):
            if role != self.role:
                log.info("%s: %s -> %s in term %d", self.node_id, self.role, role, term)
            if role in ("candidate", "leader") and term != self.term:
                self.elections += 1
            if role == "leader" and self.role != "leader":
                self.elections_won += 1
            if leader is not None and leader != self._last_leader:
                self.leader_changes += 1
                self._last_leader = leader
            if role != "leader" or term != self.term:
                self.member_lag.reset()
            self.role, self.term, self.leader = role, term, leader
            self._role_changed.set()
            self._role_changed = trio.Event()
        if role == "leader":
            self.member_lag.observe(time.monotonic(), self.store.end_lsn, core.progress)
        self._fail(self.driver.leadership_lost(),
                   CommitOutcomeUnknown("leadership lost before commit"))

    async def wait_role_change(self) -> None:
        await self._role_changed.wait()

    def _maybe_persist_commit(self) -> None:
        if self.driver.durable_commit() == self.driver.persisted_commit:
            return  # nothing new may be written (a lagging or full disk)
        if time.monotonic() - self._last_commit_persist < COMMIT_PERSIST_INTERVAL:
            return
        self._persist_due.set()

    def _committed_on_disk(self) -> int:
        return min(self.commit_lsn, self.store.flush_lsn)

    async def _reader_ahead(self) -> None:
        # Catch-up reads of committed records, a few MiB ahead of a lagging follower, in a
        # worker thread: the core's next batches then come from memory (log_storage).
        storage = self.driver.storage
        while True:
            await self._read_ahead_due.wait()
            self._read_ahead_due = trio.Event()
            committed = self._committed_on_disk()
            start = storage.read_ahead_from(committed)
            if start is None:
                continue
            try:
                entries = await trio.to_thread.run_sync(storage.read_ahead, start, committed,
                                                        limiter=self._workers)
            except Exception as exc:  # a read-ahead is only ever an optimisation
                # Not read ahead; the core's own read meets the same record and says so.
                log.warning("%s: read-ahead at LSN %d failed: %s", self.node_id, start, exc)
                continue
            storage.keep(entries)

    async def _commit_persister(self) -> None:
        # The commit LSN is saved now and then, in a worker thread: two fsyncs on the event
        # loop would stall heartbeats whenever the disk is busy.
        while True:
            await self._persist_due.wait()
            self._persist_due = trio.Event()
            commit = self.driver.durable_commit()
            try:
                await trio.to_thread.run_sync(
                    partial(self.store.update_control, commit_lsn=commit), limiter=self._workers)
            except walstore.DiskFullError as exc:
                self._disk_full(exc)  # retried at the next interval
            else:
                self.driver.persisted_commit = commit
                self._disk_ok()
            self._last_commit_persist = time.monotonic()

    @staticmethod
    def _fail(waiters: list[_Waiter], error: Exception) -> None:
        for waiter in waiters:
            waiter.error = error
            waiter.done.set()

    def caught_up(self, member: str) -> bool:
        return self.driver.caught_up(member)

    @property
    def membership(self) -> consensus.Membership:
        return self.core.membership

    def status(self) -> dict[str, Any]:
        """The consensus side of this timeline, as `/v1/status` shows it."""
        core, store = self.core.status(), self.store
        now, end = time.monotonic(), store.end_lsn
        members = []
        for member_id in sorted(core.voters | core.learners):
            progress = core.progress.get(member_id)
            # Another member's flush LSN is known on the leader only: what it acked as
            # durable (and matching the leader's log).
            flush = (
                store.flush_lsn if member_id == self.node_id
                else progress.match_lsn if progress is not None else None
            )
            members.append(
                {
                    "id": member_id,
                    "role": "voter" if member_id in core.voters else "learner",
                    "flush_lsn": flush,
                    "match_lsn": progress.match_lsn if progress is not None else None,
                    "next_lsn": progress.next_lsn if progress is not None else None,
                    # On the leader: how far behind its log (docs/metrics.md, agent/node/lag.py)
                    "lag_bytes": max(0, end - progress.match_lsn) if progress is not None
                    else None,
                    "lag_s": None if progress is None else self.member_lag.seconds(
                        member_id, now, end, progress.match_lsn),
                }
            )
        return {
            "role": core.role.value,  # the core's: a node holding a Ready may have stepped down
            "term": core.term,
            "leader": core.leader,
            "commit_lsn": core.commit_lsn,
            "flush_lsn": store.flush_lsn,
            "last_lsn": store.end_lsn,
            "fsyncs": store.fsync_count,
            "fsync_mean_ms": round(store.fsync_seconds * 1000 / max(1, store.fsync_count), 3),
            "inline_flushes": self.inline_flushes,
            "stale_reports": self.driver.stale_reports,
            "disk_full": self.disk_error is not None,
            "disk_error": self.disk_error,
            "disk_full_errors": self.disk_full_errors,
            "wal_bytes": store.disk_bytes,
            "elections": self.elections,
            "elections_won": self.elections_won,
            "leader_changes": self.leader_changes,
            "committed_gtid": walstore.format_position(store.gtids_at(core.commit_lsn)) or None,
            "members": members,
            "membership_generation": self.core.membership.generation,
        }
