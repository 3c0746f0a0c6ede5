"""A synthetic record source for tests and benchmarks (not a production switch).

It feeds the same append path the MariaDB tailer will use — `TimelineNode.propose` — with
unique payloads of a set size, while this agent is the leader, and keeps commit latency
figures. Enabled by the hidden `binkeeper run --synthetic-load RATE:SIZE[:CONCURRENCY]`.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from agent.timeline import CommitOutcomeUnknown, NotLeaderError, TimelineNode

log = logging.getLogger("binkeeper.synthetic")


@dataclass(frozen=True)
class LoadSpec:
    rate: float  # proposals per second in all; 0 = as fast as the quorum commits
    size: int
    concurrency: int = 1

    @classmethod
    def parse(cls, text: str) -> LoadSpec:
        parts = text.split(":")
        if not 2 <= len(parts) <= 3:
            raise ValueError(f"--synthetic-load: expected RATE:SIZE[:CONCURRENCY], got {text!r}")
        rate, size = float(parts[0]), int(parts[1])
        concurrency = int(parts[2]) if len(parts) == 3 else 1
        if rate < 0 or size < 16 or concurrency < 1:
            raise ValueError(f"--synthetic-load: bad values in {text!r}")
        return cls(rate, size, concurrency)


@dataclass
class LoadStats:
    proposed: int = 0
    committed: int = 0
    unknown: int = 0
    committed_bytes: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, bounded ring

    def record(self, latency: float, size: int) -> None:
        self.committed += 1
        self.committed_bytes += size
        if len(self.latencies) >= 100_000:
            del self.latencies[:50_000]
        self.latencies.append(latency)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

        return {
            "proposed": self.proposed,
            "committed": self.committed,
            "unknown": self.unknown,
            "committed_bytes": self.committed_bytes,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        }


async def run_load(node: TimelineNode, spec: LoadSpec, stats: LoadStats) -> None:
    counter = itertools.count()
    prefix = os.urandom(4).hex().encode()
    interval = spec.concurrency / spec.rate if spec.rate > 0 else 0.0

    async def worker() -> None:
        next_at = trio.current_time()
        while True:
            if interval:
                next_at = max(next_at + interval, trio.current_time() - 1.0)
                await trio.sleep_until(next_at)
            if node.role != "leader":
                await node.wait_role_change()
                continue
            seq = next(counter)
            head = b"synthetic %s %d " % (prefix, seq)
            payload = head + b"x" * max(0, spec.size - len(head))
            stats.proposed += 1
            started = time.perf_counter()
            try:
                await node.propose(payload)
            except NotLeaderError:
                continue
            except CommitOutcomeUnknown:
                stats.unknown += 1
                continue
            stats.record(time.perf_counter() - started, len(payload))

    async with trio.open_nursery() as nursery:
        for _ in range(spec.concurrency):
            nursery.start_soon(worker)
