"""A loop of short sleeps with its own truth of the time spent asleep.

Each round does pure Python work for a random 0.2-1.8 x WORK_MS (so the
rounds do not lock in phase with the sampler's ticks), then sleeps 5 ms.
The time inside time.sleep (CLOCK_MONOTONIC around the call: the kernel's
sleep, then the wait for a CPU and for the GIL before the call returns)
is summed, so asleep_ns / (end_ns - start_ns) is the share of the window
the thread was asleep as the program sees it: what an idle filter must
leave out.

Usage: short_sleeps.py TRUTH.json SECONDS [WORK_MS]
Writes {"start_ns", "end_ns", "asleep_ns", "rounds"} to TRUTH.json.
"""
import json
import random
import sys
import time


def work(ms):
    end = time.monotonic_ns() + int(ms * 1e6)
    n = 0
    while time.monotonic_ns() < end:
        n += 1
    return n


def loop(seconds, work_ms):
    asleep = 0
    rounds = 0
    jitter = random.Random(16)
    end = time.monotonic_ns() + int(seconds * 1e9)
    while time.monotonic_ns() < end:
        work(work_ms * jitter.uniform(0.2, 1.8))
        before = time.monotonic_ns()
        time.sleep(0.005)
        asleep += time.monotonic_ns() - before
        rounds += 1
    return asleep, rounds


def main():
    truth, seconds = sys.argv[1], float(sys.argv[2])
    work_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    time.sleep(0.2)
    start_ns = time.monotonic_ns()
    asleep, rounds = loop(seconds, work_ms)
    end_ns = time.monotonic_ns()
    with open(truth, "w") as f:
        json.dump({"start_ns": start_ns, "end_ns": end_ns, "asleep_ns": asleep, "rounds": rounds}, f)


main()
