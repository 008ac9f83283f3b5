#!/usr/bin/env python3
"""Chaos run: `fibpool run` with 2 workers while a random worker is killed
with SIGKILL every second, then an independent check of every value.

    python3 bench/chaos.py --fibpool target/x86_64-unknown-linux-gnu/release/fibpool \\
        [--count 6000] [--near 2000000] [--kill-every 1.0] [--out /tmp/fibpool-chaos]

The batch is --count distinct indices spaced 3 apart from --near (about a
minute of work on two cores at the defaults), one per chunk, printed in hex.
Each output line is checked without fibpool: the indices in input order, the
number of hex digits of F(n), and F(n) modulo two primes (fast doubling in
Python). Prints the kills sent and the run report's counts; exits non-zero
if anything is missing, extra, out of order or wrong.
"""

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

PRIMES = (2**61 - 1, 1_000_000_007)


def fib_mod(n, p):
    """F(n) mod p by fast doubling."""
    a, b = 0, 1  # F(k), F(k+1)
    for bit in bin(n)[2:]:
        c = a * ((2 * b - a) % p) % p
        d = (a * a + b * b) % p
        a, b = (d, (c + d) % p) if bit == "1" else (c, d)
    return a


def hex_digits(n):
    """Hex digits of F(n), n >= 3: F(n) is the nearest integer to phi^n / sqrt(5)."""
    phi = (1 + math.sqrt(5)) / 2
    return math.floor(n * math.log(phi, 16) - math.log(math.sqrt(5), 16)) + 1


def workers_of(pid):
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return found


def kill_child_of(parent, pid):
    """SIGKILL `pid` only if it is still a child of `parent`: the pidfd pins
    the process, so a pid reused meanwhile is never killed."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
        if ppid != parent:
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except (FileNotFoundError, ProcessLookupError):
        return False
    finally:
        os.close(fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fibpool", required=True)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--near", type=int, default=2_000_000)
    parser.add_argument("--kill-every", type=float, default=1.0)
    parser.add_argument("--out", default="/tmp/fibpool-chaos")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    indices = [args.near + 3 * i for i in range(args.count)]
    random.Random(7).shuffle(indices)
    index_file = os.path.join(args.out, "indices.txt")
    with open(index_file, "w") as f:
        f.write("\n".join(map(str, indices)) + "\n")
    output_file = os.path.join(args.out, "values.hex")
    report_file = os.path.join(args.out, "report.json")

    command = [args.fibpool, "run", "-w", "2", "-c", "1", "--output", "hex",
               "--input", index_file, "--report", report_file]
    print("running:", " ".join(command), flush=True)
    rng = random.Random(11)
    kills = 0
    start = time.monotonic()
    with open(output_file, "wb") as out:
        coordinator = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE)
        next_kill = start + args.kill_every
        while coordinator.poll() is None:
            time.sleep(0.05)
            if time.monotonic() < next_kill:
                continue
            next_kill += args.kill_every
            alive = workers_of(coordinator.pid)
            if alive and kill_child_of(coordinator.pid, rng.choice(alive)):
                kills += 1
        stderr = coordinator.stderr.read().decode(errors="replace")
    wall = time.monotonic() - start
    print(f"fibpool exited with {coordinator.returncode} after {wall:.1f} s; {kills} workers killed")
    sys.stderr.write(stderr)
    if coordinator.returncode != 0:
        sys.exit("FAILED: fibpool did not succeed")

    checked = 0
    problems = 0
    with open(output_file, "rb") as f:
        for expected, line in zip(indices, f):
            n_text, value = line.rstrip(b"\n").split(b"\t")
            n = int(n_text)
            number = int(value, 16)
            ok = (n == expected
                  and len(value) == hex_digits(n)
                  and all(number % p == fib_mod(n, p) for p in PRIMES))
            if not ok:
                problems += 1
                if problems <= 5:
                    print(f"wrong line {checked + 1}: index {n}, expected index {expected}")
            checked += 1
        extra = sum(1 for _ in f)
    if checked != len(indices) or extra:
        problems += 1
        print(f"expected {len(indices)} lines, got {checked + extra}")

    with open(report_file) as f:
        report = json.load(f)
    print(f"checked {checked} values: {problems} problems")
    print(f"report: wall_seconds {report['wall_seconds']:.1f}, worker_restarts {report['worker_restarts']}, "
          f"retried_chunks {report['retried_chunks']}, chunks {report['chunks']}, tasks {report['tasks']}")
    if problems:
        sys.exit("FAILED")
    print("OK: every value present once, in order, and right")


if __name__ == "__main__":
    main()
