"""Runs two functions of its own in a threading.Thread for SECONDS, and
writes, as JSON to TRUTH_PATH, the lines each code object on that thread's
stack covers as the interpreter itself reports them: co_filename,
co_firstlineno and the last line its line table names (dis.findlinestarts,
on every version this runs on).

Usage: source_spans.py TRUTH_PATH SECONDS
"""
import dis
import json
import sys
import threading
import time


def inner(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def outer(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        inner(2000)


def lines_of(code):
    starts = [line for _, line in dis.findlinestarts(code) if line is not None]
    return {
        "file": code.co_filename,
        "first": code.co_firstlineno,
        "last": max(starts + [code.co_firstlineno]),
    }


truth_path, seconds = sys.argv[1], float(sys.argv[2])
codes = {
    "inner": inner.__code__,
    "outer": outer.__code__,
    "Thread.run": threading.Thread.run.__code__,
    "Thread._bootstrap_inner": threading.Thread._bootstrap_inner.__code__,
    "Thread._bootstrap": threading.Thread._bootstrap.__code__,
}
with open(truth_path, "w") as f:
    json.dump({name: lines_of(code) for name, code in codes.items()}, f)
worker = threading.Thread(target=outer, args=(seconds,))
worker.start()
worker.join()
