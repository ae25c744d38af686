"""The collector's lists as pydeep's heap walk assumes them, checked
in-process through ctypes; prints JSON for agent/tests/asyncio_layout_truth.rs.

Usage: snapshot_gc_lists.py GC_OFFSET SPAN

GC_OFFSET is `interpreter_state.gc` and SPAN `gc.collecting` from the
interpreter's own `_Py_DebugOffsets` (parsed by the test). The program
finds the list heads in the first SPAN bytes of the main interpreter's GC
state by their shape, as `heap::generation_heads_by_shape` does (a
PyGC_Head linked to itself both ways, or whose first node's `_gc_prev` and
last node's `_gc_next` point back at it, flag bits masked), walks each
list, and reports the heads, each list's length, `len(gc.get_objects())`
and `gc.get_freeze_count()` taken at the same moment (collector disabled).
Runs natively (3.13) and on the WebAssembly builds of 3.14/3.15, whose
incremental collector keeps young, old[2] and permanent lists.
"""
import ctypes
import gc
import json
import sys

from fixture_support import readable_ranges

POINTER = ctypes.sizeof(ctypes.c_void_p)
FLAGS = 3  # low bits of _gc_next / _gc_prev that are flags
# A list head is only promised 1 << _PyObject_ALIGNMENT_SHIFT bytes: from
# 3.13.5 PyGC_Head is Py_ALIGNED(4) and GCC puts the generations at +20.
HEAD_ALIGN = 4


RANGES = readable_ranges()


def readable(address):
    return address % POINTER == 0 and any(
        start <= address and address + 2 * POINTER <= end for start, end in RANGES
    )


def word(address):
    return int.from_bytes(ctypes.string_at(address, POINTER), sys.byteorder)


def heads_by_shape(state, span):
    heads = []
    offset = 0
    while offset + 2 * POINTER <= span:
        at = state + offset
        following = word(at) & ~FLAGS
        preceding = word(at + POINTER) & ~FLAGS
        is_head = following != 0 and preceding != 0 and (
            (following == at and preceding == at)
            or (
                following != at
                and preceding != at
                and readable(following)
                and readable(preceding)
                and word(following + POINTER) & ~FLAGS == at
                and word(preceding) & ~FLAGS == at
            )
        )
        if is_head:
            heads.append(at)
            offset += 2 * POINTER
        else:
            offset += HEAD_ALIGN
    return heads


def length(head):
    count = 0
    node = word(head) & ~FLAGS
    while node != head and count < 50_000_000:
        count += 1
        node = word(node) & ~FLAGS
    return count


def main():
    gc_offset, span = int(sys.argv[1]), int(sys.argv[2])
    interpreter = ctypes.pythonapi.PyInterpreterState_Get
    interpreter.restype = ctypes.c_void_p
    interpreter.argtypes = []
    state = interpreter() + gc_offset
    gc.collect()
    gc.disable()
    heads = heads_by_shape(state, span)
    lengths = [0] * len(heads)
    for i in range(len(heads)):
        lengths[i] = length(heads[i])
    objects = len(gc.get_objects())
    frozen = gc.get_freeze_count()
    print(json.dumps({
        "heads": [head - state for head in heads],
        "lengths": lengths,
        "get_objects": objects,
        "freeze_count": frozen,
    }))


main()
