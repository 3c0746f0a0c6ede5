"""Rerun one seed, or sweep many: `python -m tests.sim --seed N [-v]`, `--seeds A:B`.

A sweep prints, beside the failures, what the seeds injected in all (crashes, torn and
dropped writes, EIO, ENOSPC, lost disks, transfers, membership changes, ...)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter

from tests.sim.sim import BeyondTolerance, Simulation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", help="a range A:B of seeds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    # The store and the driver log what they repair; a sweep would drown in it.
    logging.getLogger("binkeeper").setLevel(logging.ERROR)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    elif args.seeds:
        start, stop = (int(x) for x in args.seeds.split(":"))
        seeds = range(start, stop)
    else:
        parser.error("give --seed or --seeds")
    failures = 0
    injected: Counter[str] = Counter()
    started = time.perf_counter()
    for seed in seeds:
        sim = Simulation(seed, verbose=args.verbose)
        try:
            sim.run()
        except BeyondTolerance as exc:
            sim.counters.beyond_tolerance += 1
            if args.verbose:
                print(f"beyond the tolerated faults (safe, not live): {exc}")
        except AssertionError as exc:
            failures += 1
            print(exc, file=sys.stderr)
        injected.update(vars(sim.counters))
        for node in sim.nodes.values():
            injected.update({f"disk.{k}": v for k, v in vars(node.disk.stats).items()})
    elapsed = time.perf_counter() - started
    print(f"{len(seeds)} seed(s), {failures} failure(s), {elapsed:.1f} s")
    if len(seeds) > 1:
        print("injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
