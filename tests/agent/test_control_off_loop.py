"""Term, vote and membership reach the control file from a worker thread, before anything
of their Ready is sent: two fsyncs (and a wait for the commit LSN's writer) never stall the
event loop. A commit alone causes no such write."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import trio

import consensus
import walstore
from agent.node.loop import TimelineNode


async def test_control_writes_run_in_threads(tmp_path: Path) -> None:
    store = walstore.WalStore.open(tmp_path / "wal")
    writes: list[tuple[bool, dict[str, Any]]] = []
    real = store.update_control

    def recording(**changes: Any) -> walstore.Control:
        on_loop = threading.current_thread() is threading.main_thread()
        writes.append((on_loop, changes))
        return real(**changes)

    store.update_control = recording  # type: ignore[method-assign]
    sent: list[tuple[str, object, int]] = []

    def send(dst: str, msg: object) -> None:
        sent.append((dst, msg, store.control.term))  # the term on disk when it left

    node = TimelineNode(node_id="a1", initial_membership=consensus.Membership(
        1, frozenset({"a1", "a2", "a3"})), store=store, send=send, tick_seconds=3600,
        core_config=consensus.Config("a1"), rng=random.Random(3))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        # a leader of term 5 appears: a1 adopts term 5, writes it, then answers
        node.deliver(consensus.AppendRequest(5, "a2", 0, 0, 0, ()))
        with trio.fail_after(10):
            while not sent:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    term_writes = [(on_loop, c) for on_loop, c in writes if "term" in c]
    assert [c["term"] for _, c in term_writes] == [5]
    assert not any(on_loop for on_loop, _ in term_writes)  # in a worker thread
    assert all(term == 5 for _, _, term in sent)  # on disk before anything was sent
