#!/usr/bin/env python3
"""Python's side of `fibpool startup`: what ProcessPoolExecutor costs to create
N workers, run one tiny task on each and shut down, for each start method.

    python3 bench/python_startup.py [--workers 2] [--rounds 20] [--warmup 3] [--json FILE]

Times the same round as the `round` row of `fibpool startup`: from creating the
executor until `shutdown(wait=True)` returns. Each tiny task waits on a barrier
shared by all workers, so every worker runs exactly one (without it, one early
worker can take every task before the others have started); the output counts
the distinct workers that ran tasks, from the pids they return.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor


_barrier = None


def _set_barrier(barrier):
    global _barrier
    _barrier = barrier


def tiny(_):
    _barrier.wait(timeout=60)
    return os.getpid()


def one_round(method, workers):
    context = multiprocessing.get_context(method)
    start = time.perf_counter()
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_set_barrier,
        initargs=(context.Barrier(workers),),
    )
    pids = set(executor.map(tiny, range(workers)))
    executor.shutdown(wait=True)
    return time.perf_counter() - start, len(pids)


def quantile(sorted_samples, q):
    rank = q * (len(sorted_samples) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_samples) - 1)
    return sorted_samples[low] + (sorted_samples[high] - sorted_samples[low]) * (rank - low)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    results = []
    print(f"Python {sys.version.split()[0]}, ProcessPoolExecutor, {args.workers} workers, "
          f"{args.rounds} rounds after {args.warmup} warm-up")
    print(f"  {'start method':<14}{'min':>10}{'median':>10}{'p90':>10}{'max':>10}  distinct workers used")
    for method in multiprocessing.get_all_start_methods():
        samples, used = [], []
        for i in range(args.warmup + args.rounds):
            seconds, distinct = one_round(method, args.workers)
            if i >= args.warmup:
                samples.append(seconds)
                used.append(distinct)
        s = sorted(samples)
        row = {
            "start_method": method,
            "workers": args.workers,
            "rounds": args.rounds,
            "min_seconds": s[0],
            "median_seconds": statistics.median(s),
            "p90_seconds": quantile(s, 0.9),
            "max_seconds": s[-1],
            "distinct_workers_median": statistics.median(used),
        }
        results.append(row)
        print(f"  {method:<14}" + "".join(
            f"{row[k] * 1e3:>8.2f}ms" for k in ("min_seconds", "median_seconds", "p90_seconds", "max_seconds")
        ) + f"  {row['distinct_workers_median']:g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
