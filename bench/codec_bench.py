"""Peer codec encode+decode throughput for 64 KiB record batches, with and without zstd."""

from __future__ import annotations

import argparse
import os
import random
import time

from agent import wire
from agent.wire import peer_pb2 as pb
from bench.payloads import row_event_like
from bench.report import markdown_table, record

BATCH = 64 << 10


def batches(kind: str, count: int, record_size: int) -> list[pb.Envelope]:
    rng = random.Random(7)
    out = []
    lsn = 0
    for _ in range(count):
        records = []
        for _ in range(BATCH // record_size):
            payload = (
                row_event_like(rng, record_size)
                if kind == "binlog-like"
                else os.urandom(record_size)
            )
            records.append(pb.Record(lsn=lsn, term=2, payload=payload, gtid=f"0-1-{lsn}"))
            lsn += record_size
        out.append(
            pb.Envelope(
                append_request=pb.AppendRequest(
                    term=2,
                    leader_id="a1",
                    prev_lsn=lsn,
                    prev_term=2,
                    commit_lsn=lsn,
                    records=records,
                )
            )
        )
    return out


def run(
    envelopes: list[pb.Envelope], compress: bool, level: int, seconds: float
) -> tuple[float, float]:
    payload_bytes = sum(sum(len(r.payload) for r in e.append_request.records) for e in envelopes)
    encoder = wire.FrameEncoder(compress=compress, level=level)
    decoder = wire.FrameDecoder()
    rounds = 0
    wire_bytes = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for envelope in envelopes:
            frame = encoder.encode(envelope)
            wire_bytes += len(frame)
            decoder.receive_data(frame)
            decoder.next_message()
        rounds += 1
    elapsed = time.perf_counter() - start
    return rounds * payload_bytes / elapsed / 1e6, wire_bytes / (rounds * payload_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = []
    for kind in ("binlog-like", "random"):
        for record_size in (512, 8192):
            envelopes = batches(kind, 32, record_size)
            for compress, level in ((False, 0), (True, 1), (True, 3)):
                mb_s, ratio = run(envelopes, compress, level, args.seconds)
                rows.append(
                    [
                        kind,
                        f"{record_size} B",
                        f"zstd {level}" if compress else "none",
                        f"{mb_s:.0f}",
                        f"{ratio:.3f}",
                    ]
                )
                print(rows[-1], flush=True)
    table = markdown_table(
        [
            "payload",
            "records of",
            "compression",
            "encode+decode MB/s (payload; target ≥ 200 with zstd)",
            "wire bytes / payload bytes",
        ],
        rows,
    )
    print(table)
    if not args.no_record:
        record(
            "codec",
            "Peer codec: 64 KiB AppendRequest batches, encode+decode",
            ".venv/bin/python -m bench.codec_bench",
            table + "\n\nOne core; streaming zstd context per connection, flushed per frame; "
            "binlog-like payloads from bench/payloads.py.",
        )


if __name__ == "__main__":
    main()
