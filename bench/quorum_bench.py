"""Quorum commit throughput and latency of 3 real agents on loopback, fsync on.

Each case starts 3 agent processes with the synthetic source (`python -m
agent.harness.synthetic`: `binkeeper run`'s agent plus a load on the same append path the
MariaDB source uses) on the leader, and reads the leader's own commit-latency figures.
Floors, measured in the same run on the same disk: three plain processes doing
append+fdatasync of the same record batches at once, one fdatasync's latency, and the
loopback TCP round trip.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.floors import fdatasync_latencies, loopback_rtt, median, percentile
from bench.report import markdown_table, record
from tests.support.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent


def _floor_writer(args: tuple[str, int, int, float]) -> int:
    directory, size, batch, seconds = args
    path = Path(directory) / f"floor-{os.getpid()}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    data = os.urandom(size * batch)
    written = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            os.write(fd, data)
            os.fdatasync(fd)
            written += len(data)
    finally:
        os.close(fd)
        path.unlink()
    return written


def floor_throughput(directory: Path, size: int, batch: int, seconds: float) -> float:
    """MB/s one of three concurrent append+fdatasync processes achieves (what each agent faces)."""
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_floor_writer, [(str(directory), size, batch, seconds)] * 3)
    return min(results) / seconds / 1e6


def wait_leader(cluster: Cluster, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = cluster.leader()
        if leader:
            return leader
        time.sleep(0.1)
    raise RuntimeError("no leader\n" + cluster.logs())


def run_case(
    root: Path, size: int, rate: float, concurrency: int, seconds: float
) -> dict[str, Any]:
    cluster = Cluster(
        root, 3, extra_args=["--synthetic-load", f"{rate}:{size}:{concurrency}"], use_proxies=False
    )
    cluster.start()
    try:
        leader = wait_leader(cluster)
        time.sleep(1.0)  # warm-up: let connections and the first batches settle
        agent = cluster.agents[leader]
        first = agent.timeline()["synthetic"]  # type: ignore[index]
        started = time.monotonic()
        time.sleep(seconds)
        last = agent.timeline()["synthetic"]  # type: ignore[index]
        elapsed = time.monotonic() - started
        if cluster.leader() != leader:
            raise RuntimeError("leader changed during the measurement\n" + cluster.logs())
        return {
            "records_s": (last["committed"] - first["committed"]) / elapsed,
            "mb_s": (last["committed_bytes"] - first["committed_bytes"]) / elapsed / 1e6,
            "p50_ms": last["p50_ms"],
            "p99_ms": last["p99_ms"],
        }
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmpdir = Path(tmp)
        sync = fdatasync_latencies(tmpdir, 4096)
        rtt = loopback_rtt()
        sync_p50, rtt_p50 = median(sync) * 1000, median(rtt) * 1000
        print(
            f"floors: fdatasync p50 {sync_p50:.3f} ms p99 {percentile(sync, 0.99) * 1000:.3f} ms, "
            f"loopback RTT p50 {rtt_p50:.3f} ms"
        )
        rows = []
        for size in (200, 8192):
            for label, rate, concurrency in (("low", 20.0, 1), ("saturating", 0.0, 64)):
                case_dir = tmpdir / f"case-{size}-{label}"
                case_dir.mkdir()
                result = run_case(case_dir, size, rate, concurrency, args.seconds)
                floor = floor_throughput(tmpdir, size, concurrency, min(args.seconds, 4.0))
                ratio = result["mb_s"] / floor if label == "saturating" else None
                latency_target = 2 * (sync_p50 + rtt_p50)
                row = [
                    f"{size} B",
                    label,
                    f"{result['records_s']:.0f}",
                    f"{result['mb_s']:.2f}",
                    f"{floor:.2f}",
                    f"{ratio:.2f}" if ratio is not None else "-",
                    result["p50_ms"],
                    result["p99_ms"],
                    f"{latency_target:.2f}" if label == "low" else "-",
                ]
                print(row)
                rows.append(row)
    table = markdown_table(
        [
            "record",
            "load",
            "records/s",
            "MB/s",
            "floor MB/s (3 procs append+fdatasync)",
            "ratio (target ≥ 0.5)",
            "p50 ms",
            "p99 ms",
            "p50 target ms (2×(fsync+RTT))",
        ],
        rows,
    )
    notes = (
        f"Floors in this run: fdatasync p50 {sync_p50:.3f} ms, loopback RTT p50 {rtt_p50:.3f} ms. "
        "Low load: 20 records/s from one proposer. Saturating: 64 concurrent proposers, "
        "no rate limit. Figures are the leader's own propose-to-commit timings."
    )
    print(table)
    if not args.no_record:
        record(
            "quorum",
            "Quorum commit: 3 agents on loopback, fsync on",
            ".venv/bin/python -m bench.quorum_bench",
            table + "\n\n" + notes,
        )


if __name__ == "__main__":
    main()
