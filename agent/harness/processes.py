"""What the harness does with conditions and processes, once: wait for a condition with a
deadline (never a blind sleep), stop a process cleanly then hard, read the end of a log."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, poll: float,
             error: type[Exception] = TimeoutError,
             detail: Callable[[], str] | None = None) -> T:
    """Poll PREDICATE until it returns something truthy, which is returned; ERROR naming
    WHAT (and DETAIL, e.g. logs) after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}"
                        + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(poll)


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM (a clean stop), SIGKILL after TIMEOUT seconds; nothing if it has ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def log_tail(path: Path, lines: int) -> str:
    """The last LINES lines of the file at PATH ('' when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
