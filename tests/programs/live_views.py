"""One still state for comparing the live commands with a recording of it.

Usage: python live_views.py TRUTH_JSON

The main thread calls hold(root), whose only local is `root` = (table,
shared): table = {"a": a, "b": b}, shared = [leaf, big], a and b Plain
instances pointing at each other. hold writes the truth (root's id) and
blocks in pause(2) forever, so nothing runs while pydeep reads: a live
`pydeep objects --root 0xROOT --depth 1` and a snapshot's graph (the
variables' values and what they reference, depth 1) hold the same objects,
and `pydeep heap` and a heap snapshot count the same heap.

The module global KEPT holds instances of two classes in known numbers
(SLOTTED LiveSlotted, with __slots__, and INSTANCES LiveInstance, plain);
the truth gives their counts as gc.get_objects() sees them and each one's
sys.getsizeof, so both heap views can be checked against it exactly.
"""
import gc
import json
import os
import signal
import sys

TRUTH_PATH = sys.argv[1]


class Plain:
    pass


class LiveSlotted:
    __slots__ = ("value",)


class LiveInstance:
    pass


SLOTTED = 1237
INSTANCES = 311


def keep():
    slotted = []
    for n in range(SLOTTED):
        o = LiveSlotted()
        o.value = n
        slotted.append(o)
    instances = []
    for n in range(INSTANCES):
        o = LiveInstance()
        o.value = n
        instances.append(o)
    return slotted, instances


KEPT = keep()


def kept_truth():
    """Each kept class's count in gc.get_objects() and one instance's size."""
    truth = {}
    for cls, kept in zip((LiveSlotted, LiveInstance), KEPT):
        count = sum(1 for o in gc.get_objects() if type(o) is cls)
        truth[cls.__name__] = {"count": count, "size": sys.getsizeof(kept[0])}
    return truth


def build():
    shared = ["leaf text " + str(len(sys.argv)), 12345678901234567890 + len(sys.argv)]
    a = Plain()
    a.name = "node a"
    b = Plain()
    a.peer = b
    b.peer = a
    return ({"a": a, "b": b}, shared)


def write_truth(root_id):
    truth = {"root": root_id, "kept": kept_truth()}
    with open(TRUTH_PATH + ".tmp", "w") as f:
        f.write(json.dumps(truth))
    os.rename(TRUTH_PATH + ".tmp", TRUTH_PATH)


def hold(root):
    write_truth(id(root))
    signal.pause()


hold(build())
