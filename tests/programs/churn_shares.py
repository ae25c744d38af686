"""Churns objects and frames as fast as it can, in known shares of its CPU
time: `heavy` does three times the work of `light` in every round (about
75% / 25%). The work allocates dicts, lists and instances and calls small
functions in a tight loop, so frames and objects are created and freed all
the time: a non-blocking sampler often reads a stack while it changes.
The truth (CPU time inside each function, time.thread_time_ns) is written
as JSON to argv[1] at the end, like cpu_shares.py.

Usage: churn_shares.py TRUTH.json SECONDS
"""
import json
import random
import sys
import time


class Node:
    __slots__ = ("value", "next")

    def __init__(self, value, next):
        self.value = value
        self.next = next


def make(n):
    junk = []
    head = None
    for i in range(n):
        head = Node({"i": i, "pair": [i, i + 1]}, head if i % 64 else None)
        junk.append(head)
        if len(junk) > 512:
            junk = []
    return len(junk)


# Each unit is some milliseconds: phases span several sampling intervals
# even at a low achieved rate (see cpu_shares.py).
UNIT = 20000


def heavy(k):
    return make(3 * UNIT * k // 4)


def light(k):
    return make(UNIT * k // 4)


def main():
    truth_path = sys.argv[1]
    seconds = float(sys.argv[2])
    spent = {"heavy": 0, "light": 0}
    end = time.monotonic() + seconds
    rounds = 0
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
