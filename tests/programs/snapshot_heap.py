"""Objects of known types, counted in-process with gc.get_objects(), then
the main thread blocks in pause(2) forever.

Usage: python snapshot_heap.py TRUTH_JSON

The collector is disabled after a full collection so nothing moves. The
measurement leaves nothing GC-tracked behind: the counts live in a plain
dict of str -> int (such dicts are untracked), the list gc.get_objects()
returns is deleted, and the JSON/file machinery is warmed up once before
counting so that no lazily created cache appears afterwards.
"""
import gc
import json
import os
import signal
import sys

TRUTH_PATH = sys.argv[1]


class Marker:
    def __init__(self, i):
        self.i = i


class SlotMarker:
    __slots__ = ("i",)

    def __init__(self, i):
        self.i = i


markers = [Marker(i) for i in range(5000)]
slot_markers = [SlotMarker(i) for i in range(1234)]
lists = [[i] for i in range(777)]
tracked_dicts = [{"list": [i]} for i in range(321)]


def measure():
    counts = {}
    objects = gc.get_objects()
    for obj in objects:
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
    del objects, obj
    return counts


def write(path, data):
    # json.dumps encodes in one shot in C; json.dump would build the pure
    # Python encoder, whose recursive closures are a reference cycle left
    # behind as garbage while the collector is disabled.
    text = json.dumps(data)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


write(TRUTH_PATH + ".warmup", measure())
gc.collect()
gc.disable()
counts = measure()
write(TRUTH_PATH, counts)
signal.pause()
