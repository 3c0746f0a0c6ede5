"""Deterministic simulation of the code that runs: one seed, one bad day, replayed exactly.

Each node is the agent's own node driver (agent/node/driver.py) over the real WAL store
(walstore.WalStore) on a simulated disk (tests/sim/disk.py), driven by a seeded PRNG over a
simulated network (loss, delay and so reordering, duplication, symmetric and one-way
partitions) and simulated time. What the trio node loop does with real I/O — flush on a
timer or at once, durability reports that reach the driver later, a truncation that waits
for the disk to be at rest — the simulator does with events.

Faults: crashes (weighted toward moments when writes are in flight: any disk write, sync
or control-file replace may be where the node dies), torn and dropped unsynced writes,
fsync failures (EIO: the node treats it as fatal and restarts), full disks (ENOSPC, for a
while: WAL writes are retried, a Ready whose control-file write fails is held — its node
frozen, as the trio loop holds it — and retried, a leader hands leadership over), lost
disks (a node restarts empty), segment rolls inside write batches (small segments),
leadership transfers, the preferred-leader hand-over, and membership changes (a learner
joins, is promoted, a member is removed).

Checked after every event: at most one leader per term; committed prefixes identical and
never changing; a new leader holds everything committed; nothing committed is truncated;
every proposal a node reported committed to its proposer (what becomes a semi-sync ACK)
is in the committed history at its LSN with its bytes; no node acknowledges a byte that
is not durable on its simulated disk at that moment; no message goes out before the term
and vote it carries are in the durable control file. After the fault phase everything
heals and the cluster must converge and commit one more entry everywhere (liveness).
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consensus
import walstore
from agent.node.driver import NodeDriver
from consensus import Entry
from tests.sim.disk import DiskFaults, SimCrash, SimDisk
from walstore import _record
from walstore._control import CONTROL_NAME, decode_control
from walstore._segment import parse_segment_name

TICK_EVERY = 10  # simulated time units per core tick
WAL = Path("/sim/wal")
SEGMENT_SIZE = 1024  # small: segments roll often, also in the middle of a write batch
MAX_RECORD = 512


class SafetyViolation(AssertionError):
    pass


class LivenessFailure(AssertionError):
    pass


class BeyondTolerance(Exception):
    """The run ended with fewer voters holding history than a majority: safe (every event
    was checked), but not live, by design. A voter that started on an empty disk and was
    never reached by a leader cannot tell whether it is new or lost its disk (and with it
    votes and acknowledgements), so it waits to be rebuilt rather than risk committed
    history; when such voters and lost disks leave no majority, nobody can be elected
    until an operator acts. The sweep counts these runs."""


@dataclass
class Proposal:
    payload: bytes
    end: int = -1


DriverFactory = Callable[..., NodeDriver[Proposal]]


@dataclass
class SimNode:
    node_id: str
    disk: SimDisk
    membership: consensus.Membership  # what its config says when its disk is empty
    store: walstore.WalStore | None = None
    driver: NodeDriver[Proposal] | None = None
    incarnation: int = 0  # node-local events of an earlier life are ignored
    flush_scheduled: bool = False
    inbox: list[tuple[str, Any]] = field(default_factory=list)  # drained by one pass
    pass_scheduled: bool = False
    last_commit: int = 0
    removed: bool = False
    held: consensus.Ready | None = None  # its control-file write found the disk full

    @property
    def free(self) -> bool:
        """Up, and not frozen holding a Ready: the core may take inputs."""
        return self.driver is not None and self.held is None

    @property
    def core(self) -> consensus.Node | None:
        return self.driver.core if self.driver is not None else None


@dataclass
class _DurableLog:
    """A node's durable records as last parsed from its simulated disk."""

    version: int = -1
    names: list[str] = field(default_factory=list)
    parsed: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # id, gen, offset
    ends: dict[int, int] = field(default_factory=dict)  # end LSN -> term
    expected: int | None = None  # where the next segment must start
    stopped: bool = False  # a gap or a torn record: nothing after it is recovered


@dataclass
class Profile:
    """One seed's bad day."""

    loss: float
    duplicate: float
    max_delay: int
    crash_rate: float
    partition_rate: float
    fsync_max: int
    report_max: int  # how late a durability report may reach the driver
    loop_lag: int  # how long inputs may wait for the node loop's next pass (they pile up)
    propose_rate: float
    fault_time: int
    crash_in_io: float
    eio: float
    full_rate: float
    lose_rate: float
    transfer_rate: float
    member_rate: float
    preferred: bool

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        return cls(
            loss=rng.choice([0.0, 0.01, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            max_delay=rng.choice([3, 10, 40]),
            crash_rate=rng.choice([0.0, 0.0005, 0.002]),
            partition_rate=rng.choice([0.0, 0.001, 0.004, 0.01]),
            fsync_max=rng.choice([1, 8, 30, 300]),  # 300: an fsync slower than an election
            report_max=rng.choice([0, 5, 30]),
            loop_lag=rng.choice([0, 2, 10, 30]),
            propose_rate=rng.choice([0.02, 0.1, 0.3]),
            fault_time=rng.choice([1500, 3000]),
            crash_in_io=rng.choice([0.0, 0.0, 0.002, 0.01]),
            eio=rng.choice([0.0, 0.0, 0.002]),
            full_rate=rng.choice([0.0, 0.0, 0.0005]),
            lose_rate=rng.choice([0.0, 0.0, 0.0002]),
            transfer_rate=rng.choice([0.0, 0.0005, 0.002]),
            member_rate=rng.choice([0.0, 0.0, 0.001]),
            preferred=rng.random() < 0.3,
        )


@dataclass
class Counters:
    proposals: int = 0
    acknowledged: int = 0  # proposals a leader reported committed (each checked)
    crashes: int = 0
    fatal_io: int = 0  # EIO: the node restarts
    held_readies: int = 0  # control-file writes that found the disk full (Ready held)
    full_handovers: int = 0  # leaders that handed over because their disk was full
    stale_reports: int = 0
    transfers: int = 0
    membership_changes: int = 0
    full_periods: int = 0
    truncations: int = 0
    beyond_tolerance: int = 0  # runs that ended with too few voters holding history
    process_crashes: int = 0  # crashes of the process only (the page cache survives)


class Simulation:
    def __init__(
        self,
        seed: int,
        *,
        nodes: int | None = None,
        verbose: bool = False,
        config_hook: Callable[[consensus.Config], None] | None = None,
        driver_factory: DriverFactory | None = None,
        profile_hook: Callable[[Profile], None] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        size = nodes or self.rng.choice([3, 3, 5])
        self.ids = [f"n{i + 1}" for i in range(size)]
        self.profile = Profile.draw(self.rng)
        if profile_hook is not None:
            profile_hook(self.profile)
        self.verbose = verbose
        self.config_hook = config_hook
        self.driver_factory: DriverFactory = driver_factory or NodeDriver
        self.time = 0
        self.queue: list[tuple[int, int, str, Any]] = []  # (time, seq, kind, payload)
        self.seq = 0
        founding = consensus.Membership(1, frozenset(self.ids), frozenset(),
                                        tuple((i, "sim") for i in self.ids))
        faults = DiskFaults(self.profile.crash_in_io, self.profile.eio)
        self.nodes = {i: SimNode(i, SimDisk(random.Random(self.rng.random()), faults),
                                 founding) for i in self.ids}
        self.preferred = self.rng.choice(self.ids) if self.profile.preferred else None
        self.up: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()  # directed links that drop everything
        self.leaders_by_term: dict[int, str] = {}
        self.committed: list[Entry] = []  # the cluster's committed log as observed so far
        self.committed_ends: list[int] = []
        self.counters = Counters()
        self.lost: dict[str, int] = {}  # lost disks not yet rebuilt: node -> commit LSN then
        self.faults = True
        self.trace: list[str] = []
        self._durable_cache: dict[str, _DurableLog] = {}
        self._control_cache: dict[str, tuple[Any, walstore.Control]] = {}
        for node_id in self.ids:
            self._start(node_id)

    # ---- plumbing ---------------------------------------------------------------------------

    def log(self, text: str) -> None:
        line = f"[{self.time:6d}] {text}"
        if self.verbose:
            print(line)
        self.trace.append(line)
        if len(self.trace) > 200:
            del self.trace[:100]

    def fail(self, kind: type[AssertionError], text: str) -> None:
        tail = "\n".join(self.trace[-40:])
        raise kind(
            f"seed {self.seed}: {text}\n"
            f"  rerun: .venv/bin/python -m tests.sim --seed {self.seed} -v"
            f"\n  profile: {self.profile}\n  last events:\n{tail}"
        )

    def schedule(self, delay: int, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.time + delay, self.seq, kind, payload))

    def _config(self, node_id: str) -> consensus.Config:
        config = consensus.Config(
            node_id=node_id,
            election_ticks=10,
            heartbeat_ticks=2,
            max_batch_bytes=300,
            max_inflight_bytes=2000,
        )
        if self.config_hook:
            self.config_hook(config)
        return config

    def _start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        try:
            store = walstore.WalStore.open(WAL, fs=node.disk, segment_size=SEGMENT_SIZE,
                                           max_record_size=MAX_RECORD)
        except walstore.FsyncFailed:
            self.counters.fatal_io += 1
            node.disk.crash()
            self.schedule(self.rng.randrange(50, 600), "restart", node_id)
            return
        except walstore.WalError as exc:
            self.fail(SafetyViolation, f"{node_id}'s WAL does not open after a crash: {exc}")
        except SimCrash:
            node.disk.crash()
            self.schedule(self.rng.randrange(50, 600), "restart", node_id)
            return
        node.store = store
        node.disk.watch = lambda: self._watch_cuts(node_id)
        node.incarnation += 1
        node.flush_scheduled = node.pass_scheduled = False
        node.inbox = []
        node.held = None
        node.driver = self.driver_factory(
            node_id=node_id, store=store, initial_membership=node.membership,
            core_config=self._config(node_id), rng=random.Random(self.rng.random()),
            send=lambda dst, msg, src=node_id: self._send(src, dst, msg))
        node.last_commit = node.driver.core.commit_lsn
        self.up.add(node_id)
        self.schedule(self.rng.randrange(1, TICK_EVERY + 1), "tick", (node_id, node.incarnation))

    def _crash(self, node_id: str, why: str) -> None:
        """The node dies: a machine crash (unsynced writes kept, torn or dropped) or, as
        often, only its process (kill -9: the page cache keeps every write, synced or not,
        and a restart must not take unsynced bytes for durable ones)."""
        node = self.nodes[node_id]
        machine = self.rng.random() < 0.5
        if machine:
            node.disk.crash()
        else:
            self.counters.process_crashes += 1
        node.store = node.driver = None
        node.held = None
        self.up.discard(node_id)
        self.counters.crashes += 1
        self.log(f"CRASH {node_id} ({why}{'' if machine else '; process only'})")
        if not node.removed:
            self.schedule(self.rng.randrange(50, 600), "restart", node_id)

    # ---- the node driver, as agent/node/loop.py runs it ---------------------------------------

    def _drive(self, node_id: str) -> None:
        node = self.nodes[node_id]
        while node.free and (driver := node.driver) is not None and driver.has_ready():
            if not self._apply_ready(node_id, driver.ready()):
                return

    def _apply_ready(self, node_id: str, rd: consensus.Ready) -> bool:
        """Apply RD as the trio loop does; False when the node crashed or now holds RD."""
        node = self.nodes[node_id]
        driver, store = node.driver, node.store
        assert driver is not None and store is not None
        if rd.truncate_to is not None:
            if self._cuts_committed(store, rd.truncate_to):
                self.fail(SafetyViolation,
                          f"{node_id} truncates committed history at {rd.truncate_to}")
        try:
            applied = driver.apply(rd)
        except SimCrash:
            self._crash(node_id, "in a control or truncation write")
            return False
        except walstore.DiskFullError:
            # The control file found the disk full: the loop holds RD, frozen, and retries.
            node.held = rd
            self.counters.held_readies += 1
            self.log(f"DISK FULL {node_id}: control file; Ready held")
            self.schedule(self.rng.randint(20, 80), "retry", (node_id, node.incarnation))
            return False
        except walstore.TruncateBelowCommit as exc:
            self.fail(SafetyViolation, f"{node_id}: {exc}")
        if rd.truncate_to is not None:
            self.counters.truncations += 1
        self._observe_commit(node_id)
        for proposal in applied.committed:
            self._check_acknowledged(node_id, proposal)
        if applied.appended:
            self._schedule_flush(node)
        if driver.core.role is consensus.Role.LEADER:
            self._observe_leader(node_id)
        driver.leadership_lost()  # the proposers hear "unknown"
        return True

    def _retry_held(self, node: SimNode) -> None:
        """The loop's retry of a held Ready; once applied, the node takes inputs again."""
        rd, node.held = node.held, None
        if rd is None or not self._apply_ready(node.node_id, rd):
            return
        self.log(f"DISK {node.node_id}: held Ready applied")
        self._drive(node.node_id)
        if node.free and node.inbox and not node.pass_scheduled:
            node.pass_scheduled = True
            self.schedule(0, "pass", (node.node_id, node.incarnation))

    def _schedule_flush(self, node: SimNode) -> None:
        if not node.flush_scheduled:
            node.flush_scheduled = True
            self.schedule(self.rng.randint(1, self.profile.fsync_max), "flush",
                          (node.node_id, node.incarnation))

    def _flush(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.flush_scheduled = False
        store = node.store
        assert store is not None
        try:
            store.flush()
        except SimCrash:
            self._crash(node_id, "with writes in flight")
            return
        except walstore.DiskFullError:
            self.log(f"DISK FULL {node_id}: flush retried later")
            node.flush_scheduled = True
            self.schedule(self.rng.randint(20, 80), "flush", (node_id, node.incarnation))
            self._hand_over_if_full(node)
            return
        except walstore.FsyncFailed as exc:  # EIO: what was written is of unknown fate
            self.counters.fatal_io += 1
            self._crash(node_id, f"fsync failed: {exc}")
            return
        # The report is taken now and reaches the driver later, through the node's inbox.
        report = store.durable()
        self.schedule(self.rng.randint(0, self.profile.report_max), "report",
                      (node_id, node.incarnation, report))

    def _hand_over_if_full(self, node: SimNode) -> None:
        """A leader whose disk is full hands leadership to a caught-up voter (the trio
        loop's `_step_aside`)."""
        driver = node.driver
        if not node.free or driver is None or driver.core.role is not consensus.Role.LEADER:
            return
        target = driver.handover_target()
        if target is not None and driver.core.transferee is None:
            self.counters.full_handovers += 1
            self._transfer(node.node_id, target)

    def _enqueue(self, node: SimNode, item: tuple[str, Any]) -> None:
        """Into the node loop's inbox: everything queued when a pass starts is applied
        in that pass, then one Ready is handled (as agent/node/loop.py does), so a report
        and a message that arrive together meet inside one pass."""
        node.inbox.append(item)
        if not node.pass_scheduled:
            node.pass_scheduled = True
            self.schedule(self.rng.randint(0, self.profile.loop_lag), "pass",
                          (node.node_id, node.incarnation))

    def _pass(self, node: SimNode) -> None:
        node.pass_scheduled = False
        driver = node.driver
        assert driver is not None
        if node.held is not None:
            return  # frozen: the inputs wait in the inbox until the held Ready is applied
        items, node.inbox = node.inbox, []
        for kind, item in items:
            if kind == "msg":
                driver.core.step(item)
            elif kind == "tick":
                driver.core.tick()
            elif not driver.durable(item):  # a durability report
                self.counters.stale_reports += 1
        self._drive(node.node_id)
        if node.driver is not None and any(kind == "tick" for kind, _ in items):
            self._on_tick(node)

    def _send(self, src: str, dst: str, msg: Any) -> None:
        self._check_persisted(src, dst, msg)
        self._check_ack(src, msg)
        if not self.faults:
            self.schedule(self.rng.randint(1, 3), "deliver", (src, dst, msg))
            return
        if (src, dst) in self.blocked or self.rng.random() < self.profile.loss:
            return
        copies = 2 if self.rng.random() < self.profile.duplicate else 1
        for _ in range(copies):
            self.schedule(self.rng.randint(1, self.profile.max_delay), "deliver", (src, dst, msg))

    # ---- checkers -------------------------------------------------------------------------

    def _committed_lsn(self) -> int:
        return self.committed_ends[-1] if self.committed_ends else 0

    def _committed_at(self, end: int) -> Entry | None:
        k = bisect.bisect_left(self.committed_ends, end)
        if k < len(self.committed) and self.committed_ends[k] == end:
            return self.committed[k]
        return None

    def _cuts_committed(self, store: walstore.WalStore, lsn: int) -> bool:
        """Would cutting STORE at LSN remove an entry the cluster has committed?"""
        if lsn >= self._committed_lsn():
            return False
        return any(self._committed_at(e.end_lsn) == e for e in store.read(lsn))

    def _watch_cuts(self, node_id: str) -> Callable[[], None]:
        """Before a disk operation that removes durable bytes: the check to run after it.
        No committed record this node has reported durable ever leaves its disk, even for
        a moment (a crash then would lose it there): truncation below the commit LSN.
        (Bytes of a batch whose fsync failed were never reported durable: cutting them is
        the store's cleanup, whatever the kernel may have written.)"""
        store = self.nodes[node_id].store
        flushed = store.flush_lsn if store is not None else 0
        before = {end: term for end, term in self._durable(node_id).items() if end <= flushed}

        def check() -> None:
            after = self._durable(node_id)
            for end, term in before.items():
                there = self._committed_at(end)
                if there is not None and there.term == term and after.get(end) != term:
                    self.fail(SafetyViolation, f"{node_id} cut committed history from its "
                              f"disk: the committed record ending at {end} is gone")

        return check

    def _check_acknowledged(self, node_id: str, proposal: Proposal) -> None:
        """A proposal reported committed must be in the committed history, at its LSN."""
        self.counters.acknowledged += 1
        there = self._committed_at(proposal.end)
        if there is None or there.payload != proposal.payload:
            self.fail(SafetyViolation, f"{node_id} told its proposer {proposal.payload[:12]!r} "
                      f"ending at {proposal.end} committed, but the committed history has "
                      f"{there} there")

    def _durable(self, node_id: str) -> dict[int, int]:
        """From the simulated disk itself, what survives a crash now: {end LSN: term} of the
        records a reopened store would find. Parsed incrementally: a segment whose durable
        bytes only grew is parsed from where it was left."""
        disk = self.nodes[node_id].disk
        cache = self._durable_cache.setdefault(node_id, _DurableLog())
        if cache.version == disk.version:
            return cache.ends
        files = disk.durable_files(WAL)
        names = sorted(n for n in files if parse_segment_name(n) is not None)
        rebuild = names[:-1] != cache.names[:-1] or not names or names[-1] != (
            cache.names[-1] if cache.names else None)
        for name in names[:-1]:
            rebuild |= cache.parsed.get(name, (None, -1, 0))[:2] != (
                id(files[name]), files[name].generation)
        if rebuild:
            cache.ends, cache.parsed, cache.expected, cache.stopped = {}, {}, None, False
            for name in names[:-1]:
                self._parse_segment(cache, name, files[name])
        if names and not cache.stopped:
            last = files[names[-1]]
            known = cache.parsed.get(names[-1])
            if known is not None and known[:2] != (id(last), last.generation):
                # The last segment changed other than by growing: parse everything again.
                cache.ends, cache.parsed, cache.expected, cache.stopped = {}, {}, None, False
                for name in names:
                    self._parse_segment(cache, name, files[name])
            else:
                self._parse_segment(cache, names[-1], last)
        cache.names, cache.version = names, disk.version
        return cache.ends

    @staticmethod
    def _parse_segment(cache: _DurableLog, name: str, file: Any) -> None:
        if cache.stopped:
            return
        _id, _gen, offset = cache.parsed.get(name, (id(file), file.generation, 0))
        if offset == 0 and cache.expected is not None and parse_segment_name(name) != (
                cache.expected):
            cache.stopped = True  # a gap: nothing after it is recovered
            return
        data = file.durable
        while offset < len(data):
            try:
                record, length = _record.parse(data, offset, MAX_RECORD)
            except _record.FrameError:
                break  # a torn record: the rest of the log is cut on open
            cache.ends[record.end_lsn] = record.term
            offset += length
            cache.expected = record.end_lsn
        cache.parsed[name] = (id(file), file.generation, offset)

    def _durable_control(self, node_id: str) -> walstore.Control | None:
        file = self.nodes[node_id].disk.durable_files(WAL).get(CONTROL_NAME)
        if file is None:
            return None
        cached = self._control_cache.get(node_id)
        if cached is None or cached[0] is not file:
            cached = (file, decode_control(bytes(file.durable), WAL / CONTROL_NAME))
            self._control_cache[node_id] = cached
        return cached[1]

    def _check_ack(self, node_id: str, msg: Any) -> None:
        """An acknowledgement may claim only what is on this node's disk, and matches the
        log it acknowledges (checked on the simulated disk, not the node's counters)."""
        if (isinstance(msg, consensus.AppendResponse) and msg.success) or isinstance(
                msg, consensus.HeartbeatResponse):
            lsn = msg.flush_lsn
            if lsn == 0:
                return
            store = self.nodes[node_id].store
            assert store is not None
            durable = self._durable(node_id)
            if durable.get(lsn) is None or durable[lsn] != store.term_at(lsn):
                self.fail(SafetyViolation,
                          f"{node_id} acknowledged {lsn} (term {store.term_at(lsn)}) in term "
                          f"{msg.term}, but its disk holds "
                          f"{'no record ending there' if lsn not in durable else durable[lsn]}")

    def _check_persisted(self, node_id: str, dst: str, msg: Any) -> None:
        """Term and vote reach the control file before any message that depends on them."""
        if isinstance(msg, consensus.VoteRequest | consensus.VoteResponse) and msg.pre_vote:
            return  # a pre-vote carries a term nobody has entered yet
        control = self._durable_control(node_id)
        term = control.term if control is not None else 0
        if term < msg.term:
            self.fail(SafetyViolation, f"{node_id} sent {type(msg).__name__} of term "
                      f"{msg.term} with term {term} in its durable control file")
        if isinstance(msg, consensus.VoteResponse) and msg.granted and term == msg.term and (
                control is None or control.vote != dst):
            # (A durable later term is fine: the node can never vote in this term again.)
            self.fail(SafetyViolation, f"{node_id} granted {dst} a vote in term {msg.term} "
                      "before its durable control file recorded it")

    def _observe_commit(self, node_id: str) -> None:
        node = self.nodes[node_id]
        core, store = node.core, node.store
        assert core is not None and store is not None
        commit = core.commit_lsn
        if commit < node.last_commit:
            self.fail(SafetyViolation,
                      f"{node_id}'s commit went back {node.last_commit} -> {commit}")
        if commit == node.last_commit:
            return
        # The node's log up to its commit must extend, or equal a prefix of, the committed log.
        for entry in store.read(node.last_commit):
            if entry.end_lsn > commit:
                break
            if entry.end_lsn <= self._committed_lsn():
                there = self._committed_at(entry.end_lsn)
                if there != entry:
                    self.fail(SafetyViolation, f"{node_id} committed {entry} but the cluster "
                              f"committed {there} there")
            else:
                self.committed.append(entry)
                self.committed_ends.append(entry.end_lsn)
        node.last_commit = commit

    def _observe_leader(self, node_id: str) -> None:
        core = self.nodes[node_id].core
        assert core is not None
        term = core.term
        known = self.leaders_by_term.get(term)
        if known is None:
            self.leaders_by_term[term] = node_id
            self.log(f"LEADER {node_id} term {term}")
            # Leader completeness: every committed entry is in the new leader's log.
            have = core.log.entries(0, 1 << 62) if self.committed else []
            if list(have[: len(self.committed)]) != self.committed:
                self.fail(SafetyViolation,
                          f"new leader {node_id} of term {term} lacks committed entries")
        elif known != node_id:
            self.fail(SafetyViolation, f"two leaders in term {term}: {known} and {node_id}")

    def full_check(self) -> None:
        for node_id, node in self.nodes.items():
            if node.store is None or node.removed:
                continue
            prefix = [e for e in node.store.read(0) if e.end_lsn <= node.last_commit]
            if prefix != self.committed[: len(prefix)]:
                self.fail(SafetyViolation,
                          f"{node_id}'s committed prefix differs from the cluster's")

    # ---- events -----------------------------------------------------------------------------

    def step(self) -> bool:
        if not self.queue:
            return False
        self.time, _seq, kind, payload = heapq.heappop(self.queue)
        if kind == "deliver":
            src, dst, msg = payload
            if self.nodes[dst].driver is None or (self.faults and (src, dst) in self.blocked):
                return True
            self._enqueue(self.nodes[dst], ("msg", msg))
        elif kind == "restart":
            node_id = payload
            if self.nodes[node_id].driver is None and not self.nodes[node_id].removed:
                self.log(f"RESTART {node_id}")
                self._start(node_id)
        elif kind == "full_over":
            self.nodes[payload].disk.full = False
            self.log(f"DISK {payload} has room again")
        else:  # node-local events of one incarnation: tick, flush, report
            node_id, incarnation = payload[0], payload[1]
            node = self.nodes[node_id]
            if node.driver is None or node.incarnation != incarnation:
                return True
            if kind == "tick":
                if node.held is None:  # a node holding a Ready lets time stand
                    self._enqueue(node, ("tick", None))
                self.schedule(TICK_EVERY, "tick", (node_id, incarnation))
                self._maybe_fault()
                self._maybe_propose()
            elif kind == "pass":
                self._pass(node)
            elif kind == "flush":
                self._flush(node_id)
            elif kind == "report":
                self._enqueue(node, ("report", payload[2]))
            elif kind == "retry":
                self._retry_held(node)
        return True

    def _on_tick(self, node: SimNode) -> None:
        driver = node.driver
        assert driver is not None
        # The loop writes the commit LSN to the control file now and then.
        if driver.commit_lsn != driver.persisted_commit and self.rng.random() < 0.3:
            try:
                driver.persist_commit()
            except SimCrash:
                self._crash(node.node_id, "writing the commit LSN")
                return
            except walstore.DiskFullError:
                pass  # tried again at a later tick
        # The preferred-leader hand-over (agent/process.py), with the driver's rule.
        if (self.preferred is not None and self.preferred != node.node_id
                and driver.caught_up(self.preferred) and self.rng.random() < 0.2):
            self._transfer(node.node_id, self.preferred)

    def _rebuilding(self) -> bool:
        """Whether a voter holds less than the history it should: a disk lost and not yet
        rebuilt from its peers, or a node still rebuilding (it started empty and has not yet
        learned whether the cluster is new). Losing another disk then would exceed what
        the cluster tolerates: it would stay safe, but could not elect anyone."""
        for node_id, needed in list(self.lost.items()):
            core = self.nodes[node_id].core
            if core is not None and core.flush_lsn >= needed:
                del self.lost[node_id]
        return bool(self.lost) or any(
            node.core is None or node.core.rebuilding for node in self.nodes.values()
            if not node.removed)

    def _transfer(self, leader: str, to: str) -> None:
        driver = self.nodes[leader].driver
        assert driver is not None
        if not self.nodes[leader].free:
            return
        try:
            driver.core.transfer_leadership(to)
        except (consensus.NotLeader, ValueError):
            return
        self.counters.transfers += 1
        self.log(f"TRANSFER {leader} -> {to}")
        self._drive(leader)

    def _maybe_fault(self) -> None:
        if not self.faults:
            return
        rng, profile = self.rng, self.profile
        if rng.random() < profile.crash_rate * TICK_EVERY and len(self.up) > 1:
            self._crash(rng.choice(sorted(self.up)), "at random")
        if (rng.random() < profile.lose_rate * TICK_EVERY and len(self.up) > 1
                and not self._rebuilding()):
            # One lost disk at a time: the promise holds while a majority keeps its data,
            # so a second disk is lost only once the first is rebuilt from its peers.
            victim = rng.choice(sorted(self.up))
            self._crash(victim, "and its disk is lost")
            self.nodes[victim].disk.lose()
            self.lost[victim] = self._committed_lsn()
        if rng.random() < profile.full_rate * TICK_EVERY and self.up:
            victim = rng.choice(sorted(self.up))
            self.nodes[victim].disk.full = True
            self.counters.full_periods += 1
            self.log(f"DISK FULL on {victim}")
            self.schedule(rng.randint(50, 400), "full_over", victim)
        if rng.random() < profile.partition_rate * TICK_EVERY:
            choice = rng.random()
            if choice < 0.3:
                self.blocked.clear()
                self.log("HEAL network")
            elif choice < 0.65:
                # Most often the leader: its uncommitted suffix then diverges from the
                # majority's, and a new leader truncates it wherever it reached.
                leader = self._leader()
                victim = leader if leader is not None and rng.random() < 0.6 else (
                    rng.choice(self.ids))
                self.blocked |= {(victim, o) for o in self.ids if o != victim}
                self.blocked |= {(o, victim) for o in self.ids if o != victim}
                self.log(f"PARTITION {victim} from everyone")
            elif choice < 0.75 and (leader := self._leader()) is not None:
                # The leader keeps one follower and loses the rest: in a larger group the
                # rest elect a new leader whose appends reach that follower while the old
                # leader's last records are still being flushed there.
                kept = rng.choice([o for o in self.ids if o != leader])
                cut = [o for o in self.ids if o not in (leader, kept)]
                self.blocked |= {(leader, o) for o in cut} | {(o, leader) for o in cut}
                self.log(f"PARTITION leader {leader} with only {kept}")
            elif choice < 0.85 and (leader := self._leader()) is not None:
                # The leader hears everyone but nobody hears it: the others elect a new
                # leader whose appends reach the old one while it still appends its own.
                self.blocked |= {(leader, o) for o in self.ids if o != leader}
                self.log(f"MUTE leader {leader}")
            else:
                a, b = rng.sample(self.ids, 2)
                self.blocked.add((a, b))
                self.log(f"CUT one way {a} -> {b}")
        leader = self._leader()
        if leader is not None and rng.random() < profile.transfer_rate * TICK_EVERY:
            core = self.nodes[leader].core
            assert core is not None
            others = sorted(core.membership.voters - {leader})
            if others:
                self._transfer(leader, rng.choice(others))
        if leader is not None and rng.random() < profile.member_rate * TICK_EVERY:
            self._change_membership(leader)

    def _change_membership(self, leader: str) -> None:
        """A learner joins, a learner is promoted, or a member is removed (the admin API's
        changes, one at a time)."""
        driver = self.nodes[leader].driver
        assert driver is not None
        if not self.nodes[leader].free:
            return
        current = driver.core.membership
        learners = sorted(current.learners)
        try:
            if learners and self.rng.random() < 0.6:
                change, new = f"promote {learners[0]}", current.promoted(learners[0])
            elif len(current.voters) > 3 and self.rng.random() < 0.5:
                victim = self.rng.choice(sorted(current.voters))
                change, new = f"remove {victim}", current.without(victim)
            elif len(self.ids) < 7:
                joiner = f"n{len(self.ids) + 1}"
                change, new = f"add learner {joiner}", current.with_learner(joiner, "sim")
            else:
                return
            end = driver.core.propose_membership(new)
        except (consensus.NotLeader, consensus.ConfigChangeError, consensus.MembershipError):
            return
        self.counters.membership_changes += 1
        self.log(f"MEMBERSHIP {change} (proposed by {leader}, ends at {end})")
        if change.startswith("add learner"):
            joiner = change.split()[-1]
            self.ids.append(joiner)
            # As an agent started with `join = true` (agent/process.py initial_membership).
            joining = consensus.Membership(1, current.voters, frozenset({joiner}),
                                           new.addresses)
            self.nodes[joiner] = SimNode(
                joiner, SimDisk(random.Random(self.rng.random()),
                                DiskFaults(self.profile.crash_in_io, self.profile.eio)),
                joining)
            self._start(joiner)
        self._drive(leader)

    def _maybe_propose(self) -> None:
        if not self.faults or self.rng.random() >= self.profile.propose_rate:
            return
        # Any node that believes it leads, a deposed one cut off from the rest included.
        leaders = [n for n in sorted(self.up) if (c := self.nodes[n].core) is not None
                   and c.role is consensus.Role.LEADER and self.nodes[n].free]
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        driver = self.nodes[leader].driver
        assert driver is not None
        self.counters.proposals += 1
        n = self.counters.proposals
        proposal = Proposal(b"p%d" % n + b"x" * self.rng.randrange(0, 120))
        try:
            if self.rng.random() < 0.1:  # binlog metadata between transactions: no GTID
                proposal.end = driver.propose(proposal.payload, proposal,
                                              kind=consensus.RecordKind.BINLOG_META)
            else:
                proposal.end = driver.propose(proposal.payload, proposal, gtid=f"0-1-{n}")
        except consensus.NotLeader:
            return
        self._drive(leader)

    # ---- the run ----------------------------------------------------------------------------

    def run(self, heal_budget: int = 8000) -> None:
        profile = self.profile
        while self.time < profile.fault_time:
            if not self.step():
                break
        # Heal everything and require convergence.
        self.faults = False
        self.blocked.clear()
        for node in self.nodes.values():
            node.disk.full = False
            node.disk.faults = DiskFaults()
            if node.driver is None and not node.removed:
                self._start(node.node_id)
        self.log("HEAL all")
        deadline = self.time + heal_budget
        marker = None
        events = 0
        while self.time < deadline:
            if not self.step():
                break
            events += 1
            if events % 25 == 0 and self._converged():
                if marker is None:
                    # One more proposal must commit everywhere after the heal.
                    leader = self._leader()
                    if leader is not None and self.nodes[leader].free:
                        driver = self.nodes[leader].driver
                        assert driver is not None
                        proposal = Proposal(b"after-heal")
                        try:
                            marker = proposal.end = driver.propose(
                                proposal.payload, proposal, gtid="9-9-9")
                        except consensus.NotLeader:  # a transfer under way: try again
                            continue
                        self._drive(leader)
                elif self._committed_lsn() >= marker:
                    self.full_check()
                    return
                else:
                    # Converged without it: a leadership change cut the marker (its proposer
                    # heard "unknown"). Propose it again.
                    marker = None
        if self._history_holders_below_majority():
            raise BeyondTolerance(f"seed {self.seed}: " + self._describe())
        self.fail(LivenessFailure,
                  f"no convergence {heal_budget} time units after healing: " + self._describe())

    def _history_holders_below_majority(self) -> bool:
        cores = [n.core for n in self.nodes.values() if n.core is not None and not n.removed]
        if not cores:
            return False
        config = max((c.membership for c in cores), key=lambda m: m.generation)
        holders = [v for v in config.voters if v in self.nodes
                   and (c := self.nodes[v].core) is not None and not c.rebuilding]
        return len(holders) < len(config.voters) // 2 + 1

    def _leader(self) -> str | None:
        leaders = [n for n in self.ids if (c := self.nodes[n].core) is not None
                   and c.role is consensus.Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def _converged(self) -> bool:
        leader = self._leader()
        if leader is None:
            return False
        core = self.nodes[leader].core
        assert core is not None
        target = core.log.last_lsn()
        for node_id in core.membership.members:
            other = self.nodes[node_id].core if node_id in self.nodes else None
            if other is None or other.commit_lsn != target or other.flush_lsn != target:
                return False
        return True

    def _describe(self) -> str:
        parts = []
        for node_id in self.ids:
            core = self.nodes[node_id].core
            if core is None:
                parts.append(f"{node_id}: down")
            else:
                parts.append(
                    f"{node_id}: {core.role} term {core.term} commit {core.commit_lsn} "
                    f"flush {core.flush_lsn} last {core.log.last_lsn()}"
                )
        return "; ".join(parts)


def run_seed(seed: int, **kwargs: Any) -> Simulation:
    """Run one seed; a run beyond the tolerated faults (BeyondTolerance) passes: safety was
    checked at every event."""
    sim = Simulation(seed, **kwargs)
    try:
        sim.run()
    except BeyondTolerance:
        sim.counters.beyond_tolerance += 1
    return sim
