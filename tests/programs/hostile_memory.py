"""A hostile target: corrupts its own memory through ctypes, in objects it
never touches again, then blocks forever (the test SIGKILLs it). Nothing is
restored. Corruptions:

* the code object of `victim_name` (running in thread "garbage-name",
  blocked) gets co_name (and co_qualname when it is the same object) set
  to a garbage address;
* the frame of `looped_inner` (thread "looped-frame", blocked) gets its
  link to its caller pointed at itself: a frame chain looping on itself
  (f_back of the frame object before 3.11, `previous` of the
  _PyInterpreterFrame from 3.11);
* the global list `huge` claims 2**60 items (ob_size);
* the global str `wild` claims a length of 2**40;
* the global tuple `vast` claims 2**40 items (ob_size), and the global int
  `big` 2**40 digits (ob_size before 3.12, lv_tag from 3.12): sizes no
  memory of the process can hold.

Where a field sits is counted from the end of the object header, whose size
the interpreter itself gives (object.__basicsize__): two words on the GIL
build, four on the free-threaded one (ob_tid, the flags and local refcount,
ob_ref_shared, then ob_type).

A corruption that cannot be made ends the process at once (exit 1) rather
than leave it blocked at the barrier: the test sees it exit early.

The garbage collector is disabled first: it would traverse the list and the
frame and crash the target itself.

Usage: hostile_memory.py READY_FILE
Writes READY_FILE (JSON: the addresses corrupted) once everything is done.
"""
import ctypes
import gc
import json
import sys
import threading

gc.disable()
ready_path = sys.argv[1]
GARBAGE = 0x00DEAD00BEEF0000
POINTER = ctypes.sizeof(ctypes.c_void_p)
# Pointer-sized slots of PyObject_HEAD; PyObject_VAR_HEAD's ob_size and the
# first field after PyObject_HEAD sit at this slot.
HEAD = object.__basicsize__ // POINTER

huge = [1, 2, 3]
wild = "".join(["wild string "] * 3)
vast = tuple(range(5))
big = int("7" * 40)
facts = {}
arrived = threading.Barrier(3)
forever = threading.Event()


def slots(address, count):
    return (ctypes.c_uint64 * count).from_address(address)


def replace_slot(address, count, old, new):
    """Replaces every pointer-sized slot equal to `old` in the first
    `count` slots at `address`; returns how many."""
    words = slots(address, count)
    found = 0
    for i in range(count):
        if words[i] == old:
            words[i] = new
            found += 1
    return found


def victim_name():
    arrived.wait()
    forever.wait()


def looped_inner():
    frame = sys._getframe()
    caller = sys._getframe(1)
    if sys.version_info >= (3, 11):
        # PyFrameObject: PyObject_HEAD, f_back, f_frame (the
        # _PyInterpreterFrame); the interpreter frame links to its caller's
        # interpreter frame in `previous`.
        this = slots(id(frame), HEAD + 2)[HEAD + 1]
        parent = slots(id(caller), HEAD + 2)[HEAD + 1]
        assert replace_slot(this, 12, parent, this) == 1, "previous not found"
    else:
        # PyFrameObject: PyObject_VAR_HEAD, then f_back.
        assert replace_slot(id(frame), HEAD + 2, id(caller), id(frame)) == 1, "f_back not found"
    facts["looped_frame"] = "looped_inner"
    arrived.wait()
    forever.wait()


def looped_outer():
    looped_inner()




def fail_fast(args):
    """A thread that fails (a corruption it could not make) breaks the
    barrier: the main thread raises and the process ends, never blocks."""
    threading.__excepthook__(args)
    arrived.abort()


threading.excepthook = fail_fast
threading.Thread(target=victim_name, name="garbage-name", daemon=True).start()
threading.Thread(target=looped_outer, name="looped-frame", daemon=True).start()
arrived.wait()

code = victim_name.__code__
facts["garbage_name_code"] = id(code)
assert replace_slot(id(code), 24, id(code.co_name), GARBAGE) >= 1, "co_name not found"


def set_size(obj, true_size, claim):
    """Sets the size field just after the object header (ob_size of
    PyObject_VAR_HEAD, PyASCIIObject's length, PyLongObject's lv_tag),
    after checking that it holds `true_size`: a wrong layout fails here."""
    words = slots(id(obj), HEAD + 1)
    assert words[HEAD] == true_size, f"{type(obj).__name__} size not at slot {HEAD}"
    words[HEAD] = claim


# list: PyObject_VAR_HEAD's ob_size.
set_size(huge, len(huge), 2**60)
facts["huge"] = id(huge)
# str: PyASCIIObject's length.
set_size(wild, len(wild), 2**40)
facts["wild"] = id(wild)
# tuple: ob_size.
set_size(vast, len(vast), 2**40)
facts["vast"] = id(vast)
# int: ob_size (its digit count) before 3.12, from 3.12 lv_tag = ndigits << 3
# | sign (0 for positive).
digits = -(-big.bit_length() // sys.int_info.bits_per_digit)
if sys.version_info >= (3, 12):
    set_size(big, digits << 3, 2**40 << 3)
else:
    set_size(big, digits, 2**40)
facts["big"] = id(big)

with open(ready_path + ".tmp", "w") as f:
    json.dump(facts, f)
import os  # noqa: E402  (imported late: nothing above may need it)
os.rename(ready_path + ".tmp", ready_path)
forever.wait()
