"""Runs a first phase in functions named old_*, then os.execv's into a
second Python program (the same file with "second") whose functions are
named new_*: a recording of both must name only new_* after the exec.

Usage: exec_into_python.py first SECONDS_BEFORE SECONDS_AFTER
"""
import os
import sys
import time


def old_spin_inner(until):
    x = 0
    while time.monotonic() < until:
        x += 1
    return x


def old_spin(until):
    return old_spin_inner(until)


def new_spin_inner(until):
    y = 0
    while time.monotonic() < until:
        y += 1
    return y


def new_spin(until):
    return new_spin_inner(until)


def new_phase(seconds):
    new_spin(time.monotonic() + seconds)


def old_phase(before, after):
    old_spin(time.monotonic() + before)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, __file__, "second", str(after)])


if __name__ == "__main__":
    if sys.argv[1] == "first":
        old_phase(float(sys.argv[2]), sys.argv[3])
    else:
        new_phase(float(sys.argv[2]))
