"""The node's inbox is bounded for peer messages: past a count or a byte budget, peer
receivers wait (and TCP pushes back on the sender) until the loop has taken messages."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

import consensus
import walstore
from agent.node import loop
from agent.node.loop import TimelineNode

MEMBERS = consensus.Membership(1, frozenset({"a1", "a2", "a3"}))


def make_node(tmp_path: Path) -> TimelineNode:
    return TimelineNode(node_id="a1", initial_membership=MEMBERS,
                        store=walstore.WalStore.open(tmp_path / "wal"),
                        send=lambda _dst, _msg: None, tick_seconds=3600,
                        core_config=consensus.Config("a1"), rng=random.Random(1))


async def _receiver_waits_until_the_loop_drains(node: TimelineNode) -> None:
    done = trio.Event()

    async def receiver() -> None:
        await node.wait_inbox_room()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set() and node.inbox_waits == 1  # the loop is not running yet
        await nursery.start(node.run)
        with trio.fail_after(10):
            await done.wait()
        assert node._inbox_messages == 0 and node._inbox_bytes == 0
        nursery.cancel_scope.cancel()


async def test_too_many_messages_hold_the_receivers(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    for _ in range(loop.INBOX_MESSAGES):
        node.deliver(consensus.Heartbeat(1, "a2", 0))
    await _receiver_waits_until_the_loop_drains(node)


async def test_too_many_bytes_hold_the_receivers(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "INBOX_BYTES", 1 << 20)
    node = make_node(tmp_path)
    entries = (consensus.Entry(0, 1, consensus.RecordKind.DATA, b"x" * (600 << 10)),)
    node.deliver(consensus.AppendRequest(1, "a2", 0, 0, 0, entries))
    await trio.testing.wait_all_tasks_blocked()
    node.deliver(consensus.AppendRequest(1, "a2", 0, 0, 0, entries))  # 1.2 MiB waiting
    await _receiver_waits_until_the_loop_drains(node)


async def test_every_waiting_receiver_wakes(tmp_path: Path) -> None:
    """Two peers' receivers wait; a third delivers meanwhile (it had room when it began to
    read): once the loop drains, both waiters wake — none waits on a stale Event."""
    node = make_node(tmp_path)
    for _ in range(loop.INBOX_MESSAGES):
        node.deliver(consensus.Heartbeat(1, "a2", 0))
    woken = 0

    async def receiver() -> None:
        nonlocal woken
        await node.wait_inbox_room()
        woken += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        node.deliver(consensus.Heartbeat(1, "a3", 0))  # over the bound, while they wait
        await nursery.start(node.run)
        with trio.fail_after(10):
            while woken < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
