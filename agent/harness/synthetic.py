"""A synthetic record source for tests and benchmarks (not part of the product).

It feeds the append path the MariaDB source uses — `TimelineNode.propose` — with unique
payloads of a set size, while this agent is the leader, and keeps commit latency figures.
Run an agent with it as `python -m agent.harness.synthetic --config FILE --synthetic-load
RATE:SIZE[:CONCURRENCY]`: the same agent as `binkeeper run`, plus the load, its figures in
`/v1/status` (`synthetic`) and `POST /v1/synthetic/stop`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import consensus
from agent.config import Config, ConfigError, load_config
from agent.node.loop import CommitOutcomeUnknown, TimelineNode
from agent.process import Agent, run_agent, setup_logging

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
            except consensus.NotLeader:
                continue
            except CommitOutcomeUnknown:
                stats.unknown += 1
                continue
            stats.record(time.perf_counter() - started, len(payload))

    async with trio.open_nursery() as nursery:
        for _ in range(spec.concurrency):
            nursery.start_soon(worker)


class LoadedAgent(Agent):
    """`binkeeper run`'s agent plus a synthetic load while it leads."""

    def __init__(self, config: Config, spec: LoadSpec) -> None:
        super().__init__(config)
        self.spec = spec
        self.stats = LoadStats()
        self._scope = trio.CancelScope()

    def extra_tasks(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._load)

    async def _load(self) -> None:
        assert self.node is not None
        with self._scope:
            await run_load(self.node, self.spec, self.stats)

    def extra_routes(self) -> list[Route]:
        async def stop(_request: Request) -> JSONResponse:
            self._scope.cancel()
            return JSONResponse({"stopped": True})

        return [Route("/v1/synthetic/stop", stop, methods=["POST"])]

    def extra_timeline_status(self) -> dict[str, Any]:
        return {"synthetic": self.stats.summary()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.harness.synthetic")
    parser.add_argument("--config", required=True)
    parser.add_argument("--synthetic-load", required=True, help="RATE:SIZE[:CONCURRENCY]")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config = load_config(args.config)
        spec = LoadSpec.parse(args.synthetic_load)
    except (ConfigError, ValueError) as exc:
        print(f"synthetic agent: {exc}", file=sys.stderr)
        return 2
    return run_agent(LoadedAgent(config, spec), "synthetic agent")


if __name__ == "__main__":
    sys.exit(main())
