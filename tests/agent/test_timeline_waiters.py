"""TimelineNode's promise to proposers: "committed" only for the entry this leader proposed.

A deposed leader that learns, in one step, of a new leader whose log replaces its own
uncommitted suffix *and* commits past the end of it must not report the proposals of that
suffix committed: they are gone, though their LSNs are covered. (Our leaders cap the
commit LSN they send at the follower's known match, so the message below is one they
would not send; the node must not depend on that.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

import consensus
import walstore
from agent.node.loop import CommitOutcomeUnknown, TimelineNode

MEMBERS = consensus.Membership(1, frozenset({"a1", "a2", "a3"}))


async def test_a_proposal_truncated_by_a_new_leader_is_not_reported_committed(
        tmp_path: Path) -> None:
    store = walstore.WalStore.open(tmp_path / "wal")
    sent: list[tuple[str, object]] = []
    node = TimelineNode(node_id="a1", initial_membership=MEMBERS, store=store,
                        send=lambda dst, msg: sent.append((dst, msg)), tick_seconds=3600,
                        core_config=consensus.Config("a1"), rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)

        async def until(predicate: object, what: str) -> None:
            with trio.fail_after(5):
                while not predicate():  # type: ignore[operator]
                    await trio.sleep(0.001)

        # A new cluster: a1 learns from their pre-votes that a2 and a3 are empty too.
        for peer in ("a2", "a3"):
            node.deliver(consensus.VoteRequest(1, peer, 0, 0, pre_vote=True))
        await until(lambda: not node.core.rebuilding, "a1 to know the cluster is new")
        # a1 wins an election with a2's votes (pre-vote, then the real one).
        await node.admin(lambda core: core.campaign())
        await until(lambda: node.core.role is consensus.Role.PRE_CANDIDATE
                    or node.core.role is consensus.Role.CANDIDATE, "a campaign")
        if node.core.role is consensus.Role.PRE_CANDIDATE:
            node.deliver(consensus.VoteResponse(node.core.term + 1, "a2", True, pre_vote=True))
            await until(lambda: node.core.role is consensus.Role.CANDIDATE, "candidacy")
        node.deliver(consensus.VoteResponse(node.core.term, "a2", True))
        await until(lambda: node.role == "leader", "leadership")
        term = node.core.term

        # It proposes X; nobody acknowledges it, so it stays uncommitted.
        waiter = node.submit(b"X" * 100, gtid="0-1-1")
        await until(lambda: store.flush_lsn >= waiter.end_lsn > 0, "X on a1's disk")
        x_end = waiter.end_lsn

        # a3 leads a newer term with a different log, committed beyond X's end LSN.
        entries = (
            consensus.Entry(lsn=0, term=term + 1, kind=consensus.RecordKind.DATA,
                            payload=b"Y" * (x_end + 50), gtid="0-1-1", continued=False),
        )
        end = entries[-1].end_lsn
        node.deliver(consensus.AppendRequest(term + 1, "a3", 0, 0, end, entries))
        await until(lambda: node.commit_lsn >= end, "the new leader's commit")
        assert node.commit_lsn > x_end and store.term_at(x_end) != term

        with pytest.raises(CommitOutcomeUnknown):
            await TimelineNode.wait(waiter)
        nursery.cancel_scope.cancel()
    store.close()
