"""A small object graph with a cycle, described in-process, then the main
thread blocks in pause(2) forever.

Usage: python snapshot_graph.py TRUTH_JSON

Module globals: root = (table, shared); table = {"a": a, "b": b,
"shared": shared}; shared = [leaf, big]; a and b are Plain instances
pointing at each other (a cycle) and a.items is shared. The truth lists each
object's id, type name, sys.getsizeof and reference count (sys.getrefcount
at module level minus its own argument) and the references pydeep must
report between them, by id. `closure`: the ids of `held` (a function
with one cell), its cell and its globals.
"""
import json
import os
import signal
import sys

TRUTH_PATH = sys.argv[1]


class Plain:
    pass


leaf = "leaf text " + str(len(sys.argv))
big = 12345678901234567890 + len(sys.argv)
shared = [leaf, big]
a = Plain()
a.name = "node a"
a.items = shared
b = Plain()
b.peer = a
a.peer = b
table = {"a": a, "b": b, "shared": shared}
root = (table, shared)


def make_holder():
    kept = ["kept by the closure"]

    def holder():
        return kept

    return holder


# A function whose one cell is what it alone holds: a breadth-first walk
# with a small budget must reach the cell before the module's globals.
held = make_holder()

objects = {
    "root": {"id": id(root), "type": type(root).__name__, "size": sys.getsizeof(root), "refcount": sys.getrefcount(root) - 1},
    "table": {"id": id(table), "type": type(table).__name__, "size": sys.getsizeof(table), "refcount": sys.getrefcount(table) - 1},
    "shared": {"id": id(shared), "type": type(shared).__name__, "size": sys.getsizeof(shared), "refcount": sys.getrefcount(shared) - 1},
    "a": {"id": id(a), "type": type(a).__name__, "size": sys.getsizeof(a), "refcount": sys.getrefcount(a) - 1},
    "b": {"id": id(b), "type": type(b).__name__, "size": sys.getsizeof(b), "refcount": sys.getrefcount(b) - 1},
    "leaf": {"id": id(leaf), "type": type(leaf).__name__, "size": sys.getsizeof(leaf), "refcount": sys.getrefcount(leaf) - 1},
    "big": {"id": id(big), "type": type(big).__name__, "size": sys.getsizeof(big), "refcount": sys.getrefcount(big) - 1},
}
edges = [
    [id(root), id(table), "[0]"],
    [id(root), id(shared), "[1]"],
    [id(table), id(a), "['a']"],
    [id(table), id(b), "['b']"],
    [id(table), id(shared), "['shared']"],
    [id(shared), id(leaf), "[0]"],
    [id(shared), id(big), "[1]"],
    [id(a), id(shared), ".items"],
    [id(a), id(b), ".peer"],
    [id(b), id(a), ".peer"],
]
closure = {"function": id(held), "cell": id(held.__closure__[0]),
           "globals": id(held.__globals__)}
text = json.dumps({"objects": objects, "edges": edges, "closure": closure})
with open(TRUTH_PATH + ".tmp", "w") as f:
    f.write(text)
os.rename(TRUTH_PATH + ".tmp", TRUTH_PATH)
signal.pause()
