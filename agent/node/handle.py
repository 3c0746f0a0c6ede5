"""The narrow interface to one timeline for the admin API (and, later, failover).

Handlers and controllers never hold the agent object or the consensus core: they get a
`TimelineHandle`, which can read the timeline's state, change its membership one member at
a time, and hand leadership over — nothing else. Errors are this module's (and
`consensus.NotLeader`, re-exported: the one not-leader error), each meaning one answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

import consensus
import walstore
from agent.config import check_node_id, is_loopback, parse_address
from agent.node.group_record import GroupRecord
from agent.node.loop import CommitOutcomeUnknown, TimelineNode

NotLeader = consensus.NotLeader
MEMBERSHIP_ACTIONS = ("add_learner", "promote", "remove")
RECORD_VISIBLE_TIMEOUT = 30.0  # seconds for a committed GROUP record to be on this disk


class ChangeRefused(Exception):
    """A request that is well formed but not allowed now (one change at a time, a learner
    not caught up, a member that does not exist, ...)."""


class TransferTimeout(Exception):
    """The target did not take leadership in time."""


def membership_json(membership: consensus.Membership) -> dict[str, Any]:
    return membership.as_dict()


class TimelineHandle:
    def __init__(self, node: TimelineNode, timeline_id: str, name: str,
                 status_extra: Callable[[], dict[str, Any]] | None = None, *,
                 remote_members: bool = False) -> None:
        """REMOTE_MEMBERS: members beyond loopback may be added (the agent has [tls])."""
        self._node = node
        self._remote_members = remote_members
        self.timeline_id = timeline_id
        self.name = name
        self._status_extra = status_extra

    def known_as(self, name: str) -> bool:
        return name in (self.timeline_id, self.name)

    @property
    def role(self) -> str:
        return self._node.role

    @property
    def leader(self) -> str | None:
        return self._node.leader

    @property
    def term(self) -> int:
        return self._node.term

    async def wait_role_change(self) -> None:
        await self._node.wait_role_change()

    # ---- the group's decisions (agent/failover) ----------------------------------------

    def record_is_current(self) -> bool:
        """group_record() is the group's newest decision as far as this agent can know (its
        commit LSN has caught up with its leader's since that leader was elected or this
        agent started). False meanwhile: an agent that has just restarted holds the records
        it had, and the newest of them may have been superseded long ago."""
        return self._node.core.knows_commit

    def group_record(self) -> GroupRecord | None:
        """The newest committed GROUP record: who the primary is, or None before the first
        decision. (A record that does not decode is refused before it is stored.)"""
        node = self._node
        entry = node.store.group_record_at_or_below(min(node.commit_lsn, node.store.flush_lsn))
        return GroupRecord.decode(entry.payload) if entry is not None else None

    def past_primary_server_ids(self) -> frozenset[int]:
        """The server_id of every server ever recorded as the primary (committed)."""
        node = self._node
        limit = min(node.commit_lsn, node.store.flush_lsn)
        return frozenset(GroupRecord.decode(entry.payload).primary.server_id
                         for entry in node.store.group_records(limit))

    def committed_gtid(self) -> str:
        """The quorum's GTID position: every domain's newest committed GTID."""
        node = self._node
        return walstore.format_position(node.store.gtids_at(node.commit_lsn))

    def committed_holds(self, gtid: str) -> bool:
        """GTID is a transaction of the committed history (safe from a worker thread: one
        lookup in the store's index)."""
        node = self._node
        end = node.store.gtid_end_lsn(gtid)
        return end is not None and end <= node.commit_lsn

    def gtid_known(self, gtid: str) -> bool | None:
        """For a server this agent feeds: True when GTID is committed history; False when it
        cannot be (this log went past its sequence number in its domain without it); None
        when this agent cannot tell yet — it is in this log but not committed here (this
        agent just restarted, or lags), or beyond this log's newest in its domain (this log
        is behind, or has not yet read an adopted primary's older history). Safe from a
        worker thread."""
        if self.committed_holds(gtid):
            return True
        store = self._node.store
        if store.gtid_end_lsn(gtid) is not None:
            return None
        try:
            parsed = walstore.Gtid.parse(gtid)
            newest = store.last_gtids().get(parsed.domain)
            if newest is None or walstore.Gtid.parse(newest).seq_no < parsed.seq_no:
                return None
        except walstore.GtidError:
            pass  # unreadable: not history
        return False

    def log_holds(self, gtid: str) -> bool:
        """GTID is in this agent's log, committed or not (a leader's log holds everything
        committed: a GTID it lacks was never committed by the quorum)."""
        return self._node.store.gtid_end_lsn(gtid) is not None

    async def record_group(self, record: GroupRecord) -> int:
        """Propose RECORD and wait until it is committed; its end LSN. Raises
        consensus.NotLeader (also when leadership moves before it commits)."""
        waiter = self._node.submit(record.encode(), kind=consensus.RecordKind.GROUP)
        end = await self._node.wait(waiter)
        # A majority may commit it before this agent's own fsync; group_record() reads only
        # what is on this disk, and the caller's next look must see its own decision.
        with trio.move_on_after(RECORD_VISIBLE_TIMEOUT):  # committed anyway (a full disk)
            while self._node.store.flush_lsn < end:
                await trio.sleep(0.001)
        return end

    def status(self) -> dict[str, Any]:
        extra = self._status_extra() if self._status_extra is not None else {}
        return {"timeline_id": self.timeline_id, "name": self.name,
                **self._node.status(), **extra}

    def membership(self) -> dict[str, Any]:
        return membership_json(self._node.membership)

    async def change_membership(self, action: str, member: str,
                                address: str | None = None) -> dict[str, Any]:
        """One membership change, answered once committed. Raises NotLeader, ChangeRefused,
        CommitOutcomeUnknown; ValueError for a malformed request."""
        if action not in MEMBERSHIP_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(MEMBERSHIP_ACTIONS)}")
        check_node_id(member, "id")  # ConfigError is a ValueError: a 400 naming the field
        if action == "add_learner":
            if address is None:
                raise ValueError('add_learner needs "addr": "host:port"')
            # Checked here, before it reaches the log: every agent dials what it says.
            parsed = parse_address(address, "addr")
            if not self._remote_members and not is_loopback(parsed):
                raise ValueError(f"addr: {address} is not a loopback address, and this agent "
                                 "has no [tls]: the log would cross the network in the clear")
            address = str(parsed)

        def build(current: consensus.Membership) -> consensus.Membership:
            if action == "add_learner":
                assert address is not None
                return current.with_learner(member, address)
            if action == "promote":
                return current.promoted(member)
            return current.without(member)

        try:
            membership = await self._node.change_membership(build)
        except (consensus.ConfigChangeError, consensus.MembershipError) as exc:
            raise ChangeRefused(str(exc)) from exc
        return membership_json(membership)

    async def transfer_leadership(self, to: str, timeout: float) -> dict[str, Any]:
        """Hand leadership to TO; returns once this agent stepped down and heard from the
        new leader. Raises NotLeader, ChangeRefused, TransferTimeout."""
        node = self._node
        try:
            await node.transfer_leadership(to)
        except ValueError as exc:
            raise ChangeRefused(str(exc)) from exc
        with trio.move_on_after(timeout):
            while node.role == "leader" or node.leader is None:
                await node.wait_role_change()
            return {"leader": node.leader, "term": node.term}
        raise TransferTimeout(f"{to} did not take over within {timeout}s")


__all__ = [
    "ChangeRefused",
    "CommitOutcomeUnknown",
    "NotLeader",
    "TimelineHandle",
    "TransferTimeout",
]
