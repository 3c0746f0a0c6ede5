"""`./run bench`: every benchmark, one after the other; each rewrites its BENCHMARKS.md section."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    "bench.walstore_bench",
    "bench.codec_bench",
    "bench.proto_json_bench",
    "bench.binlog_compression_bench",
    "bench.quorum_bench",
    "bench.semisync_bench",
    "bench.replica_catchup_bench",
    "bench.failover_bench",
]


def main() -> int:
    wanted = sys.argv[1:] or BENCHMARKS
    failed = []
    for module in wanted:
        name = module if module.startswith("bench.") else f"bench.{module}"
        print(f"=== {name}", flush=True)
        if subprocess.run([sys.executable, "-m", name]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
