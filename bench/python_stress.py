#!/usr/bin/env python3
"""Python's side of `fibpool stress --vs-python`: the same pingpong and stream
patterns over the book chapter's two mechanisms, multiprocessing.Pipe and
multiprocessing.Queue, between this process and one child.

    python3 bench/python_stress.py --patterns pingpong,stream --sizes 8,1048576
        (--duration S | --count K) [--corrupt-every N] --json FILE

- pingpong: one message in flight, the payload echoed back (round-trip
  latency; payload bytes count both ways).
- stream: a window of messages in flight (as fibpool's: 4 MiB of payload,
  between 2 and 64 messages), each acknowledged with its sequence number and
  whether its CRC-32 matched (throughput with backpressure; payload bytes
  count one way).

Each message is (sequence number, CRC-32, payload), pickled by send()/put()
as the chapter's examples do. Every answer is checked: an answer out of turn
means the messages before it were lost, one for a message already answered
is a duplicate, a wrong payload or verdict is corrupt. `--corrupt-every N`
makes the child damage every Nth payload, so that the check itself can be
tested. The JSON is a list of rows, one per mechanism, pattern and size.
"""

import argparse
import json
import multiprocessing
import sys
import time
import zlib
from collections import deque

MAX_WINDOW = 64
WINDOW_BYTES = 4 << 20
# As fibpool's report gives them (coordinator/src/report/mod.rs, PERCENTILES).
PERCENTILES = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]


def damage(payload, seq, corrupt_every):
    if corrupt_every and seq % corrupt_every == corrupt_every - 1 and payload:
        return bytes([payload[0] ^ 0xFF]) + payload[1:]
    return payload


def child(receive, send, corrupt_every):
    """Answers until it gets None."""
    while True:
        message = receive()
        if message is None:
            return
        reply, seq, crc, payload = message
        payload = damage(payload, seq, corrupt_every)
        if reply == "echo":
            send((seq, payload))
        else:
            send((seq, zlib.crc32(payload) == crc))


class Channel:
    """One mechanism's two directions, and the child at the other end."""

    def __init__(self, mechanism, corrupt_every):
        if mechanism == "Pipe":
            ours, theirs = multiprocessing.Pipe()
            self.send, self.receive = ours.send, ours.recv
            args = (theirs.recv, theirs.send, corrupt_every)
            self._keep = (ours, theirs)
        else:
            to_child, from_child = multiprocessing.Queue(), multiprocessing.Queue()
            self.send, self.receive = to_child.put, from_child.get
            args = (to_child.get, from_child.put, corrupt_every)
            self._keep = (to_child, from_child)
        self.process = multiprocessing.Process(target=child, args=args, daemon=True)
        self.process.start()

    def close(self):
        self.send(None)
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.kill()
            raise RuntimeError("the child did not stop")


def body(size):
    """A payload's bytes after its stamp: not all zeroes, made once."""
    pattern = bytes((i * 131 + 7) & 0xFF for i in range(256))
    return (pattern * (size // 256 + 1))[:size]


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    rank = max(1, -(-round(q * 10000) * len(sorted_values) // 10000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def measure(mechanism, pattern, size, duration, count, corrupt_every):
    channel = Channel(mechanism, corrupt_every)
    reply = "echo" if pattern == "pingpong" else "ack"
    window = 1 if pattern == "pingpong" else max(2, min(MAX_WINDOW, WINDOW_BYTES // max(size, 1)))
    # Each message is a new bytes object, its sequence number first, as a
    # Python program would make it (a Queue pickles it later, on its feeder
    # thread, so a buffer reused in place could change under it).
    tail = body(size)[8:]
    in_flight = deque()  # (seq, crc, payload, sent_at)
    rtts = []
    lost = duplicated = corrupted = 0
    next_seq = 0
    start = time.perf_counter()

    def more():
        if count is not None:
            return next_seq < count
        return time.perf_counter() - start < duration

    def answer():
        nonlocal lost, duplicated, corrupted
        seq, result = channel.receive()
        at = time.perf_counter()
        if seq >= next_seq:
            corrupted += 1
            return
        while in_flight and in_flight[0][0] < seq:
            in_flight.popleft()
            lost += 1
        if not in_flight or in_flight[0][0] != seq:
            duplicated += 1
            return
        _, _, payload, sent_at = in_flight.popleft()
        ok = result == payload if reply == "echo" else result is True
        if not ok:
            corrupted += 1
        rtts.append(at - sent_at)

    while more():
        while len(in_flight) >= window:
            answer()
        payload = next_seq.to_bytes(8, "little")[:size] + tail
        crc = zlib.crc32(payload)
        in_flight.append((next_seq, crc, payload, time.perf_counter()))
        channel.send((reply, next_seq, crc, payload))
        next_seq += 1
    while in_flight:
        answer()
    elapsed = time.perf_counter() - start
    channel.close()
    rtts.sort()
    messages = len(rtts)
    directions = 2 if reply == "echo" else 1
    return {
        "mechanism": mechanism,
        "pattern": pattern,
        "size_bytes": size,
        "messages": messages,
        "rtt_p50_seconds": percentile(rtts, 0.50),
        "rtt_p99_seconds": percentile(rtts, 0.99),
        "rtt_p999_seconds": percentile(rtts, 0.999),
        "rtt_max_seconds": rtts[-1] if rtts else 0.0,
        "rtt_percentiles": [
            {"percentile": p, "seconds": percentile(rtts, p / 100)} for p in PERCENTILES
        ],
        "throughput_bytes_per_second": messages * size * directions / elapsed,
        "messages_per_second": messages / elapsed,
        "lost": lost,
        "duplicated": duplicated,
        "corrupted": corrupted,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", default="pingpong,stream")
    parser.add_argument("--sizes", default="8,1048576")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--count", type=int)
    parser.add_argument("--corrupt-every", type=int, default=0)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    patterns = args.patterns.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(p not in ("pingpong", "stream") for p in patterns):
        sys.exit("python_stress.py: patterns are pingpong and stream")
    if (args.duration is None) == (args.count is None):
        sys.exit("python_stress.py: give --duration or --count")
    rows = []
    for pattern in patterns:
        for size in sizes:
            for mechanism in ("Pipe", "Queue"):
                rows.append(
                    measure(mechanism, pattern, size, args.duration, args.count, args.corrupt_every)
                )
    with open(args.json, "w") as out:
        json.dump(
            {
                "python": sys.version.split()[0],
                "start_method": multiprocessing.get_start_method(),
                "rows": rows,
            },
            out,
        )


if __name__ == "__main__":
    main()
