"""Free loopback ports for throwaway servers and agents.

The kernel's "port 0" hands out ports from the ephemeral range, the same range it takes
the local ports of outgoing connections from: between the moment a test picks a port and
the moment the server it starts binds it, any client connection may take it ("Address
already in use" — a founding agent that never starts leaves a new group without a
leader). So ports come from below the ephemeral range, at random, each handed out once
per process, and checked bindable.
"""

from __future__ import annotations

import random
import socket

_FIRST, _LAST = 12000, 32000  # below Linux's default ephemeral range (32768-60999)
_handed_out: set[int] = set()


def free_port() -> int:
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(_FIRST, _LAST)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_FIRST}-{_LAST}")
