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
        this = slots(id(frame), 4)[3]
        parent = slots(id(caller), 4)[3]
        assert replace_slot(this, 12, parent, this) == 1, "previous not found"
    else:
        # PyFrameObject: PyObject_VAR_HEAD, then f_back.
        assert replace_slot(id(frame), 4, id(caller), id(frame)) == 1, "f_back not found"
    facts["looped_frame"] = "looped_inner"
    arrived.wait()
    forever.wait()


def looped_outer():
    looped_inner()


threading.Thread(target=victim_name, name="garbage-name", daemon=True).start()
threading.Thread(target=looped_outer, name="looped-frame", daemon=True).start()
arrived.wait()

code = victim_name.__code__
facts["garbage_name_code"] = id(code)
assert replace_slot(id(code), 24, id(code.co_name), GARBAGE) >= 1, "co_name not found"
# list: PyObject_VAR_HEAD's ob_size at slot 2.
slots(id(huge), 3)[2] = 2**60
facts["huge"] = id(huge)
# str: PyASCIIObject's length at slot 2.
slots(id(wild), 3)[2] = 2**40
facts["wild"] = id(wild)
# tuple: ob_size at slot 2.
slots(id(vast), 3)[2] = 2**40
facts["vast"] = id(vast)
# int: ob_size at slot 2, or from 3.12 lv_tag = ndigits << 3 | sign.
slots(id(big), 3)[2] = 2**40 << 3 if sys.version_info >= (3, 12) else 2**40
facts["big"] = id(big)

with open(ready_path + ".tmp", "w") as f:
    json.dump(facts, f)
import os  # noqa: E402  (imported late: nothing above may need it)
os.rename(ready_path + ".tmp", ready_path)
forever.wait()
