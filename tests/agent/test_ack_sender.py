from __future__ import annotations

import threading

import pytest
import trio

from agent.source.ack_sender import AckSender


def encode(file_name: str, position: int) -> bytes:
    return f"[{file_name}:{position}]".encode()


async def test_acks_are_sent_in_order_and_coalesced_to_the_newest() -> None:
    sent: list[bytes] = []
    gate = threading.Event()

    def send_all(data: bytes) -> None:
        gate.wait(10)  # the first write is slow: positions pile up meanwhile
        sent.append(data)

    sender = AckSender(encode, send_all)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, sender.run)
        sender.post("bin.000001", 100)
        with trio.fail_after(10):
            while sender.posted != 1 or sender._latest is not None:  # taken by the thread
                await trio.sleep(0.001)
        for position in (200, 300, 400):
            sender.post("bin.000001", position)
        gate.set()
        with trio.fail_after(10):
            while sender.sent < 2:
                await trio.sleep(0.001)
        sender.close()
    assert sent == [b"[bin.000001:100]", b"[bin.000001:400]"]


async def test_direct_sends_when_idle_and_the_thread_finishes_a_partial_one_first() -> None:
    wire: list[bytes] = []
    takes: list[int | None] = [None, 5, 0]  # all of it; 5 bytes; nothing (EAGAIN)

    def send_nowait(data: bytes) -> int:
        take = takes.pop(0)
        if take == 0:
            raise BlockingIOError
        part = data if take is None else data[:take]
        wire.append(part)
        return len(part)

    sender = AckSender(encode, wire.append, send_nowait)
    sender.post("bin.000001", 100)  # written at once, no thread needed
    assert (sender.sent, sender.sent_direct) == (1, 1) and wire == [b"[bin.000001:100]"]
    sender.post("bin.000001", 200)  # only 5 bytes go: the thread owes the rest
    sender.post("bin.000001", 300)  # the thread holds work: this one must wait for it
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, sender.run)
        with trio.fail_after(10):
            while sender.sent < 3:
                await trio.sleep(0.001)
        sender.close()
    assert b"".join(wire) == b"[bin.000001:100][bin.000001:200][bin.000001:300]"
    assert takes == [0]  # no direct try while the thread had work


async def test_a_failed_write_ends_the_sender_with_the_error() -> None:
    def send_all(_data: bytes) -> None:
        raise BrokenPipeError("primary gone")

    sender = AckSender(encode, send_all)
    sender.post("bin.000001", 4)
    with pytest.raises(BrokenPipeError):
        await trio.to_thread.run_sync(sender.run)
