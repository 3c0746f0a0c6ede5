"""Semi-sync ACKs sent from a thread of their own, newest position only.

The primary releases every commit waiting at or below an acknowledged position, so when
several transactions commit in the quorum at once only the newest position needs sending.
Sending from a thread keeps the blocking socket write off the event loop; the ACK is
written on the replication connection the reading thread is blocked on, which the kernel
allows (one reader, one writer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class AckSender:
    def __init__(self, send: Callable[[str, int], None]) -> None:
        self._send = send
        self._cond = threading.Condition()
        self._latest: tuple[str, int] | None = None
        self._closed = False
        self.sent = 0  # ACK packets written
        self.posted = 0  # positions handed over (several may share one packet)

    def post(self, file_name: str, position: int) -> None:
        """Acknowledge everything up to POSITION of FILE_NAME (positions come in order)."""
        with self._cond:
            self._latest = (file_name, position)
            self.posted += 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def run(self) -> None:
        """The sending thread's body; returns once closed, raises if a write fails."""
        while True:
            with self._cond:
                while self._latest is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                latest, self._latest = self._latest, None
            if latest is not None:
                self._send(*latest)
            self.sent += 1
