"""Runs `work` for a known stretch of CLOCK_MONOTONIC, the clock pydeep
stamps samples with, and writes that stretch as JSON to argv[1].

time.monotonic_ns() is CLOCK_MONOTONIC on Linux (Python/pytime.c), so any
sample whose stack holds `work` must carry a time between start_ns and
end_ns.

Usage: timed_work.py TRUTH.json SECONDS
"""
import json
import sys
import time


def work(seconds):
    end = time.monotonic_ns() + int(seconds * 1e9)
    total = 0
    while time.monotonic_ns() < end:
        total += 1
    return total


def main():
    truth, seconds = sys.argv[1], float(sys.argv[2])
    time.sleep(0.2)
    start_ns = time.monotonic_ns()
    work(seconds)
    end_ns = time.monotonic_ns()
    with open(truth, "w") as f:
        json.dump({"start_ns": start_ns, "end_ns": end_ns}, f)


main()
