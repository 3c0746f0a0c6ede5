"""Synthetic binlog-like payloads for codec benchmarks (the real-binlog figures come from
bench.binlog_compression_bench)."""

from __future__ import annotations

import random
import struct

from agent.binlog.events import HEADER


def row_event_like(rng: random.Random, size: int) -> bytes:
    """Bytes shaped like a ROW event batch: headers, increasing ids, repeated column text."""
    out = bytearray()
    row_id = rng.randrange(1 << 40)
    words = [b"pending", b"shipped", b"paid", b"cancelled", b"customer-", b"2026-11-24 "]
    while len(out) < size:
        row_id += rng.randrange(1, 4)
        out += HEADER.pack(rng.randrange(1 << 31), 0x1E, 1, 0, 0, 0)  # event header
        out += struct.pack("<QQ", row_id, rng.randrange(1000))
        out += rng.choice(words) + str(rng.randrange(100000)).encode()
        out += struct.pack("<d", rng.random() * 1000)
        out += rng.randbytes(8)
    return bytes(out[:size])
