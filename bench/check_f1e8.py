#!/usr/bin/env python3
"""Checks `fibpool run` output for F(10^8) in decimal against computations
that share nothing with fibpool or GMP: the length and the first 20 digits
from log10(phi^n / sqrt 5) at 60 digits of precision (Python's decimal
module), the last 30 digits from fast doubling modulo 10^30.

    fibpool run --max-index 100000000 100000000 > f.txt
    python3 bench/check_f1e8.py f.txt
"""

import sys
from decimal import Decimal, getcontext

N = 100_000_000


def fib_mod(k, m):
    """(F(k), F(k+1)) modulo m, by fast doubling."""
    if k == 0:
        return (0, 1)
    a, b = fib_mod(k >> 1, m)
    c = a * ((2 * b - a) % m) % m
    d = (a * a + b * b) % m
    return (d, (c + d) % m) if k & 1 else (c, d)


def main():
    line = open(sys.argv[1], "rb").read()
    index, digits = line.rstrip(b"\n").split(b"\t")
    if int(index) != N:
        sys.exit(f"check_f1e8: the line is for index {int(index)}, not {N}")
    last = str(fib_mod(N, 10**30)[0]).zfill(30)
    getcontext().prec = 60
    phi = (1 + Decimal(5).sqrt()) / 2
    lg = Decimal(N) * phi.log10() - Decimal(5).log10() / 2
    length = int(lg) + 1
    first = str(Decimal(10) ** (lg - int(lg))).replace(".", "")[:20]
    got = (len(digits), digits[:20].decode(), digits[-30:].decode())
    want = (length, first, last)
    print(f"length {got[0]}, first {got[1]}, last {got[2]}")
    if got != want:
        sys.exit(f"check_f1e8: expected length {length}, first {first}, last {last}")
    print("F(10^8) is correct")


if __name__ == "__main__":
    main()
