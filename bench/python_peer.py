#!/usr/bin/env python3
"""The Python peer of `fibpool bench --vs-python`: the seed's fib_single on a
ProcessPoolExecutor, with the seed's chunking (lists of 100 indices through
fib_chunk), the values returned to the parent as Python ints.

    python3 bench/python_peer.py --workers 2 --input indices.txt

The input holds the indices as plain integers separated by whitespace or
commas (fibpool bench writes it). Prints the count and the total number of
bits of the values, so the work cannot be skipped.
"""

import argparse
from concurrent.futures import ProcessPoolExecutor

CHUNK = 100


def fib_single(n):
    if n <= 1:
        return n
    a, b = 0, 1
    for _ in range(2, n + 1):
        a, b = b, a + b
    return b


def fib_chunk(chunk):
    return [fib_single(n) for n in chunk]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--input", required=True)
    args = parser.parse_args()
    with open(args.input) as f:
        indices = [int(t) for t in f.read().replace(",", " ").split()]
    chunks = [indices[i:i + CHUNK] for i in range(0, len(indices), CHUNK)]
    with ProcessPoolExecutor(max_workers=args.workers) as executor:
        values = [v for chunk in executor.map(fib_chunk, chunks) for v in chunk]
    print(len(values), sum(v.bit_length() for v in values))


if __name__ == "__main__":
    main()
