"""A stale durability report never acknowledges a newer leader's records (issue #11).

A follower holds records 0..100 of term 1, flushed. A new leader (term 2) sends an append
that truncates to 50 and appends its own 50..120; in the same pass of the node loop, a
report from the fsync worker about the *old* log ("durable up to 100") is applied after
the append. Before the fix the node answered the new leader `success, flush_lsn=100` for
term-2 records that were not on its disk, and the leader counted that copy toward the
quorum. The report now names LSN, term and truncation epoch, and this one is dropped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import trio

import consensus
import walstore
from agent.node.loop import TimelineNode, _Flushed

MEMBERS = consensus.Membership(1, frozenset({"a1", "a2", "a3"}))
DATA = consensus.RecordKind.DATA


async def until(predicate: Callable[[], bool], what: str) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.001)


async def test_a_stale_flush_report_does_not_acknowledge_a_new_leaders_records(
        tmp_path: Path) -> None:
    store = walstore.WalStore.open(tmp_path / "wal")
    # Every acknowledgement, with what was really on this node's disk when it was sent.
    acks: list[tuple[consensus.AppendResponse, walstore.Durable]] = []

    def send(_dst: str, msg: object) -> None:
        if isinstance(msg, consensus.AppendResponse) and msg.success:
            acks.append((msg, store.durable()))

    node = TimelineNode(node_id="a1", initial_membership=MEMBERS, store=store, send=send,
                        tick_seconds=3600, core_config=consensus.Config("a1"),
                        rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        old = (consensus.Entry(0, 1, DATA, b"a" * 50), consensus.Entry(50, 1, DATA, b"b" * 50))
        node.deliver(consensus.AppendRequest(1, "a2", 0, 0, 0, old))
        await until(lambda: any(m.flush_lsn == 100 for m, _ in acks), "term 1 acknowledged")
        stale = store.durable()  # what the fsync worker reported about the old log
        assert (stale.lsn, stale.term) == (100, 1)

        new = (consensus.Entry(50, 2, DATA, b"c" * 70),)
        acks.clear()
        # One pass of the loop: the new leader's append, then the old report (no await
        # between them, so both are drained together).
        node.deliver(consensus.AppendRequest(2, "a3", 50, 1, 0, new))
        node._inbox_send.send_nowait(_Flushed(stale))
        await until(lambda: any(m.term == 2 and m.flush_lsn == 120 for m, _ in acks),
                    "the new records acknowledged once durable")
        nursery.cancel_scope.cancel()
    for msg, on_disk in acks:
        assert msg.flush_lsn <= on_disk.lsn, (
            f"acknowledged {msg.flush_lsn} in term {msg.term} with only {on_disk} on disk")
    assert node.driver.stale_reports >= 1
    assert store.term_at(120) == 2
    store.close()
