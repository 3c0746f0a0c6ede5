"""WAL store append+sync throughput under group commit, beside the raw floor.

The floor writes the very same bytes (the record frames) with plain os.write + os.fdatasync
in the same batches, in the same directory, in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import trio

from bench.report import markdown_table, record
from consensus import Entry, RecordKind
from walstore import WalStore
from walstore._record import encode

REPO = Path(__file__).resolve().parent.parent


def floor(directory: Path, frames: bytes, seconds: float) -> tuple[float, int]:
    path = directory / "floor.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    batches = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            os.write(fd, frames)
            os.fdatasync(fd)
            batches += 1
    finally:
        os.close(fd)
        path.unlink()
    return time.perf_counter() - start, batches


def walstore_blocking(
    directory: Path, payload: bytes, batch: int, seconds: float
) -> tuple[float, int]:
    store = WalStore.open(directory / "wal")
    batches = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            for _ in range(batch):
                store.append(1, payload)
            store.flush()
            batches += 1
    finally:
        store.close()
    return time.perf_counter() - start, batches


def walstore_concurrent(
    directory: Path, payload: bytes, tasks: int, seconds: float
) -> tuple[float, int]:
    """TASKS trio tasks each append one record and await sync(), like concurrent commits."""
    store = WalStore.open(directory / "wal-async")
    records = 0

    async def writer(deadline: float) -> None:
        nonlocal records
        while trio.current_time() < deadline:
            store.append(1, payload)
            await store.sync()
            records += 1

    async def main() -> float:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(writer, start + seconds)
        return trio.current_time() - start

    try:
        elapsed = trio.run(main)
    finally:
        store.close()
    return elapsed, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size, batch in ((200, 64), (8192, 16)):
        payload = os.urandom(size)
        frame = encode(Entry(0, 1, RecordKind.DATA, payload))
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            directory = Path(tmp)
            # Alternate short rounds of floor and walstore, so drift in the disk's speed
            # during the run weighs on both alike.
            f_elapsed = w_elapsed = 0.0
            f_batches = w_batches = 0
            rounds = max(1, int(args.seconds))
            for round_ in range(rounds):
                elapsed, count = floor(directory, frame * batch, args.seconds / rounds)
                f_elapsed, f_batches = f_elapsed + elapsed, f_batches + count
                sub = directory / f"r{round_}"
                sub.mkdir()
                elapsed, count = walstore_blocking(sub, payload, batch, args.seconds / rounds)
                w_elapsed, w_batches = w_elapsed + elapsed, w_batches + count
            c_elapsed, c_records = walstore_concurrent(directory, payload, batch, args.seconds)
        floor_mb = f_batches * batch * len(frame) / f_elapsed / 1e6
        for label, elapsed, count in (
            (f"walstore, batches of {batch}", w_elapsed, w_batches * batch),
            (f"walstore, {batch} concurrent tasks", c_elapsed, c_records),
        ):
            mb = count * len(frame) / elapsed / 1e6
            rows.append(
                [
                    f"{size} B",
                    label,
                    f"{count / elapsed:,.0f}",
                    f"{mb:.2f}",
                    f"{floor_mb:.2f}",
                    f"{mb / floor_mb:.2f}",
                ]
            )
        rows.append(
            [
                f"{size} B",
                f"floor: os.write+fdatasync, batches of {batch}",
                f"{f_batches * batch / f_elapsed:,.0f}",
                f"{floor_mb:.2f}",
                "-",
                "1.00",
            ]
        )
    table = markdown_table(
        ["record", "writer", "records/s", "MB/s (frames)", "floor MB/s", "ratio (target ≥ 0.7)"],
        rows,
    )
    print(table)
    if not args.no_record:
        record(
            "walstore",
            "WAL store append+sync (group commit) vs raw fdatasync floor",
            ".venv/bin/python -m bench.walstore_bench",
            table,
        )


if __name__ == "__main__":
    main()
