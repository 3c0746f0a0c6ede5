"""Semi-sync ACKs: written straight from the event loop when the socket takes them at once,
otherwise by a thread of their own, newest position only.

The primary releases every commit waiting at or below an acknowledged position, so when
several transactions commit in the quorum at once only the newest position needs sending.
An ACK is a few dozen bytes and the socket's send buffer is nearly always empty, so the
first try is a non-blocking send on the event loop (no thread wake-up on the commit path);
whatever the kernel does not take at once — all of it, or the rest of a packet — goes to
the thread, which may block. The two never write at the same time: the loop writes only
while the thread has nothing in hand. The ACK is written on the replication connection
the reading thread is blocked on, which the kernel allows (one reader, one writer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class AckSender:
    def __init__(self, encode: Callable[[str, int], bytes], send_all: Callable[[bytes], None],
                 send_nowait: Callable[[bytes], int] | None = None) -> None:
        self._encode = encode
        self._send_all = send_all
        self._send_nowait = send_nowait
        self._cond = threading.Condition()
        self._latest: tuple[str, int] | None = None  # for the thread: newest position
        self._rest = b""  # for the thread: the unsent end of a packet, which goes first
        self._busy = False  # the thread is writing
        self._closed = False
        self.sent = 0  # ACK packets written
        self.sent_direct = 0  # of which from the event loop, without the thread
        self.posted = 0  # positions handed over (several may share one packet)

    def post(self, file_name: str, position: int) -> None:
        """Acknowledge everything up to POSITION of FILE_NAME (positions come in order).

        Raises OSError if the connection is broken.
        """
        with self._cond:
            if self._closed:
                return  # the session ended: its stream is closed or closing
            self.posted += 1
            if (self._send_nowait is not None and not self._busy and self._latest is None
                    and not self._rest):
                packet = self._encode(file_name, position)
                try:
                    written = self._send_nowait(packet)
                except BlockingIOError:
                    written = 0
                if written == len(packet):
                    self.sent += 1
                    self.sent_direct += 1
                    return
                if written:
                    self._rest = packet[written:]  # the position is in it: nothing else to do
                    self._cond.notify()
                    return
            self._latest = (file_name, position)
            self._cond.notify()

    def close(self) -> None:
        """End the thread: `run` returns once its write in hand, if any, is done (closing
        the connection ends a write that blocks)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def run(self) -> None:
        """The sending thread's body; returns once closed, raises if a write fails."""
        while True:
            with self._cond:
                while self._latest is None and not self._rest and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                rest, self._rest = self._rest, b""
                latest, self._latest = self._latest, None
                self._busy = True
            try:
                if rest:
                    self._send_all(rest)
                    self.sent += 1
                if latest is not None:
                    self._send_all(self._encode(*latest))
                    self.sent += 1
            finally:
                with self._cond:
                    self._busy = False
