"""Pure Python CPU work swept over a deep stack.

Each round recurses through `level` down to --depth frames: the outer half
of the levels only call deeper; every level of the inner half (depth/2 ..
depth) does the same fixed loop before calling deeper. So the true depth
distribution of CPU time is uniform over [depth/2, depth] `level` frames
(plus the few frames of module and round), the sweep the harness compares
each profiler's kept samples against.
"""

import sys
import time

from common import Counter, finish, install, parse


def level(k, depth, counter):
    if k > depth // 2:
        total = 0
        for i in range(150):
            total += i * i % 7
        counter.slots[0] += 1
    if k < depth:
        level(k + 1, depth, counter)


def main():
    args = parse(__doc__, depth=30)
    sys.setrecursionlimit(args.depth + 1000)
    counter = Counter()
    install(counter)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        level(1, args.depth, counter)
    finish(counter)


if __name__ == "__main__":
    main()
