"""A loop whose time goes largely to the cyclic garbage collector, with
its own truth of that time.

A loop that makes reference cycles: collections are triggered by
allocation, as in a validation loop, and take about half the time. `gc.callbacks` stamps each collection's start
and stop (CLOCK_MONOTONIC); their sum over the window is the collector's
share of the time.

Usage: gc_heavy.py TRUTH.json SECONDS
Writes {"start_ns", "end_ns", "gc_ns", "collections", "by_generation"}.
"""
import gc
import json
import sys
import time

state = {"since": None, "gc_ns": 0, "collections": 0, "by_generation": [0, 0, 0]}


def callback(phase, info):
    now = time.monotonic_ns()
    if phase == "start":
        state["since"] = now
    elif state["since"] is not None:
        state["gc_ns"] += now - state["since"]
        state["collections"] += 1
        generation = info.get("generation", 0)
        if 0 <= generation < 3:
            state["by_generation"][generation] += 1
        state["since"] = None


def make_cycles(n):
    for _ in range(n):
        a = []
        b = [a]
        a.append(b)


def churn(seconds):
    end = time.monotonic_ns() + int(seconds * 1e9)
    while time.monotonic_ns() < end:
        make_cycles(500)


def main():
    truth, seconds = sys.argv[1], float(sys.argv[2])
    gc.collect()
    gc.set_threshold(700, 4, 4)
    time.sleep(0.2)
    gc.callbacks.append(callback)
    start_ns = time.monotonic_ns()
    churn(seconds)
    end_ns = time.monotonic_ns()
    gc.callbacks.remove(callback)
    with open(truth, "w") as f:
        json.dump(
            {
                "start_ns": start_ns,
                "end_ns": end_ns,
                "gc_ns": state["gc_ns"],
                "collections": state["collections"],
                "by_generation": state["by_generation"],
            },
            f,
        )


main()
