from __future__ import annotations

import threading

import pytest
import trio

from agent.ack_sender import AckSender


async def test_acks_are_sent_in_order_and_coalesced_to_the_newest() -> None:
    sent: list[tuple[str, int]] = []
    gate = threading.Event()

    def send(file_name: str, position: int) -> None:
        gate.wait(10)  # the first write is slow: positions pile up meanwhile
        sent.append((file_name, position))

    sender = AckSender(send)
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
    assert sent == [("bin.000001", 100), ("bin.000001", 400)]


async def test_a_failed_write_ends_the_sender_with_the_error() -> None:
    def send(_file_name: str, _position: int) -> None:
        raise BrokenPipeError("primary gone")

    sender = AckSender(send)
    sender.post("bin.000001", 4)
    with pytest.raises(BrokenPipeError):
        await trio.to_thread.run_sync(sender.run)
