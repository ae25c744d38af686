"""Churns objects and frames as fast as it can, in known shares of its CPU
time: `heavy` does three times the work of `light` in every round (about
75% / 25%). The work allocates dicts, lists and instances and calls small
functions in a tight loop, so frames and objects are created and freed all
the time: a non-blocking sampler often reads a stack while it changes.
The truth (CPU time inside each function, time.thread_time_ns) is written
as JSON to argv[1] at the end, like cpu_shares.py.

Usage: churn_shares.py TRUTH.json SECONDS
"""
import sys

from fixture_support import measure_shares


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
    measure_shares(sys.argv[1], float(sys.argv[2]), heavy, light)


if __name__ == "__main__":
    main()
