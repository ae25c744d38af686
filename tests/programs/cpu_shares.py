"""A CPU-bound program that spends known shares of its time in two functions.

`heavy` does three times the work of `light` in every round, so about 75% of the
time is spent in `heavy` and 25% in `light`. The program also measures the
truth itself: the CPU time spent inside each function, with
time.thread_time_ns(), and writes it as JSON to the path in argv[1] when done.

Usage: cpu_shares.py TRUTH.json SECONDS
"""
import json
import random
import sys
import time


def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


# One unit is some tens of milliseconds: each phase spans several sampling
# intervals at 100 Hz, so a sample's error is at most one per phase boundary
# and the recorded shares converge quickly (short phases would make every
# sample a coin toss, with ~1.5 points of noise in 1,000 samples).
UNIT = 300000


def heavy(k):
    return spin(3 * UNIT * k // 4)


def light(k):
    return spin(UNIT * k // 4)


def main():
    truth_path = sys.argv[1]
    seconds = float(sys.argv[2])
    spent = {"heavy": 0, "light": 0}
    end = time.monotonic() + seconds
    rounds = 0
    # Rounds of varying length keep the phases from beating in step with
    # the sampler's fixed interval (aliasing would bias the shares).
    rng = random.Random(1234)
    while time.monotonic() < end:
        k = rng.choice((3, 4, 5))
        t0 = time.thread_time_ns()
        heavy(k)
        t1 = time.thread_time_ns()
        light(k)
        t2 = time.thread_time_ns()
        spent["heavy"] += t1 - t0
        spent["light"] += t2 - t1
        rounds += 1
    with open(truth_path, "w") as f:
        json.dump({"spent_ns": spent, "rounds": rounds}, f)


if __name__ == "__main__":
    main()
