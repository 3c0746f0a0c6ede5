"""Where a transaction's time goes on the leader, for `/v1/status`: the last few thousand
transactions' stage durations, summarized as p50/p99 in milliseconds when asked."""

from __future__ import annotations

import collections
from typing import Any

WINDOW = 4096


class StageLatencies:
    def __init__(self, stages: tuple[str, ...]) -> None:
        self._samples = {stage: collections.deque[float](maxlen=WINDOW) for stage in stages}

    def record(self, stage: str, seconds: float) -> None:
        self._samples[stage].append(seconds)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stage, samples in self._samples.items():
            if not samples:
                continue
            ordered = sorted(samples)
            out[stage] = {
                "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
                "p99_ms": round(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] * 1000,
                                3),
                "samples": len(ordered),
            }
        return out
