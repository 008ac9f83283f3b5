#!/usr/bin/env python3
"""The gmpy2 peer of `fibpool bench --vs-gmpy2`: GMP's Fibonacci
(`gmpy2.fib`, GMP's mpz_fib_ui) on a ProcessPoolExecutor, each worker
formatting its values in hex, the parent writing them as `fibpool run
--output hex` does: one `index<TAB>hex` line per index, in input order.

    python3 bench/gmpy2_peer.py --workers 2 --input indices.txt

The input holds the indices as plain integers separated by whitespace or
commas (fibpool bench writes it). Needs gmpy2 (`pip install gmpy2`).
"""

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor

import gmpy2


def fib_hex(chunk):
    return [b"%d\t%s\n" % (n, format(gmpy2.fib(n), "x").encode()) for n in chunk]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--input", required=True)
    args = parser.parse_args()
    with open(args.input) as f:
        indices = [int(t) for t in f.read().replace(",", " ").split()]
    # Four chunks per worker, at most 100 indices each: balanced when the
    # values are big, few round trips when they are small.
    size = max(1, min(100, -(-len(indices) // (4 * args.workers))))
    chunks = [indices[i:i + size] for i in range(0, len(indices), size)]
    out = sys.stdout.buffer
    with ProcessPoolExecutor(max_workers=args.workers) as executor:
        for lines in executor.map(fib_hex, chunks):
            out.writelines(lines)
    out.flush()


if __name__ == "__main__":
    main()
