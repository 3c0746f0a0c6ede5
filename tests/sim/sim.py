"""Deterministic simulation of the consensus core: one seed, one bad day, replayed exactly.

A seeded PRNG drives the real `consensus.Node` for 3 or 5 nodes over a simulated network
(loss, delay and so reordering, duplication, symmetric and asymmetric partitions) and
simulated disks (an fsync completes after a delay; a crash keeps the synced log plus any
prefix of the unsynced tail, like a torn write; hard state is durable once persisted).
Safety is checked after every event; after the fault phase everything heals and the
cluster must converge (liveness).
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import consensus
from consensus import Entry, HardState, Membership, Node

TICK_EVERY = 10  # simulated time units per core tick


class SafetyViolation(AssertionError):
    pass


class LivenessFailure(AssertionError):
    pass


class MemStorage:
    """An in-memory log with a durable prefix: what a crash keeps."""

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self.ends: list[int] = []
        self.synced = 0  # entries durable

    def last_lsn(self) -> int:
        return self.ends[-1] if self.ends else 0

    def last_term(self) -> int:
        return self.log[-1].term if self.log else 0

    def term_at(self, lsn: int) -> int | None:
        if lsn == 0:
            return 0
        index = bisect.bisect_left(self.ends, lsn)
        if index < len(self.ends) and self.ends[index] == lsn:
            return self.log[index].term
        return None

    def entries(self, from_lsn: int, max_bytes: int) -> list[Entry]:
        index = 0 if from_lsn == 0 else bisect.bisect_left(self.ends, from_lsn) + 1
        out: list[Entry] = []
        total = 0
        for entry in self.log[index:]:
            if out and total + len(entry.payload) > max_bytes:
                break
            out.append(entry)
            total += len(entry.payload)
        return out

    def term_history(self) -> Sequence[tuple[int, int]]:
        history: list[tuple[int, int]] = []
        for entry in self.log:
            if not history or history[-1][0] != entry.term:
                history.append((entry.term, entry.lsn))
        return history

    def append(self, entry: Entry) -> None:
        assert entry.lsn == self.last_lsn(), "entry does not continue the log"
        self.log.append(entry)
        self.ends.append(entry.end_lsn)

    def truncate(self, lsn: int) -> None:
        index = 0 if lsn == 0 else bisect.bisect_left(self.ends, lsn) + 1
        assert lsn == 0 or self.ends[index - 1] == lsn, "truncation off a boundary"
        del self.log[index:]
        del self.ends[index:]
        self.synced = min(self.synced, index)

    @property
    def synced_lsn(self) -> int:
        return self.ends[self.synced - 1] if self.synced else 0


@dataclass
class SimNode:
    node_id: str
    storage: MemStorage = field(default_factory=MemStorage)
    hard: HardState = field(default_factory=HardState)
    membership: Membership | None = None
    core: Node | None = None
    pending_fsyncs: list[int] = field(default_factory=list)  # target LSNs in flight
    last_commit: int = 0
    # What this node proposed as leader, until it may tell its proposer "committed"
    # (agent/timeline.py keeps its waiters the same way): (end LSN, payload).
    proposals: consensus.PendingProposals[tuple[int, bytes]] = field(
        default_factory=consensus.PendingProposals)


@dataclass
class Profile:
    """One seed's bad day."""

    loss: float
    duplicate: float
    max_delay: int
    crash_rate: float
    partition_rate: float
    fsync_max: int
    propose_rate: float
    fault_time: int

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        return cls(
            loss=rng.choice([0.0, 0.01, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            max_delay=rng.choice([3, 10, 40]),
            crash_rate=rng.choice([0.0, 0.0005, 0.002]),
            partition_rate=rng.choice([0.0, 0.001, 0.004]),
            fsync_max=rng.choice([2, 8, 30]),
            propose_rate=rng.choice([0.02, 0.1, 0.3]),
            fault_time=rng.choice([1500, 3000]),
        )


class Simulation:
    def __init__(
        self,
        seed: int,
        *,
        nodes: int | None = None,
        verbose: bool = False,
        config_hook: Callable[[consensus.Config], None] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        size = nodes or self.rng.choice([3, 3, 5])
        self.ids = [f"n{i + 1}" for i in range(size)]
        self.profile = Profile.draw(self.rng)
        self.verbose = verbose
        self.config_hook = config_hook
        self.time = 0
        self.queue: list[tuple[int, int, str, Any]] = []  # (time, seq, kind, payload)
        self.seq = 0
        self.nodes = {i: SimNode(i) for i in self.ids}
        self.up: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()  # directed links that drop everything
        self.leaders_by_term: dict[int, str] = {}
        self.committed: list[Entry] = []  # the cluster's committed log as observed so far
        self.proposals = 0
        self.acknowledged = 0  # proposals a leader reported committed (each checked)
        self.faults = True
        self.trace: list[str] = []
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

    def _start(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        config = consensus.Config(
            node_id=node_id,
            election_ticks=10,
            heartbeat_ticks=2,
            max_batch_bytes=300,
            max_inflight_bytes=2000,
        )
        if self.config_hook:
            self.config_hook(config)
        membership = sim_node.membership or Membership(1, frozenset(self.ids))
        sim_node.core = Node(
            config,
            sim_node.storage,
            sim_node.hard,
            membership,
            random.Random(self.rng.random()),
            sim_node.storage.synced_lsn,
        )
        sim_node.pending_fsyncs = []
        sim_node.last_commit = sim_node.core.commit_lsn
        self.up.add(node_id)
        self.schedule(self.rng.randrange(1, TICK_EVERY + 1), "tick", node_id)

    def _crash(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        storage = sim_node.storage
        # An unsynced tail may have partly reached the disk: keep a random prefix of it.
        keep = self.rng.randint(storage.synced, len(storage.log))
        del storage.log[keep:]
        del storage.ends[keep:]
        storage.synced = keep
        sim_node.core = None
        sim_node.proposals.dropped()  # the proposers never hear back
        self.up.discard(node_id)
        self.log(f"CRASH {node_id} (kept {keep} entries)")
        self.schedule(self.rng.randrange(50, 600), "restart", node_id)

    # ---- the node driver (what agent/timeline.py does with real I/O) -------------------------

    def _drive(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        core = sim_node.core
        assert core is not None
        while core.has_ready():
            ready = core.ready()
            storage = sim_node.storage
            if ready.hard_state is not None:
                # Persisted before any message goes out; commit never beyond the synced log.
                hs = ready.hard_state
                sim_node.hard = HardState(
                    hs.term,
                    hs.vote,
                    max(
                        sim_node.hard.commit_lsn if hs.term == sim_node.hard.term else 0,
                        min(hs.commit_lsn, storage.synced_lsn),
                    ),
                )
            if ready.membership is not None:
                sim_node.membership = ready.membership
            if ready.truncate_to is not None:
                if ready.truncate_to < self._committed_lsn() and self._committed_prefix_cut(
                    storage, ready.truncate_to
                ):
                    self.fail(
                        SafetyViolation,
                        f"{node_id} truncates committed history at {ready.truncate_to}",
                    )
                storage.truncate(ready.truncate_to)
                sim_node.proposals.truncated(ready.truncate_to)
                sim_node.pending_fsyncs = [
                    min(t, ready.truncate_to) for t in sim_node.pending_fsyncs
                ]
            for entry in ready.entries:
                storage.append(entry)
            if ready.entries:
                target = storage.last_lsn()
                sim_node.pending_fsyncs.append(target)
                self.schedule(
                    self.rng.randint(1, self.profile.fsync_max), "fsync", (node_id, target)
                )
            for dst, msg in ready.messages:
                self._check_ack(node_id, msg)
                self._send(node_id, dst, msg)
            if ready.commit_lsn is not None:
                self._observe_commit(node_id)
                for end, payload in sim_node.proposals.committed(core.commit_lsn):
                    self._check_acknowledged(node_id, end, payload)
            if core.role is consensus.Role.LEADER:
                self._observe_leader(node_id)
            else:
                sim_node.proposals.dropped()  # outcome unknown to the proposer

    def _send(self, src: str, dst: str, msg: Any) -> None:
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
        return self.committed[-1].end_lsn if self.committed else 0

    def _committed_prefix_cut(self, storage: MemStorage, lsn: int) -> bool:
        """Would cutting STORAGE at LSN remove an entry the cluster has committed?"""
        committed_ends = [e.end_lsn for e in self.committed]
        for entry in storage.log[bisect.bisect_right(storage.ends, lsn) :]:
            k = bisect.bisect_left(committed_ends, entry.end_lsn)
            if k < len(self.committed) and self.committed[k] == entry:
                return True
        return False

    def _check_acknowledged(self, node_id: str, end: int, payload: bytes) -> None:
        """A proposal reported committed must be in the committed history, at its LSN."""
        self.acknowledged += 1
        k = bisect.bisect_left([e.end_lsn for e in self.committed], end)
        if k >= len(self.committed) or self.committed[k].end_lsn != end or (
                self.committed[k].payload != payload):
            self.fail(SafetyViolation, f"{node_id} told its proposer {payload[:12]!r} ending "
                      f"at {end} committed, but the committed history has "
                      f"{self.committed[k] if k < len(self.committed) else None} there")

    def _check_ack(self, node_id: str, msg: Any) -> None:
        if isinstance(msg, consensus.AppendResponse | consensus.HeartbeatResponse):
            durable = self.nodes[node_id].storage.synced_lsn
            if msg.flush_lsn > durable:
                self.fail(
                    SafetyViolation,
                    f"{node_id} acked flush {msg.flush_lsn} beyond its durable log {durable}",
                )

    def _observe_commit(self, node_id: str) -> None:
        sim_node = self.nodes[node_id]
        core = sim_node.core
        assert core is not None
        commit = core.commit_lsn
        if commit < sim_node.last_commit:
            self.fail(
                SafetyViolation, f"{node_id}'s commit went back {sim_node.last_commit} -> {commit}"
            )
        # The node's log up to its commit must extend, or equal a prefix of, the committed log.
        log = sim_node.storage.log
        start = bisect.bisect_right([e.end_lsn for e in log], sim_node.last_commit)
        index = start
        lsn = sim_node.last_commit
        while index < len(log) and log[index].end_lsn <= commit:
            entry = log[index]
            position = len(self.committed) if lsn >= self._committed_lsn() else None
            if position is None:
                # compare with the already committed entry at this position
                k = bisect.bisect_left([e.end_lsn for e in self.committed], entry.end_lsn)
                if k >= len(self.committed) or self.committed[k] != entry:
                    self.fail(
                        SafetyViolation,
                        f"{node_id} committed {entry} but the cluster committed "
                        f"{self.committed[k] if k < len(self.committed) else None} there",
                    )
            else:
                self.committed.append(entry)
            lsn = entry.end_lsn
            index += 1
        sim_node.last_commit = commit

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
            if have[: len(self.committed)] != self.committed:
                self.fail(
                    SafetyViolation, f"new leader {node_id} of term {term} lacks committed entries"
                )
        elif known != node_id:
            self.fail(SafetyViolation, f"two leaders in term {term}: {known} and {node_id}")

    def full_check(self) -> None:
        for node_id, sim_node in self.nodes.items():
            log = sim_node.storage.log
            commit = sim_node.last_commit if sim_node.core is not None else 0
            prefix = [e for e in log if e.end_lsn <= commit]
            if prefix != self.committed[: len(prefix)]:
                self.fail(
                    SafetyViolation, f"{node_id}'s committed prefix differs from the cluster's"
                )

    # ---- events -----------------------------------------------------------------------------

    def step(self) -> bool:
        if not self.queue:
            return False
        self.time, _seq, kind, payload = heapq.heappop(self.queue)
        if kind == "tick":
            node_id = payload
            sim_node = self.nodes[node_id]
            if sim_node.core is None:
                return True
            sim_node.core.tick()
            self._drive(node_id)
            self.schedule(TICK_EVERY, "tick", node_id)
            self._maybe_fault()
            self._maybe_propose()
        elif kind == "deliver":
            src, dst, msg = payload
            core = self.nodes[dst].core
            if core is None or (self.faults and (src, dst) in self.blocked):
                return True
            core.step(msg)
            self._drive(dst)
        elif kind == "fsync":
            node_id, target = payload
            sim_node = self.nodes[node_id]
            if sim_node.core is None or target not in sim_node.pending_fsyncs:
                return True
            sim_node.pending_fsyncs.remove(target)
            storage = sim_node.storage
            index = bisect.bisect_right(storage.ends, target)
            storage.synced = max(storage.synced, index)
            sim_node.core.flushed(storage.synced_lsn, storage.term_at(storage.synced_lsn) or 0)
            self._drive(node_id)
        elif kind == "restart":
            node_id = payload
            if self.nodes[node_id].core is None:
                self.log(f"RESTART {node_id}")
                self._start(node_id)
        return True

    def _maybe_fault(self) -> None:
        if not self.faults:
            return
        rng, profile = self.rng, self.profile
        if rng.random() < profile.crash_rate * TICK_EVERY and len(self.up) > 1:
            self._crash(rng.choice(sorted(self.up)))
        if rng.random() < profile.partition_rate * TICK_EVERY:
            choice = rng.random()
            if choice < 0.3:
                self.blocked.clear()
                self.log("HEAL network")
            elif choice < 0.65:
                victim = rng.choice(self.ids)
                self.blocked |= {(victim, o) for o in self.ids if o != victim}
                self.blocked |= {(o, victim) for o in self.ids if o != victim}
                self.log(f"PARTITION {victim} from everyone")
            else:
                a, b = rng.sample(self.ids, 2)
                self.blocked.add((a, b))
                self.log(f"CUT one way {a} -> {b}")

    def _maybe_propose(self) -> None:
        if not self.faults or self.rng.random() >= self.profile.propose_rate:
            return
        leaders = [
            n
            for n in sorted(self.up)
            if (c := self.nodes[n].core) is not None and c.role is consensus.Role.LEADER
        ]
        if not leaders:
            return
        node_id = self.rng.choice(leaders)
        core = self.nodes[node_id].core
        assert core is not None
        self.proposals += 1
        try:
            payload = b"p%d" % self.proposals + b"x" * self.rng.randrange(0, 120)
            if self.rng.random() < 0.1:  # binlog metadata between transactions: no GTID
                end = core.propose(payload, kind=consensus.RecordKind.BINLOG_META)
            else:
                end = core.propose(payload, gtid=f"0-1-{self.proposals}")
        except consensus.NotLeader:
            return
        self.nodes[node_id].proposals.add(end, (end, payload))
        self._drive(node_id)

    # ---- the run ----------------------------------------------------------------------------

    def run(self, heal_budget: int = 6000) -> None:
        profile = self.profile
        while self.time < profile.fault_time:
            if not self.step():
                break
        # Heal everything and require convergence.
        self.faults = False
        self.blocked.clear()
        for node_id in self.ids:
            if self.nodes[node_id].core is None:
                self._start(node_id)
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
                    if leader is not None:
                        core = self.nodes[leader].core
                        assert core is not None
                        marker = core.propose(b"after-heal", gtid="9-9-9")
                        self._drive(leader)
                elif self._converged() and self._committed_lsn() >= marker:
                    self.full_check()
                    return
        self.fail(
            LivenessFailure,
            f"no convergence {heal_budget} time units after healing: " + self._describe(),
        )

    def _leader(self) -> str | None:
        leaders = [
            n
            for n in self.ids
            if (c := self.nodes[n].core) is not None and c.role is consensus.Role.LEADER
        ]
        return leaders[0] if len(leaders) == 1 else None

    def _converged(self) -> bool:
        leader = self._leader()
        if leader is None:
            return False
        core = self.nodes[leader].core
        assert core is not None
        target = core.log.last_lsn()
        members = core.membership.members
        for node_id in members:
            other = self.nodes[node_id].core
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
    sim = Simulation(seed, **kwargs)
    sim.run()
    return sim
