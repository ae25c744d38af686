"""Shared plumbing of the benchmark workloads.

Every workload runs until SIGTERM (or --seconds), counts units of work in
`counter`, and prints `mark COUNT MONOTONIC` on SIGUSR1 (so the harness can
measure the work done inside a profiling window) and `work COUNT` at exit.
The work itself is deterministic: no randomness, no time-dependent branches.
"""

import argparse
import signal
import sys
import time


class Counter:
    """Units of work done, summed over `slots` (one per thread)."""

    def __init__(self, slots=1):
        self.slots = [0] * slots
        # Named nanosecond totals the workload measures of itself (e.g. the
        # time spent at or below a stack depth), printed with each mark.
        self.clocks = {}

    def total(self):
        return sum(self.slots)


def parse(description, **extra):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=3600.0)
    for name, default in extra.items():
        parser.add_argument("--" + name, type=type(default), default=default)
    return parser.parse_args()


def install(counter):
    """Signals: SIGUSR1 prints a mark, SIGTERM prints the total and exits."""

    def mark(_signum, _frame):
        clocks = " ".join(f"{name}={ns}" for name, ns in counter.clocks.items())
        print(f"mark {counter.total()} {time.monotonic():.6f} {clocks}".rstrip(), flush=True)

    def stop(_signum, _frame):
        finish(counter)

    signal.signal(signal.SIGUSR1, mark)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)


def finish(counter):
    print(f"work {counter.total()}", flush=True)
    sys.stdout.flush()
    raise SystemExit(0)


def base_depth():
    """Python frames on the stack of the caller (for the true depth sweep)."""
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth
