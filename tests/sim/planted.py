"""Bugs planted on purpose, each one the simulator's checkers must catch (tests/sim/test_sim.py
runs each over a named seed range). Each is a small change to the code the agent runs:
a driver subclass, or a core rule swapped in."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import consensus
import walstore
from agent.node.driver import Applied, NodeDriver, P
from consensus.node import Node, Role


class StaleFlushDriver(NodeDriver[P]):
    """The old node loop: a durability report applied as "the store's flush LSN now",
    with no term or truncation epoch — the stale-flush acknowledgement. (Run it inside
    `old_ready()`: the core's later defence, dropping acknowledgements queued before a
    truncation, would otherwise hide it.)"""

    def durable(self, report: walstore.Durable) -> bool:
        _naive_flushed(self.core, self.store.flush_lsn)
        return True


@contextmanager
def old_ready() -> Iterator[None]:
    """The core without its filter of acknowledgements queued before a truncation."""
    original = Node._without_stale_acks
    Node._without_stale_acks = lambda self, messages: messages  # type: ignore[method-assign]
    try:
        yield
    finally:
        Node._without_stale_acks = original  # type: ignore[method-assign]


def _naive_flushed(core: Node, lsn: int) -> None:
    """Node.flushed before the fix: a bare LSN, trusted."""
    lsn = min(lsn, core.log.last_lsn())
    if lsn <= core.flush_lsn:
        return
    core.flush_lsn = lsn
    if core.role is Role.LEADER:
        core._maybe_commit()
    elif core.leader is not None:
        core._send(core.leader, consensus.AppendResponse(
            core.term, core.id, True, flush_lsn=core._ackable(),
            last_lsn=core.leader_match_lsn))


class SendBeforePersistDriver(NodeDriver[P]):
    """Sends a Ready's messages before its term and vote reach the control file."""

    def apply(self, rd: consensus.Ready) -> Applied[P]:
        messages, rd.messages = rd.messages, []
        for dst, msg in messages:
            self._send(dst, msg)
        return super().apply(rd)


class AckBeforeFsyncDriver(NodeDriver[P]):
    """Reports appended records durable at once, before any fsync."""

    def apply(self, rd: consensus.Ready) -> Applied[P]:
        applied = super().apply(rd)
        if applied.appended:
            store = self.store
            self.core.flushed(store.end_lsn, store.last_term)
        return applied


def minority_quorum(flushed: Mapping[str, int], voters: frozenset[str]) -> int:
    """Commits once ANY voter has a record: committing on one copy."""
    return max((flushed.get(v, 0) for v in voters), default=0)


def one_copy(config: consensus.Config) -> None:
    config.quorum_rule = minority_quorum


@contextmanager
def votes_ignoring_logs() -> Iterator[None]:
    """Voters grant votes without comparing logs: a leader that lacks committed records is
    elected (and would truncate them on its followers)."""
    original = Node._log_up_to_date
    Node._log_up_to_date = lambda self, last_term, last_lsn: True  # type: ignore[method-assign]
    try:
        yield
    finally:
        Node._log_up_to_date = original  # type: ignore[method-assign]


class TruncateDeeperDriver(NodeDriver[P]):
    """Cuts one record more than the core asked (below the commit LSN when that record is
    committed), then writes it back: the core and the log agree again, but for a moment
    a committed record was gone from this node's disk."""

    def apply(self, rd: consensus.Ready) -> Applied[P]:
        if rd.truncate_to:
            store = self.store
            kept = list(store.read(0))
            previous = [e for e in kept if e.end_lsn < rd.truncate_to]
            cut = previous[-1].lsn if previous else 0
            restore = [e for e in kept if cut <= e.lsn < rd.truncate_to]
            store.truncate(cut)
            for entry in restore:
                self.storage.append(entry)
            store.flush()
        return super().apply(rd)
