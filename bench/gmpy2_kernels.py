#!/usr/bin/env python3
"""GMP's side of `worker/examples/kernel_times.rs`: gmpy2.fib(n) and its
conversion to decimal and hex, in-process, best of several runs.

    python3 bench/gmpy2_kernels.py 1000000 10000000
"""

import sys
import time

import gmpy2


def best(reps, f):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


for n in map(int, sys.argv[1:]):
    reps = 200 if n < 10**5 else 50 if n < 10**6 else 10 if n < 10**7 else 3
    value = gmpy2.fib(n)
    fib = best(reps, lambda: gmpy2.fib(n))
    decimal = best(min(reps, 5), lambda: value.digits(10))
    hexa = best(min(reps, 5), lambda: value.digits(16))
    print(f"F({n}): gmpy2 {fib * 1e3:.3f} ms, decimal {decimal * 1e3:.3f} ms, hex {hexa * 1e3:.3f} ms")
