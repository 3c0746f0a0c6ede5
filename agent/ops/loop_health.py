"""How late the event loop runs: a stalled loop delays heartbeats and so causes elections.

A task asks to wake every PERIOD seconds and records how much later it actually woke. A
stall above WARN_AFTER is logged, so an operator (or a test) can tell a slow disk or a
blocking call on the loop from a network problem.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger("binkeeper.loop")

PERIOD = 0.05
WARN_AFTER = 0.25


@dataclass
class LoopHealth:
    max_lag_ms: float = 0.0
    stalls: int = 0  # wakeups later than WARN_AFTER
    observe: Callable[[float], None] | None = None  # each wakeup's lag, seconds (metrics)
    _beat: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"max_lag_ms": round(self.max_lag_ms, 1), "stalls": self.stalls}

    async def run(self) -> None:
        if os.environ.get("BINKEEPER_STALL_TRACE"):
            self._start_tracer(threading.get_ident())
        while True:
            self._beat = time.monotonic()
            due = time.monotonic() + PERIOD
            await trio.sleep(PERIOD)
            lag = max(0.0, time.monotonic() - due)
            self.max_lag_ms = max(self.max_lag_ms, lag * 1000)
            if self.observe is not None:
                self.observe(lag)
            if lag > WARN_AFTER:
                self.stalls += 1
                log.warning("event loop stalled for %.0f ms", lag * 1000)

    def _start_tracer(self, loop_thread: int) -> None:
        """Debugging aid (BINKEEPER_STALL_TRACE=1): log where the loop is stuck when late."""

        def watch() -> None:
            reported = 0.0
            while True:
                time.sleep(PERIOD)
                beat = self._beat
                if time.monotonic() - beat > WARN_AFTER and beat != reported:
                    reported = beat
                    frame = sys._current_frames().get(loop_thread)
                    stack = "".join(traceback.format_stack(frame)[-8:]) if frame else "?"
                    log.warning("event loop stuck; it is in:\n%s", stack)

        threading.Thread(target=watch, name="stall-tracer", daemon=True).start()
