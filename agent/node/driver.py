"""The node driver: applies a consensus core's Ready to a WAL store and a network, in the
order the core requires, and tells proposers and listeners what committed. Sans-I/O: the
trio node loop (agent/node/loop.py) and the simulator (tests/sim) run this very code, so
what the simulator checks is what the agent does.

The order, per Ready:

1. term, vote and membership to the control file (fsynced) — before any message of it;
2. the truncation (the caller first lets any running fsync finish: `store.wait_idle()`),
   which also fails the proposals it cut;
3. the entries appended to the store (buffered, not yet durable);
4. a new commit LSN: committed proposals released, commit listeners called;
5. the messages sent — a leader's appends go out while its own fsync runs (Raft allows
   it; acknowledgements only ever come from durability reports, step 6);
6. after the caller has made the store durable (inline `flush()`, or the group-commit
   worker's `sync()`), `durable(store.durable())` reports it to the core. A report names
   its LSN, term and truncation epoch: one from before a truncation, or about entries a
   newer leader's log has replaced, is dropped, never acknowledged.

A full disk stops step 1 before anything of the Ready is applied: `apply` raises
`walstore.DiskFullError`, and the caller holds the Ready, lets no other input reach the core
(nor ticks: time stands still for a node that cannot persist its term), and calls `apply`
with the same Ready again once there is room. No message leaves meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import consensus
import walstore
from agent.node.log_storage import WalLogStorage

log = logging.getLogger("binkeeper.node")

P = TypeVar("P")  # what a proposer waits on: a trio waiter in the agent, a record in the sim

Send = Callable[[str, Any], None]
CommitListener = Callable[[int], None]


@dataclass
class Applied(Generic[P]):
    """What one Ready settled, for the caller to tell its proposers."""

    committed: list[P] = field(default_factory=list)
    failed: list[P] = field(default_factory=list)  # cut by a truncation: not committed
    appended: bool = False  # entries were appended: the caller must make them durable
    truncated: bool = False


class NodeDriver(Generic[P]):
    def __init__(
        self,
        *,
        node_id: str,
        store: walstore.WalStore,
        initial_membership: consensus.Membership,
        core_config: consensus.Config,
        rng: Any,
        send: Send,
        on_membership: Callable[[consensus.Membership], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.storage = WalLogStorage(store)
        self._send = send
        self._on_membership = on_membership
        control = store.control
        membership = control.membership if control.membership.voters else initial_membership
        self.core = consensus.Node(
            core_config,
            self.storage,
            consensus.HardState(term=control.term, vote=control.vote,
                                commit_lsn=control.commit_lsn, rebuilding=control.rebuilding),
            membership,
            rng,
            store.flush_lsn,
        )
        self.pending = consensus.PendingProposals[P]()
        self.commit_lsn = control.commit_lsn
        self.persisted_commit = control.commit_lsn
        self.commit_listeners: list[CommitListener] = []
        self.stale_reports = 0  # durability reports dropped as stale (status, tests)

    # ---- inputs ---------------------------------------------------------------------------

    def propose(self, payload: bytes, proposer: P, *, gtid: str | None = None,
                continued: bool = False,
                kind: consensus.RecordKind = consensus.RecordKind.DATA) -> int:
        """Append through the quorum; PROPOSER is released once committed (raises
        consensus.NotLeader)."""
        end = self.core.propose(payload, gtid=gtid, continued=continued, kind=kind)
        self.pending.add(end, proposer)
        return end

    def wait_for(self, end_lsn: int, proposer: P) -> None:
        """Release PROPOSER once END_LSN (an entry this leader appended) commits."""
        self.pending.add(end_lsn, proposer)

    def durable(self, report: walstore.Durable) -> bool:
        """The store's durability REPORT (from `store.durable()` after a flush or sync);
        False when it was dropped as stale."""
        if report.epoch != self.store.epoch:
            self.stale_reports += 1  # from before a truncation: about a log that is gone
            return False
        if self.core.log.term_at(report.lsn) != report.term:
            self.stale_reports += 1  # about entries a newer leader's log has replaced
            return False  # (the core checks it too: it never acks on such a report)
        self.core.flushed(report.lsn, report.term)
        return True

    # ---- a Ready --------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return self.core.has_ready()

    def ready(self) -> consensus.Ready:
        return self.core.ready()

    def apply(self, rd: consensus.Ready) -> Applied[P]:
        """Apply RD (steps 1-5). With a truncation, the store must be idle (no sync
        running): the trio loop awaits `store.wait_idle()` first. Raises
        walstore.DiskFullError with nothing of RD applied: call again with RD later."""
        applied: Applied[P] = Applied()
        self.persist_control(rd)
        if rd.membership is not None and self._on_membership is not None:
            self._on_membership(rd.membership)  # links to new members exist before sending
        if rd.truncate_to is not None:
            log.warning("%s: truncating a divergent uncommitted suffix at LSN %d (end was %d)",
                        self.node_id, rd.truncate_to, self.store.end_lsn)
            self.store.truncate(rd.truncate_to)
            applied.truncated = True
            # Proposals in the cut suffix are gone for good. The same Ready may carry a
            # commit LSN past their end — the new leader's entries at those positions — so
            # they fail before commits are released below.
            applied.failed = self.pending.truncated(rd.truncate_to)
        for entry in rd.entries:
            self.storage.append(entry)
        applied.appended = bool(rd.entries)
        if rd.commit_lsn is not None and rd.commit_lsn > self.commit_lsn:
            # Before the sends: whoever waits on a commit (the primary, for its ACK) hears
            # of it without waiting for this pass's messages to be encoded and written.
            self.commit_lsn = rd.commit_lsn
            applied.committed = self.pending.committed(self.commit_lsn)
            for listener in list(self.commit_listeners):
                try:
                    listener(self.commit_lsn)
                except Exception:  # a listener's failure must never stop the node
                    log.exception("%s: a commit listener failed", self.node_id)
        for dst, msg in rd.messages:
            self._send(dst, msg)
        return applied

    def caught_up(self, member: str) -> bool:
        """While leading: MEMBER is a voter streaming within one batch of this log and heard
        from in this election timeout (ready to take leadership without a pause: the
        preferred-leader hand-over's rule). A member frozen because its disk is full does
        not answer, so leadership is not handed to it again and again."""
        core = self.core
        progress = core.progress.get(member)
        return (
            core.role is consensus.Role.LEADER
            and member in core.membership.voters
            and progress is not None
            and progress.state is consensus.ProgressState.REPLICATE
            and not progress.rebuilding
            and progress.recent_active
            and core.log.last_lsn() - progress.match_lsn <= core.config.max_batch_bytes
        )

    def handover_target(self) -> str | None:
        """While leading: the caught-up voter furthest along, to hand leadership to (a
        leader whose disk is full steps aside); None when no voter is caught up."""
        ready = [m for m in self.core.membership.voters if m != self.node_id and self.caught_up(m)]
        return max(ready, key=lambda m: (self.core.progress[m].match_lsn, m), default=None)

    def leadership_lost(self) -> list[P]:
        """Once the node no longer leads, every pending proposal's outcome is unknown."""
        if self.core.role is consensus.Role.LEADER or not self.pending:
            return []
        return self.pending.dropped()

    # ---- the control file -----------------------------------------------------------------

    def durable_commit(self) -> int:
        """The commit LSN the control file may record: never beyond this agent's disk."""
        return min(self.commit_lsn, self.store.flush_lsn)

    def persist_commit(self) -> None:
        """Write the commit LSN to the control file now (the loop does it now and then).
        Raises walstore.DiskFullError; the commit LSN is re-learned from the leader anyway."""
        self._write_control({})

    def control_changes(self, rd: consensus.Ready) -> dict[str, Any]:
        """What RD changes in the control file: term, vote, rebuilding, membership (a new
        commit LSN alone is written now and then, not with every Ready)."""
        control = self.store.control
        changes: dict[str, Any] = {}
        hard_state, membership = rd.hard_state, rd.membership
        if hard_state is not None and (
                hard_state.term, hard_state.vote, hard_state.rebuilding) != (
                control.term, control.vote, control.rebuilding):
            changes.update(term=hard_state.term, vote=hard_state.vote,
                           rebuilding=hard_state.rebuilding)
        if membership is not None and membership != control.membership:
            changes["membership"] = membership
        return changes

    def persist_control(self, rd: consensus.Ready) -> None:
        """Step 1 of apply: RD's control_changes, durably. The trio loop calls it first, in
        a worker thread when there is something to write (two fsyncs stay off the event
        loop), and apply's own call then finds nothing to write. Raises
        walstore.DiskFullError with nothing written."""
        changes = self.control_changes(rd)
        if changes:
            self._write_control(changes)

    def _write_control(self, changes: dict[str, Any]) -> None:
        commit = self.durable_commit()
        self.store.update_control(commit_lsn=commit, **changes)
        self.persisted_commit = commit
