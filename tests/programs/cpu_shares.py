"""A CPU-bound program that spends known shares of its time in two functions.

`heavy` does three times the work of `light` in every round, so about 75% of the
time is spent in `heavy` and 25% in `light`. The program also measures the
truth itself: the CPU time spent inside each function, with
time.thread_time_ns(), and writes it as JSON to the path in argv[1] when done.

Usage: cpu_shares.py TRUTH.json SECONDS
"""
import sys

from fixture_support import measure_shares


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
    measure_shares(sys.argv[1], float(sys.argv[2]), heavy, light)


if __name__ == "__main__":
    main()
