"""One still state for comparing the live commands with a recording of it.

Usage: python live_views.py TRUTH_JSON

The main thread calls hold(root), whose only local is `root` = (table,
shared): table = {"a": a, "b": b}, shared = [leaf, big], a and b Plain
instances pointing at each other. hold writes the truth (root's id) and
blocks in pause(2) forever, so nothing runs while pydeep reads: a live
`pydeep objects --root 0xROOT --depth 1` and a snapshot's graph (the
variables' values and what they reference, depth 1) hold the same objects,
and `pydeep heap` and a heap snapshot count the same heap.
"""
import json
import os
import signal
import sys

TRUTH_PATH = sys.argv[1]


class Plain:
    pass


def build():
    shared = ["leaf text " + str(len(sys.argv)), 12345678901234567890 + len(sys.argv)]
    a = Plain()
    a.name = "node a"
    b = Plain()
    a.peer = b
    b.peer = a
    return ({"a": a, "b": b}, shared)


def write_truth(root_id):
    with open(TRUTH_PATH + ".tmp", "w") as f:
        f.write(json.dumps({"root": root_id}))
    os.rename(TRUTH_PATH + ".tmp", TRUTH_PATH)


def hold(root):
    write_truth(id(root))
    signal.pause()


hold(build())
