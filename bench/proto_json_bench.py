"""The same peer messages as protobuf and as JSON (payloads base64): size and speed."""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict

from agent.wire import peer_pb2 as pb
from bench.payloads import row_event_like
from bench.report import markdown_table, record


def messages() -> dict[str, pb.Envelope]:
    rng = random.Random(3)
    records = [pb.Record(lsn=1_000_000 + i * 512, term=7, payload=row_event_like(rng, 512),
                         gtid=f"0-1-{10_000 + i}") for i in range(128)]
    return {
        "vote request": pb.Envelope(vote_request=pb.VoteRequest(
            term=7, candidate_id="a2", last_log_term=6, last_lsn=123_456_789, pre_vote=True)),
        "heartbeat": pb.Envelope(heartbeat=pb.Heartbeat(term=7, leader_id="a1",
                                                        commit_lsn=123_456_789)),
        "append response": pb.Envelope(append_response=pb.AppendResponse(
            term=7, node_id="a3", success=True, flush_lsn=123_456_789, last_lsn=123_456_789)),
        "64 KiB append batch": pb.Envelope(append_request=pb.AppendRequest(
            term=7, leader_id="a1", prev_lsn=1_000_000, prev_term=7, commit_lsn=999_000,
            records=records)),
    }


def as_json_dict(envelope: pb.Envelope) -> dict[str, Any]:
    # protobuf's own JSON mapping: bytes become base64, 64-bit ints become strings
    return MessageToDict(envelope, preserving_proto_field_name=True)


def per_second(work: Callable[[], object], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            work()
        count += 100
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = []
    for name, envelope in messages().items():
        proto_bytes = envelope.SerializeToString()
        as_dict = as_json_dict(envelope)
        json_bytes = json.dumps(as_dict, separators=(",", ":")).encode()
        proto_rate = per_second(
            lambda e=envelope: pb.Envelope.FromString(e.SerializeToString()), args.seconds)
        json_rate = per_second(
            lambda d=as_dict: json.loads(json.dumps(d, separators=(",", ":"))), args.seconds)
        rows.append([name, len(proto_bytes), len(json_bytes),
                     f"{len(json_bytes) / len(proto_bytes):.2f}",
                     f"{proto_rate:,.0f}", f"{json_rate:,.0f}", f"{proto_rate / json_rate:.1f}"])
        print(rows[-1], flush=True)
    table = markdown_table(
        ["message", "protobuf bytes", "JSON bytes", "JSON/protobuf size",
         "protobuf encode+decode /s", "JSON encode+decode /s", "speed-up"], rows)
    print(table)
    if not args.no_record:
        record("proto_json", "Peer messages: protobuf vs JSON",
               ".venv/bin/python -m bench.proto_json_bench",
               table + "\n\nJSON is protobuf's canonical JSON mapping (bytes as base64) "
               "serialized with the standard json module; the JSON speed excludes building the "
               "dict, which favours JSON.")


if __name__ == "__main__":
    main()
