"""The replication protocol as a sans-I/O state machine (Raft over LSN positions).

Inputs: `tick()`, `step(msg)`, `propose(...)`, `flushed(lsn)`, admin calls. Output: a
`Ready` — hard state to persist durably before sending, a truncation and entries to apply to
the log, messages to send, the new commit LSN. No clock, no I/O, randomness injected.

Invariants (checked by the simulator in tests/sim):
  commit_lsn only grows, and is a boundary of a log that matches the leader's;
  a follower acknowledges only what is durable AND known to match the current leader;
  nothing at or below commit_lsn is ever truncated.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus import quorum
from consensus.log import LogStorage, RaftLog
from consensus.membership import Membership
from consensus.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RecordKind,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    sender,
)

# How far back a rejecting follower's term history reaches; older divergence falls back to
# its commit LSN, which always matches the leader.
MAX_HINT_TERMS = 64


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

    def __str__(self) -> str:
        return self.value


class NotLeader(Exception):
    def __init__(self, leader_hint: str | None, reason: str = "not the leader") -> None:
        super().__init__(f"{reason} (leader: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ConfigChangeError(Exception):
    """A membership change that is not allowed now, or not a single-member change."""


@dataclass(frozen=True)
class HardState:
    term: int = 0
    vote: str | None = None
    commit_lsn: int = 0
    # Persisted too: a node that started on an empty disk stays rebuilding across restarts
    # (it may have adopted a term meanwhile, which would otherwise hide its empty start).
    rebuilding: bool = False


@dataclass
class Config:
    node_id: str
    election_ticks: int = 10  # the timeout is randomized in [election_ticks, 2 * election_ticks)
    heartbeat_ticks: int = 2
    max_batch_bytes: int = 1 << 20
    max_inflight_bytes: int = 8 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    # Replaceable so a test can break it and prove the simulator notices.
    quorum_rule: Callable[..., int] = quorum.committed_lsn


@dataclass
class Ready:
    hard_state: HardState | None = None
    truncate_to: int | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[tuple[str, Message]] = field(default_factory=list)
    commit_lsn: int | None = None
    membership: Membership | None = None


class ProgressState(enum.Enum):
    PROBE = "probe"  # one append at a time until the match point is found
    REPLICATE = "replicate"  # streaming, bounded by in-flight bytes


@dataclass
class Progress:
    match_lsn: int = 0  # durable on the follower and matching our log
    next_lsn: int = 0  # where the next append starts
    state: ProgressState = ProgressState.PROBE
    paused: bool = False  # a probe is outstanding
    inflight: deque[tuple[int, int]] = field(default_factory=deque)  # (end LSN, bytes)
    inflight_bytes: int = 0
    recent_active: bool = False
    sent_commit: int = 0  # the commit LSN this follower was last told
    stalled_heartbeats: int = 0  # heartbeat replies without progress while appends are in flight
    rebuilding: bool = False  # the follower says it does not hold the history yet

    def free_to(self, lsn: int) -> None:
        while self.inflight and self.inflight[0][0] <= lsn:
            self.inflight_bytes -= self.inflight.popleft()[1]

    def reset_inflight(self) -> None:
        self.inflight.clear()
        self.inflight_bytes = 0

    def probe_from(self, lsn: int) -> None:
        """Back to one append at a time, starting at LSN, forgetting what was in flight."""
        self.state = ProgressState.PROBE
        self.paused = False
        self.reset_inflight()
        self.next_lsn = lsn


@dataclass(frozen=True)
class Status:
    node_id: str
    role: Role
    term: int
    leader: str | None
    commit_lsn: int
    flush_lsn: int
    last_lsn: int
    voters: frozenset[str]
    learners: frozenset[str]
    progress: dict[str, Progress]


class Node:
    def __init__(
        self,
        config: Config,
        storage: LogStorage,
        hard_state: HardState,
        membership: Membership,
        rng: random.Random,
        flush_lsn: int,
    ) -> None:
        self.config = config
        self.id = config.node_id
        self.log = RaftLog(storage)
        self.rng = rng
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.commit_lsn = min(hard_state.commit_lsn, flush_lsn)
        self.flush_lsn = flush_lsn
        self.membership = membership
        # (end LSN, membership) of CONFIG entries not yet committed, to roll back on truncation.
        self._config_log: list[tuple[int, Membership]] = []
        # After a restart, the changes not known to be committed are in the log's tail:
        # what each replaced is what a truncation rolls back to (and what decides whether
        # this node may still stand for election).
        if self.log.last_lsn() > self.commit_lsn:
            for entry in self.log.entries(self.commit_lsn, 1 << 62):
                if entry.kind is RecordKind.CONFIG:
                    previous = Membership.previous_of(entry.payload)
                    if previous is not None:
                        self._config_log.append((entry.end_lsn, previous))
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.leader_match_lsn = 0  # end of our log known to match the current leader's
        # The current leader's log end in its first message to us (it held everything
        # committed then), and whether our commit LSN has reached it since: knows_commit.
        # Both reset when the leader changes, and so after a restart.
        self._leader_first_end: int | None = None
        self._caught_up_with_leader = False
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.term_start_lsn = 0  # end LSN of this leader's TERM_START entry
        self.transferee: str | None = None
        self.transfer_elapsed = 0
        self._messages: list[tuple[str, Message]] = []
        self._persisted = HardState(self.term, self.vote, self.commit_lsn,
                                    hard_state.rebuilding)
        self._reported_commit = self.commit_lsn
        self._membership_changed = False
        self._broadcast_pending = False
        # A node with no term, no vote and no log may be new — or may have lost its disk, and
        # with it the votes it cast and the records it acknowledged. Until it knows which,
        # it is *rebuilding*: it grants no vote and cannot win one (it still asks, with
        # pre-votes, so its peers learn it is empty). It learns the cluster is new when
        # every other voter has asked it for a vote with an empty log (all founding members
        # start empty); it learns the cluster has history when a leader reaches it, and stays
        # rebuilding until its durable log holds what that leader held then. (Found by
        # the simulator: a node that lost its disk and a lagging one, both empty, elected
        # each other and replaced committed history.)
        self.rebuilding = hard_state.rebuilding or (
            hard_state.term == 0 and hard_state.vote is None and self.log.last_lsn() == 0)
        self._rebuild_target: int | None = None  # a leader's log end, once one reached us
        self._rebuild_term = 0  # the term of that leader
        self._seen_empty: set[str] = set()  # voters that asked us for votes with empty logs
        self._note_rebuilt()  # a single voter needs nobody's word
        self._reset_election_timer()

    # ---- public inputs ------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout and self._promotable():
                self.campaign()

    def campaign(self, *, transfer: bool = False) -> None:
        if not self._promotable():
            return
        if self.rebuilding:
            # Only to be seen: a pre-vote tells the others this log is empty; it never wins.
            self._reset_election_timer()
            self._send_pre_votes()
            return
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer=transfer)

    def propose(
        self,
        payload: bytes,
        *,
        gtid: str | None = None,
        continued: bool = False,
        kind: RecordKind = RecordKind.DATA,
    ) -> int:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.transferee is not None:
            raise NotLeader(self.transferee, "leadership is being transferred")
        if not payload:
            raise ValueError("an entry payload must not be empty")
        entry = Entry(self.log.last_lsn(), self.term, kind, payload, gtid, continued)
        self._append_local(entry)
        # Sent at the next ready(): proposals made in between share one append per follower.
        self._broadcast_pending = True
        return entry.end_lsn

    def propose_membership(self, membership: Membership) -> int:
        """One change at a time: add a learner, promote a learner, or remove a member."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.commit_lsn < self.term_start_lsn:
            raise ConfigChangeError("the leader has not committed an entry of its term yet")
        if self._config_log and self._config_log[-1][0] > self.commit_lsn:
            raise ConfigChangeError("the previous membership change is not committed yet")
        old = self.membership
        if _change_size(old, membership) != 1:
            raise ConfigChangeError("exactly one member may change at a time")
        if not membership.voters:
            raise ConfigChangeError("a membership needs at least one voter")
        for member in membership.voters - old.voters:
            progress = self.progress.get(member)
            # Caught up: streaming, and no further behind than one in-flight window.
            if member != self.id and (
                progress is None
                or progress.state is not ProgressState.REPLICATE
                or progress.rebuilding
                or self.log.last_lsn() - progress.match_lsn > self.config.max_inflight_bytes
            ):
                # (A learner still rebuilding would vote for nobody once promoted.)
                raise ConfigChangeError(f"{member} has not caught up yet; promote it later")
        new = Membership(
            old.generation + 1, membership.voters, membership.learners, membership.addresses
        )
        return self.propose(new.encode(previous=old), kind=RecordKind.CONFIG)

    def transfer_leadership(self, to: str) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if to == self.id or to not in self.membership.voters:
            raise ValueError(f"cannot transfer leadership to {to!r}")
        self.transferee = to
        self.transfer_elapsed = 0
        self._maybe_send_timeout_now()

    def flushed(self, lsn: int, term: int) -> None:
        """The caller's log is durable up to LSN, where its entry ending at LSN has TERM.

        A report names what it covers (etcd-raft's stableTo): one about a log that has since
        been replaced — the entry ending at LSN is not of TERM in the log as it is now — is
        ignored, and nothing beyond a truncation the caller has not applied yet counts (the
        caller will cut it). The caller must also drop reports from before a truncation it
        applied (walstore's epoch)."""
        if self.log.term_at(lsn) != term:
            return  # stale: about entries a newer leader's log has replaced
        if self.log.truncated_to is not None:
            lsn = min(lsn, self.log.truncated_to)
        lsn = min(lsn, self.log.last_lsn())
        if lsn <= self.flush_lsn:
            return
        self.flush_lsn = lsn
        self._note_rebuilt()
        if self.role is Role.LEADER:
            self._maybe_commit()
        elif self.leader is not None:
            self._send(
                self.leader,
                AppendResponse(
                    self.term,
                    self.id,
                    True,
                    flush_lsn=self._ackable(),
                    last_lsn=self.leader_match_lsn,
                    rebuilding=self.rebuilding,
                ),
            )

    def step(self, msg: Message) -> None:
        if msg.term > self.term:
            if isinstance(msg, VoteRequest) and msg.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(msg, VoteResponse) and msg.pre_vote:
                if msg.granted:  # granted pre-votes carry the term we would campaign for
                    pass
                else:
                    self._become_follower(msg.term, None)
            else:
                leader = (
                    sender(msg) if isinstance(msg, AppendRequest | Heartbeat | TimeoutNow) else None
                )
                if (
                    isinstance(msg, VoteRequest)
                    and self._leader_is_live()
                    and not msg.leadership_transfer
                ):
                    # Leader stickiness: a live leader is not deposed by a disrupting node.
                    self._send(msg.candidate_id, VoteResponse(self.term, self.id, False))
                    return
                self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            if isinstance(msg, AppendRequest | Heartbeat):
                # Tell the stale leader about the newer term so it steps down.
                self._send(
                    sender(msg), AppendResponse(self.term, self.id, False, hint_lsn=self.commit_lsn)
                )
            elif isinstance(msg, VoteRequest) and msg.pre_vote:
                self._send(msg.candidate_id, VoteResponse(self.term, self.id, False, pre_vote=True))
            return

        if isinstance(msg, VoteRequest):
            self._on_vote_request(msg)
        elif isinstance(msg, VoteResponse):
            self._on_vote_response(msg)
        elif isinstance(msg, AppendRequest):
            self._on_append(msg)
        elif isinstance(msg, AppendResponse):
            self._on_append_response(msg)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(msg)
        elif isinstance(msg, HeartbeatResponse):
            self._on_heartbeat_response(msg)
        elif isinstance(msg, TimeoutNow):
            if msg.leader_id == self.leader and self.role is Role.FOLLOWER:
                self.campaign(transfer=True)

    # ---- output -------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._broadcast_pending
            or self._messages
            or self.log.unstable
            or self.log.truncated_to is not None
            or self._hard_state() != self._persisted
            or self.commit_lsn != self._reported_commit
            or self._membership_changed
        )

    def ready(self) -> Ready:
        if self._broadcast_pending:
            self._broadcast_pending = False
            if self.role is Role.LEADER:
                self._broadcast_append()
        ready = Ready()
        hard = self._hard_state()
        if hard != self._persisted:
            ready.hard_state = hard
            self._persisted = hard
        ready.truncate_to, ready.entries = self.log.take()
        if ready.truncate_to is not None:
            self.flush_lsn = min(self.flush_lsn, ready.truncate_to)
        ready.messages, self._messages = self._messages, []
        if ready.truncate_to is not None:
            ready.messages = self._without_stale_acks(ready.messages)
        if self.commit_lsn != self._reported_commit:
            ready.commit_lsn = self._reported_commit = self.commit_lsn
        if self._membership_changed:
            ready.membership = self.membership
            self._membership_changed = False
        return ready

    def _without_stale_acks(
        self, messages: list[tuple[str, Message]]
    ) -> list[tuple[str, Message]]:
        """An acknowledgement queued before a truncation in the same step batch claims
        records the caller is about to cut: it must not leave (found by the simulator: a
        follower answered its old leader's heartbeat, then a new leader's append replaced
        that suffix, and the answer went out after the cut)."""
        return [(dst, m) for dst, m in messages if not (
            isinstance(m, AppendResponse | HeartbeatResponse)
            and (not isinstance(m, AppendResponse) or m.success)
            and m.flush_lsn > self.flush_lsn)]

    def status(self) -> Status:
        return Status(
            self.id,
            self.role,
            self.term,
            self.leader,
            self.commit_lsn,
            self.flush_lsn,
            self.log.last_lsn(),
            self.membership.voters,
            self.membership.learners,
            dict(self.progress),
        )

    # ---- roles --------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit_lsn, self.rebuilding)

    def _promotable(self) -> bool:
        # A voter whose own removal is not committed yet still stands for election (Raft
        # dissertation 4.2.2): its log may be the one the others need (found by the
        # simulator: a leader removed itself, lost its majority before the removal
        # committed, and its log was the longest — nobody else could win).
        return self.id in self.membership.voters or any(
            self.id in previous.voters for _end, previous in self._config_log)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        base = self.config.election_ticks
        self.randomized_timeout = base + self.rng.randrange(base)

    def _leader_is_live(self) -> bool:
        if self.role is Role.LEADER:
            return True
        return self.leader is not None and self.election_elapsed < self.config.election_ticks

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
            self.leader_match_lsn = 0
        if leader != self.leader:
            self.leader_match_lsn = 0
            self._leader_first_end, self._caught_up_with_leader = None, False
        self.role = Role.FOLLOWER
        self.leader = leader
        self.progress = {}
        self.votes = {}
        self.transferee = None
        self._reset_election_timer()

    def _become_pre_candidate(self) -> None:
        self.role = Role.PRE_CANDIDATE
        self.leader = None
        self.votes = {self.id: True}
        self._reset_election_timer()
        self._request_votes(pre_vote=True, transfer=False)

    def _become_candidate(self, *, transfer: bool) -> None:
        self.role = Role.CANDIDATE
        self.term += 1
        self.vote = self.id
        self.leader = None
        self.leader_match_lsn = 0
        self.votes = {self.id: True}
        self._reset_election_timer()
        self._request_votes(pre_vote=False, transfer=transfer)

    def _send_pre_votes(self) -> None:
        request = VoteRequest(self.term + 1, self.id, self.log.last_term(), self.log.last_lsn(),
                              True, False)
        for voter in sorted(self.membership.voters - {self.id}):
            self._send(voter, request)

    def _note_rebuilt(self) -> None:
        """Leave the rebuilding state once it is known to be safe."""
        if not self.rebuilding:
            return
        if self._rebuild_target is not None:
            if self.flush_lsn >= self._rebuild_target:
                self.rebuilding = False  # holds what was committed when a leader reached us
        elif self._seen_empty >= self.membership.voters - {self.id}:
            self.rebuilding = False  # every voter is empty: a brand-new cluster

    def _request_votes(self, *, pre_vote: bool, transfer: bool) -> None:
        if quorum.vote_won([self.id], self.membership.voters):
            if pre_vote:
                self._become_candidate(transfer=transfer)
            else:
                self._become_leader()
            return
        term = self.term + 1 if pre_vote else self.term
        request = VoteRequest(
            term, self.id, self.log.last_term(), self.log.last_lsn(), pre_vote, transfer
        )
        for voter in sorted(self.membership.voters - {self.id}):
            self._send(voter, request)

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.votes = {}
        self.transferee = None
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        last = self.log.last_lsn()
        self.progress = {
            member: Progress(next_lsn=last)
            for member in sorted(self.membership.members)
            if member != self.id
        }
        # The first entry of the term: committing it commits everything before it.
        entry = Entry(last, self.term, RecordKind.TERM_START, b"term %d" % self.term)
        self._append_local(entry)
        self.term_start_lsn = entry.end_lsn
        self._broadcast_append()

    # ---- elections ----------------------------------------------------------------------

    def _log_up_to_date(self, last_term: int, last_lsn: int) -> bool:
        # Compare (last log term, last LSN), never the current term (neon#12778).
        return (last_term, last_lsn) >= (self.log.last_term(), self.log.last_lsn())

    def _on_vote_request(self, msg: VoteRequest) -> None:
        if self.rebuilding:
            # Evidence that a peer is new: a pre-vote for term 1 (its own term is still 0:
            # it has never voted or heard of an election) with an empty log. An empty log
            # alone is not enough: a peer may have voted in a term whose leader never
            # reached it (found by the simulator: two leaders in one term after a disk loss).
            if msg.pre_vote and msg.term == 1 and msg.last_lsn == 0 and msg.last_log_term == 0:
                self._seen_empty.add(msg.candidate_id)
            self._note_rebuilt()
        if self.rebuilding:
            self._send(msg.candidate_id,
                       VoteResponse(self.term, self.id, False, pre_vote=msg.pre_vote))
            return
        if msg.pre_vote:
            granted = (
                msg.term > self.term
                and (msg.leadership_transfer or not self._leader_is_live())
                and self._log_up_to_date(msg.last_log_term, msg.last_lsn)
            )
            self._send(
                msg.candidate_id,
                VoteResponse(msg.term if granted else self.term, self.id, granted, pre_vote=True),
            )
            return
        granted = (
            msg.term == self.term
            and self.vote in (None, msg.candidate_id)
            and self._log_up_to_date(msg.last_log_term, msg.last_lsn)
            and msg.candidate_id in self.membership.voters
        )
        if granted:
            self.vote = msg.candidate_id
            self._reset_election_timer()
        self._send(msg.candidate_id, VoteResponse(self.term, self.id, granted))

    def _on_vote_response(self, msg: VoteResponse) -> None:
        if self.rebuilding:
            return  # its own pre-votes were only to be seen
        expected = Role.PRE_CANDIDATE if msg.pre_vote else Role.CANDIDATE
        if self.role is not expected:
            return
        if msg.pre_vote and msg.granted and msg.term != self.term + 1:
            return
        self.votes[msg.voter_id] = msg.granted
        granted = [v for v, ok in self.votes.items() if ok]
        denied = [v for v, ok in self.votes.items() if not ok]
        if quorum.vote_won(granted, self.membership.voters):
            if msg.pre_vote:
                self._become_candidate(transfer=False)
            else:
                self._become_leader()
        elif quorum.vote_won(denied, self.membership.voters):
            self._become_follower(self.term, None)

    # ---- replication: follower side -----------------------------------------------------

    def _ackable(self) -> int:
        return min(self.flush_lsn, self.leader_match_lsn)

    def _on_append(self, msg: AppendRequest) -> None:
        self._become_follower_of(msg.leader_id)
        self._reached_by_leader(msg.term, msg.rebuild_to)
        log = self.log
        if msg.prev_lsn < self.commit_lsn:
            # Already committed here (a duplicate or reordered message); committed entries
            # match every leader's log, so skip what we have.
            entries = tuple(e for e in msg.entries if e.lsn >= self.commit_lsn)
            if not entries and msg.entries and msg.entries[-1].end_lsn <= self.commit_lsn:
                self._ack_matched(self.commit_lsn, msg.commit_lsn)
                return
            if entries and entries[0].lsn != self.commit_lsn:
                self._reject(msg)
                return
            prev_lsn = self.commit_lsn
            prev_term = log.term_at(prev_lsn)
        else:
            entries = msg.entries
            prev_lsn, prev_term = msg.prev_lsn, msg.prev_term
            if log.term_at(prev_lsn) != prev_term:
                self._reject(msg)
                return
        assert prev_term is not None
        end = prev_lsn
        appended = False
        for entry in entries:
            existing = log.term_at(entry.end_lsn) if entry.end_lsn <= log.last_lsn() else None
            if existing == entry.term:
                end = entry.end_lsn
                continue  # already have it (same term and end means the same entry)
            if log.last_lsn() > end:
                if end < self.commit_lsn:
                    raise AssertionError("a leader asked to truncate committed history")
                log.truncate(end)
                self.flush_lsn = min(self.flush_lsn, end)
                self._rollback_config(end)
            self._append_local(entry)
            appended = True
            end = entry.end_lsn
        # New entries are acknowledged by flushed() once on disk; an ack now would say
        # nothing new and double the acks under load.
        self._ack_matched(end, msg.commit_lsn, send=not appended)

    def _ack_matched(self, matched: int, leader_commit: int, *, send: bool = True) -> None:
        self.leader_match_lsn = max(self.leader_match_lsn, matched)
        self._advance_follower_commit(min(leader_commit, self.leader_match_lsn))
        assert self.leader is not None
        if not send:
            return
        # last_lsn: the end of our log known to match the leader's (never a divergent tail).
        self._send(
            self.leader,
            AppendResponse(
                self.term, self.id, True, flush_lsn=self._ackable(), last_lsn=self.leader_match_lsn,
                rebuilding=self.rebuilding,
            ),
        )

    def _reject(self, msg: AppendRequest) -> None:
        history = tuple(self.log.term_history()[-MAX_HINT_TERMS:])
        term = self.log.term_at(self.commit_lsn)
        self._send(
            msg.leader_id,
            AppendResponse(
                self.term,
                self.id,
                False,
                hint_lsn=self.commit_lsn,
                hint_term=term or 0,
                last_lsn=self.log.last_lsn(),
                term_history=history,
                rebuilding=self.rebuilding,
            ),
        )

    def _reached_by_leader(self, term: int, rebuild_to: int) -> None:
        if self._leader_first_end is None:
            self._leader_first_end = rebuild_to
        # The first word of each newer leader sets the target: its log end then holds all
        # that was committed; later words only say the log grew, and are not waited for.
        if self.rebuilding and term > self._rebuild_term:
            self._rebuild_term, self._rebuild_target = term, rebuild_to
            self._note_rebuilt()

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        self._become_follower_of(msg.leader_id)
        self._reached_by_leader(msg.term, msg.rebuild_to)
        self._advance_follower_commit(min(msg.commit_lsn, self.leader_match_lsn))
        if not msg.commit_only:
            self._send(msg.leader_id, HeartbeatResponse(self.term, self.id, self._ackable(),
                                                        self.rebuilding))

    def _become_follower_of(self, leader: str) -> None:
        if self.role is not Role.FOLLOWER or self.leader != leader:
            self._become_follower(self.term, leader)
        self.election_elapsed = 0

    def _advance_follower_commit(self, lsn: int) -> None:
        if lsn > self.commit_lsn:
            self.commit_lsn = lsn
            self._drop_committed_configs()
        if self._leader_first_end is not None and self.commit_lsn >= self._leader_first_end:
            self._caught_up_with_leader = True

    @property
    def knows_commit(self) -> bool:
        """What is committed here is the group's newest as far as we can know: we lead and
        have committed our term's first entry, or we follow a leader and our commit LSN has
        reached its log end as of its first message to us. False after a restart (and a
        change of leader) until then: the newest committed entries here may long have been
        superseded."""
        if self.role is Role.LEADER:
            return self.commit_lsn >= self.term_start_lsn
        return (self.role is Role.FOLLOWER and self.leader is not None
                and self._caught_up_with_leader)

    # ---- replication: leader side -------------------------------------------------------

    def _append_local(self, entry: Entry) -> None:
        self.log.append(entry)
        if entry.kind is RecordKind.CONFIG:
            self._config_log.append((entry.end_lsn, self.membership))
            self._apply_membership(Membership.decode(entry.payload))

    def _apply_membership(self, membership: Membership) -> None:
        self.membership = membership
        self._membership_changed = True
        if self.role is Role.LEADER:
            for member in sorted(membership.members - {self.id}):
                self.progress.setdefault(member, Progress(next_lsn=self.log.last_lsn()))
            for member in sorted(set(self.progress) - membership.members):
                del self.progress[member]
            if self.id not in membership.voters:
                pass  # step down once the removal commits (see _maybe_commit)

    def _rollback_config(self, lsn: int) -> None:
        while self._config_log and self._config_log[-1][0] > lsn:
            _end, previous = self._config_log.pop()
            self.membership = previous
            self._membership_changed = True

    def _drop_committed_configs(self) -> None:
        self._config_log = [(end, m) for end, m in self._config_log if end > self.commit_lsn]

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = [m for m, p in self.progress.items() if p.recent_active] + [self.id]
                for progress in self.progress.values():
                    progress.recent_active = False
                if not quorum.vote_won(active, self.membership.voters):
                    self._become_follower(self.term, None)
                    return
        if self.transferee is not None:
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= self.config.election_ticks:
                self.transferee = None  # gave up: the target did not catch up in time
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            for member, progress in self.progress.items():
                self._send(member, Heartbeat(self.term, self.id,
                                             min(self.commit_lsn, progress.match_lsn),
                                             rebuild_to=self.log.last_lsn()))
                if progress.state is ProgressState.PROBE:
                    progress.paused = False
                    self._send_append(member, progress)

    def _broadcast_append(self) -> None:
        for member, progress in self.progress.items():
            self._send_append(member, progress)

    def _send_append(self, member: str, progress: Progress) -> None:
        log = self.log
        while True:
            if progress.state is ProgressState.PROBE and progress.paused:
                return
            if progress.inflight_bytes >= self.config.max_inflight_bytes:
                return
            prev_term = log.term_at(progress.next_lsn)
            if prev_term is None:
                # Not a boundary of our log (a stale hint): fall back to what matches.
                progress.next_lsn = progress.match_lsn
                prev_term = log.term_at(progress.next_lsn)
                if prev_term is None:
                    return
            entries: tuple[Entry, ...] = ()
            commit = min(self.commit_lsn, progress.match_lsn)
            # A probe to a follower that has not answered lately carries no records: a dead
            # peer would otherwise be sent a full batch with every heartbeat.
            silent = progress.state is ProgressState.PROBE and not progress.recent_active
            if progress.next_lsn < log.last_lsn() and not silent:
                entries = tuple(log.entries(progress.next_lsn, self.config.max_batch_bytes))
            elif progress.state is ProgressState.REPLICATE:
                if commit > progress.sent_commit:  # nothing new but the commit LSN
                    progress.sent_commit = commit
                    self._send(member, Heartbeat(self.term, self.id, commit, commit_only=True,
                                                 rebuild_to=self.log.last_lsn()))
                return
            progress.sent_commit = max(progress.sent_commit, commit)
            self._send(
                member,
                AppendRequest(self.term, self.id, progress.next_lsn, prev_term, commit, entries,
                              rebuild_to=self.log.last_lsn()),
            )
            if progress.state is ProgressState.PROBE:
                progress.paused = True
                return
            size = sum(len(e.payload) for e in entries)
            progress.next_lsn = entries[-1].end_lsn
            progress.inflight.append((progress.next_lsn, size))
            progress.inflight_bytes += size

    def _on_append_response(self, msg: AppendResponse) -> None:
        if self.role is not Role.LEADER:
            return
        progress = self.progress.get(msg.node_id)
        if progress is None:
            return
        progress.recent_active = True
        progress.rebuilding = msg.rebuilding
        if msg.success:
            if msg.flush_lsn > progress.match_lsn:
                progress.match_lsn = msg.flush_lsn
                self._maybe_commit()
            progress.free_to(msg.flush_lsn)
            if progress.state is ProgressState.PROBE:
                # The probe matched: stream from the end of what the follower has of ours.
                progress.state = ProgressState.REPLICATE
                progress.paused = False
                progress.reset_inflight()
                progress.next_lsn = max(progress.match_lsn, msg.last_lsn)
                if self.log.term_at(progress.next_lsn) is None:
                    progress.next_lsn = progress.match_lsn
            self._send_append(msg.node_id, progress)
            self._maybe_send_timeout_now()
            return
        if msg.term > self.term:
            return  # handled in step(): we stepped down
        # Rejected: find where the follower's log matches ours, then probe there.
        progress.probe_from(self._match_point(msg))
        self._send_append(msg.node_id, progress)

    def _match_point(self, msg: AppendResponse) -> int:
        """The highest position where the follower's log surely matches ours."""
        floor = msg.hint_lsn if self.log.term_at(msg.hint_lsn) == msg.hint_term else 0
        ours = self.log.term_history()
        our_terms = {t.term: i for i, t in enumerate(ours)}
        theirs = msg.term_history
        for index in range(len(theirs) - 1, -1, -1):
            term = theirs[index].term
            if term not in our_terms:
                continue
            # Entries of one term come from its single leader, so both logs hold the same
            # run of them from the same start; they agree up to the shorter run's end.
            ours_index = our_terms[term]
            their_end = theirs[index + 1].start_lsn if index + 1 < len(theirs) else msg.last_lsn
            our_end = (
                ours[ours_index + 1].start_lsn
                if ours_index + 1 < len(ours)
                else self.log.last_lsn()
            )
            return max(floor, min(their_end, our_end))
        return floor

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        if self.role is not Role.LEADER:
            return
        progress = self.progress.get(msg.node_id)
        if progress is None:
            return
        progress.recent_active = True
        progress.rebuilding = msg.rebuilding
        if msg.flush_lsn > progress.match_lsn:
            progress.match_lsn = msg.flush_lsn
            progress.stalled_heartbeats = 0
            self._maybe_commit()
        elif msg.flush_lsn < progress.match_lsn and progress.state is ProgressState.REPLICATE:
            # The follower restarted and no longer knows what of ours it holds: probe at
            # what it had, so it can match again (or say where it diverges).
            progress.probe_from(progress.match_lsn)
            progress.match_lsn = msg.flush_lsn
            self._send_append(msg.node_id, progress)
            return
        elif progress.state is ProgressState.REPLICATE and (
                progress.inflight or progress.next_lsn > progress.match_lsn):
            # Appends in flight but the follower does not move: some were lost. Or nothing in
            # flight, yet it acknowledges less than it said its log held: it lost an unsynced
            # tail in a crash (found by the simulator: the leader waited forever). Probe again
            # from what it has, rather than wait for acks that will not come.
            progress.stalled_heartbeats += 1
            if progress.stalled_heartbeats >= 3:
                progress.stalled_heartbeats = 0
                progress.probe_from(progress.match_lsn)
        if progress.state is ProgressState.REPLICATE and not progress.inflight:
            self._send_append(msg.node_id, progress)

    def _maybe_commit(self) -> None:
        flushed = {member: p.match_lsn for member, p in self.progress.items()}
        flushed[self.id] = self.flush_lsn
        candidate = self.config.quorum_rule(flushed, self.membership.voters)
        # Raft's rule: only an entry of the current term is committed by counting copies;
        # earlier entries commit with it. Our TERM_START entry makes that immediate.
        if candidate > self.commit_lsn and self.log.term_at(candidate) == self.term:
            self.commit_lsn = candidate
            self._drop_committed_configs()
            self._broadcast_pending = True  # followers learn the new commit LSN promptly
            if self.id not in self.membership.voters:
                # We were removed and that is committed: hand over by stepping down.
                self._become_follower(self.term, None)

    def _maybe_send_timeout_now(self) -> None:
        target = self.transferee
        if target is None or self.role is not Role.LEADER:
            return
        progress = self.progress.get(target)
        if progress is not None and progress.match_lsn == self.log.last_lsn():
            self._send(target, TimeoutNow(self.term, self.id))

    def _send(self, to: str, msg: Message) -> None:
        self._messages.append((to, msg))


def _change_size(old: Membership, new: Membership) -> int:
    """How many members change role (voter, learner, absent) between two memberships."""

    def role(m: Membership, member: str) -> int:
        return 2 if member in m.voters else 1 if member in m.learners else 0

    everyone = old.members | new.members
    changes = [member for member in everyone if role(old, member) != role(new, member)]
    if len(changes) != 1:
        return len(changes)
    member = changes[0]
    # Allowed: absent -> learner, learner -> voter, any -> absent. Not absent -> voter directly.
    if role(old, member) == 0 and role(new, member) == 2:
        return 2
    if new.voters & new.learners:
        return 2
    return 1
