"""Rerun one seed, or sweep many: `python -m tests.sim --seed N [-v]`, `--seeds A:B`."""

from __future__ import annotations

import argparse
import sys
import time

from tests.sim.sim import run_seed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", help="a range A:B of seeds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    elif args.seeds:
        start, stop = (int(x) for x in args.seeds.split(":"))
        seeds = range(start, stop)
    else:
        parser.error("give --seed or --seeds")
    failures = 0
    started = time.perf_counter()
    for seed in seeds:
        try:
            run_seed(seed, verbose=args.verbose)
        except AssertionError as exc:
            failures += 1
            print(exc, file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"{len(seeds)} seed(s), {failures} failure(s), {elapsed:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
