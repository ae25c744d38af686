"""Pure Python CPU work swept over a deep stack.

Each round recurses through `level` down to --depth frames: the outer half
of the levels only call deeper; every level of the inner half (depth/2 ..
depth) does the same fixed loop before calling deeper. So the true depth
distribution of CPU time is uniform over [depth/2, depth] `level` frames
(plus the few frames of module and round), the sweep the harness compares
each profiler's kept samples against.

The descent through the outer half and the unwinding take real time too,
so the workload also measures its own depth distribution: `half_ns` is the
time spent with at least depth//2 `level` frames on the stack, `deep_ns`
with at least depth*9//10 (from the entry of that level to its return),
printed with every mark; the harness compares each profiler's kept samples
with these shares of the window.
"""

import sys
import time

from common import Counter, finish, install, parse


def level(k, depth, counter):
    # At the two band edges, time this frame and everything it calls (a
    # sampler counts k `level` frames from here on); one function, so the
    # stack holds exactly k frames of it.
    edge = k == depth // 2 or k == depth * 9 // 10
    if edge:
        start = time.perf_counter_ns()
    if k > depth // 2:
        total = 0
        for i in range(150):
            total += i * i % 7
        counter.slots[0] += 1
    if k < depth:
        level(k + 1, depth, counter)
    if edge:
        elapsed = time.perf_counter_ns() - start
        if k == depth // 2:
            counter.clocks["half_ns"] += elapsed
        if k == depth * 9 // 10:
            counter.clocks["deep_ns"] += elapsed


def main():
    args = parse(__doc__, depth=30)
    sys.setrecursionlimit(args.depth + 1000)
    counter = Counter()
    counter.clocks.update(half_ns=0, deep_ns=0)
    install(counter)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        level(1, args.depth, counter)
    finish(counter)


if __name__ == "__main__":
    main()
