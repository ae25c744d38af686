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
import signal
import sys

from fixture_support import count_gc_objects_by_type, write_json_atomically

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


write_json_atomically(TRUTH_PATH + ".warmup", count_gc_objects_by_type())
gc.collect()
gc.disable()
counts = count_gc_objects_by_type()
write_json_atomically(TRUTH_PATH, counts)
signal.pause()
