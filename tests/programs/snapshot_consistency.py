"""A thread that writes two lists one after the other, deep in a stack, for
the test that `pydeep dump --locals` shows the values of ONE moment.

Usage: python snapshot_consistency.py READY_FILE DEPTH

The "pair" thread recurses DEPTH `descend` frames, passing two lists,
`first` and `second`, down as arguments, and then `spin` loops forever:

    n += 1
    first[0] = n
    second[0] = n

Each statement changes one pointer in memory (the frame's slot for `n`, the
list's item), so at every instant

    second[0] <= first[0] <= n  and  n - second[0] <= 1

and every frame shows the same two lists. A reader that read `n` (a slot of
the frame) and then the lists' items at different moments while the loop
runs would see `first[0]` or `second[0]` ahead of `n`, or `second[0]` more
than one behind; one that read the lists again for another frame would show
them differently in two frames.

Writes READY_FILE (JSON: the pair thread's native id, DEPTH) once the loop
runs. The ints start at 10**6, so each is a new object (no small-int cache).
"""
import json
import os
import sys
import threading

READY, DEPTH = sys.argv[1], int(sys.argv[2])
sys.setrecursionlimit(DEPTH + 1000)
started = threading.Event()


def spin(first, second):
    n = first[0]
    started.set()
    while True:
        n += 1
        first[0] = n
        second[0] = n


def descend(level, first, second):
    if level < DEPTH:
        descend(level + 1, first, second)
    else:
        spin(first, second)


def main():
    start = 10**6
    pair = threading.Thread(
        target=descend, args=(1, [start], [start]), name="pair", daemon=True
    )
    pair.start()
    started.wait()
    truth = {"pid": os.getpid(), "native_id": pair.native_id, "depth": DEPTH}
    with open(READY + ".tmp", "w") as f:
        json.dump(truth, f)
    os.rename(READY + ".tmp", READY)
    threading.Event().wait()


main()
