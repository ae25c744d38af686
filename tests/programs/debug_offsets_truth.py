"""The interpreter's own `_Py_DebugOffsets` table and, independently of it,
where the fields the table describes really are, found by looking at live
objects through ctypes. Prints JSON; agent/tests/debug_offsets_truth.rs
parses the table with pydeep's per-version field list and checks that each
parsed offset is one of the offsets found here.

Usage: python debug_offsets_truth.py > truth.json   (CPython 3.13+)

For every field the program makes an object whose field holds a value it
can recognise (a length of 54321, a pointer to a known object, a float
1234.5678, ...) and lists every offset inside the object holding that
value: the "candidates". A correct field list parses to one of them; a list
that is off by one field lands on a neighbour, which never holds the value.
Pointers read from memory are followed only when they fall inside the
process's memory: a readable mapping of /proc/self/maps natively, the
linear memory on the WebAssembly builds.
"""

import builtins
import ctypes
import json
import sys
import threading

from fixture_support import readable_ranges

POINTER = ctypes.sizeof(ctypes.c_void_p)
SSIZE = ctypes.sizeof(ctypes.c_ssize_t)
LONG = ctypes.sizeof(ctypes.c_ulong)
SCAN = 512  # bytes of each object searched


RANGES = readable_ranges()


def word(address, size):
    return int.from_bytes(ctypes.string_at(address, size), sys.byteorder)


def signed_word(address, size):
    return int.from_bytes(ctypes.string_at(address, size), sys.byteorder, signed=True)


def readable(address, size=POINTER):
    """True if [address, address+size) lies in readable memory; re-reads
    the mappings once on a miss, since objects made since may be new ones."""
    global RANGES
    for attempt in range(2):
        if any(start <= address and address + size <= end for start, end in RANGES):
            return True
        if attempt == 0 and address >= 4096:
            RANGES = readable_ranges()
    return False


def offsets_holding(base, value, size, span=SCAN, step=None, tag_bits=0):
    """Offsets (multiples of `step`, default `size`) in [0, span) where the
    `size`-byte word at base+offset equals `value`, ignoring its lowest
    `tag_bits` bits (3.14+ frames hold _PyStackRef: tagged pointers)."""
    step = step or size
    mask = ~((1 << tag_bits) - 1)
    return [o for o in range(0, span, step) if word(base + o, size) & mask == value]


def offsets_pointing_to(base, predicate, span=SCAN):
    """Offsets of pointer words whose target satisfies `predicate(target)`."""
    found = []
    for offset in range(0, span, POINTER):
        target = word(base + offset, POINTER)
        if readable(target, 64) and predicate(target):
            found.append(offset)
    return found


def api(name, restype=ctypes.c_void_p):
    function = getattr(ctypes.pythonapi, name)
    function.restype = restype
    function.argtypes = []
    return function


def runtime_address():
    return ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))


def code_for_truth():
    """A never-run code object with recognisable fields: first line 4242,
    7 arguments, distinct name/qualname/filename objects."""
    source = (
        "\n" * 4240
        + "class Truth:\n    def truth_function(a, b, c, d, e, f, g):\n        return a\n"
    )
    namespace = {}
    exec(compile(source, "truth_file.py", "exec"), namespace)
    return namespace["Truth"].truth_function.__code__


def generator_states():
    def gen():
        yield 1
        yield 2

    created = gen()
    suspended = gen()
    next(suspended)
    closed = gen()
    closed.close()
    return created, suspended, closed


def eval_breaker_offsets(tstate):
    tool = next(
        t for t in range(6) if sys.monitoring.get_tool(t) is None
    )
    before = ctypes.string_at(tstate, 1024)
    sys.monitoring.use_tool_id(tool, "debug_offsets_truth")
    sys.monitoring.set_events(tool, sys.monitoring.events.PY_START)
    after = ctypes.string_at(tstate, 1024)
    sys.monitoring.set_events(tool, 0)
    sys.monitoring.free_tool_id(tool)
    found = []
    for offset in range(0, 1024, POINTER):
        old = int.from_bytes(before[offset : offset + POINTER], sys.byteorder)
        new = int.from_bytes(after[offset : offset + POINTER], sys.byteorder)
        if old != new and (new - old) % 256 == 0 and old & 255 == new & 255:
            found.append(offset)
    return found


def main():
    candidates = {}
    add = candidates.setdefault

    runtime = runtime_address()
    interp = api("PyInterpreterState_Get")()
    tstate = api("PyThreadState_Get")()

    # runtime and interpreter state
    candidates["runtime_state.interpreters_head"] = offsets_holding(
        runtime, interp, POINTER, span=1 << 16
    )
    span = 1 << 17
    candidates["interpreter_state.threads_head"] = offsets_holding(interp, tstate, POINTER, span)
    # (threads_main is left out: it is set only when the interpreter runs
    # __main__ through Py_RunMain, which Pyodide does not.)
    candidates["interpreter_state.sysdict"] = offsets_holding(interp, id(sys.__dict__), POINTER, span)
    candidates["interpreter_state.builtins"] = offsets_holding(
        interp, id(builtins.__dict__), POINTER, span
    )
    candidates["interpreter_state.imports_modules"] = offsets_holding(
        interp, id(sys.modules), POINTER, span
    )

    # thread state
    candidates["thread_state.interp"] = offsets_holding(tstate, interp, POINTER, 1024)
    candidates["thread_state.thread_id"] = offsets_holding(
        tstate, threading.get_ident(), LONG, 1024
    )
    if hasattr(threading, "get_native_id"):  # not on WebAssembly builds
        candidates["thread_state.native_thread_id"] = offsets_holding(
            tstate, threading.get_native_id(), LONG, 1024
        )
    # current_frame points at the _PyInterpreterFrame on top while
    # ctypes.string_at, called straight from main(), reads the thread state:
    # string_at's own frame where it is a Python wrapper (3.14+), else
    # main's. Its executable is that code object and its previous frame runs
    # the caller. Which frame word holds which is checked against
    # interpreter_frame.executable/previous by the test. 3.14+ frames hold
    # _PyStackRef: tagged pointers, low two bits ignored.
    if hasattr(ctypes.string_at, "__code__"):
        this_code, caller_code = ctypes.string_at.__code__, sys._getframe().f_code
    else:
        this_code, caller_code = sys._getframe().f_code, sys._getframe(1).f_code
    state_bytes = ctypes.string_at(tstate, 1024)
    current, executable, previous = [], set(), set()
    for offset in range(0, 1024, POINTER):
        frame = int.from_bytes(state_bytes[offset : offset + POINTER], sys.byteorder)
        if not readable(frame, 128):
            continue
        frame_bytes = ctypes.string_at(frame, 128)
        found_here = False
        for at in range(0, 128, POINTER):
            value = int.from_bytes(frame_bytes[at : at + POINTER], sys.byteorder)
            if value & ~3 == id(this_code):
                found_here = True
                executable.add(at)
        if not found_here:
            continue
        current.append(offset)
        for at in range(0, 128, POINTER):
            prior = int.from_bytes(frame_bytes[at : at + POINTER], sys.byteorder)
            if not readable(prior, 128):
                continue
            prior_bytes = ctypes.string_at(prior, 128)
            for k in range(0, 128, POINTER):
                value = int.from_bytes(prior_bytes[k : k + POINTER], sys.byteorder)
                if value & ~3 == id(caller_code):
                    previous.add(at)
    candidates["thread_state.current_frame"] = current
    candidates["interpreter_frame.executable"] = sorted(executable)
    candidates["interpreter_frame.previous"] = sorted(previous)

    # eval_breaker (the debugger_support section, 3.14+): 3.13+ keep the
    # interpreter's instrumentation version in each thread state's eval
    # breaker above its 8 event bits, and switching a sys.monitoring event
    # on bumps it (Python/instrumentation.c, MONITORING_VERSION_INCREMENT):
    # the word that changes by a multiple of 256, its event bits unchanged.
    if hasattr(sys, "monitoring"):
        candidates["debugger_support.eval_breaker"] = eval_breaker_offsets(tstate)

    # objects
    plain = object()
    candidates["pyobject.ob_type"] = offsets_holding(id(plain), id(object), POINTER, 64)

    named = type("TruthTypeName", (), {})
    ascii_header = sys.getsizeof("") - 1  # sizeof(PyASCIIObject)
    candidates["unicode_object.asciiobject_size"] = [ascii_header]
    candidates["type_object.tp_name"] = offsets_holding(
        id(named), id(named.__name__) + ascii_header, POINTER, 1024
    )
    candidates["type_object.tp_flags"] = offsets_holding(id(named), named.__flags__, LONG, 1024)

    code = code_for_truth()
    candidates["code_object.filename"] = offsets_holding(id(code), id(code.co_filename), POINTER)
    candidates["code_object.name"] = offsets_holding(id(code), id(code.co_name), POINTER)
    candidates["code_object.qualname"] = offsets_holding(id(code), id(code.co_qualname), POINTER)
    candidates["code_object.linetable"] = offsets_holding(id(code), id(code.co_linetable), POINTER)
    candidates["code_object.firstlineno"] = offsets_holding(id(code), 4242, 4, step=4)
    candidates["code_object.argcount"] = offsets_holding(id(code), 7, 4, step=4)
    # the adaptive array as it is in memory (3.15 quickens on creation)
    raw = getattr(code, "_co_code_adaptive", code.co_code)
    candidates["code_object.co_code_adaptive"] = [
        o for o in range(0, SCAN, 2) if ctypes.string_at(id(code) + o, len(raw)) == raw
    ]

    items = tuple(object() for _ in range(777))
    candidates["tuple_object.ob_size"] = offsets_holding(id(items), 777, SSIZE, 64)
    candidates["tuple_object.ob_item"] = [
        o
        for o in offsets_holding(id(items), id(items[0]), POINTER, 64)
        if word(id(items) + o + POINTER, POINTER) == id(items[1])
    ]

    listed = [object() for _ in range(54321)]
    candidates["list_object.ob_size"] = offsets_holding(id(listed), 54321, SSIZE, 64)
    candidates["list_object.ob_item"] = offsets_pointing_to(
        id(listed), lambda array: word(array, POINTER) == id(listed[0]), span=64
    )

    text = "x" * 77777
    candidates["unicode_object.length"] = offsets_holding(id(text), 77777, SSIZE, 64)

    number = 1234.5678
    candidates["float_object.ob_fval"] = [
        o
        for o in range(0, 64, 4)
        if ctypes.c_double.from_address(id(number) + o).value == number
    ]

    blob = b"Q" * 3333
    candidates["bytes_object.ob_size"] = offsets_holding(id(blob), 3333, SSIZE, 64)
    candidates["bytes_object.ob_sval"] = [
        o for o in range(0, 64) if ctypes.string_at(id(blob) + o, len(blob)) == blob
    ]

    bits = sys.int_info.bits_per_digit
    big = (1 << (bits * 4)) + 7  # five digits, the lowest 7
    candidates["long_object.lv_tag"] = offsets_holding(id(big), 5 << 3, POINTER, 64)
    candidates["long_object.ob_digit"] = offsets_holding(
        id(big), 7, sys.int_info.sizeof_digit, 64
    )

    members = set(range(100000, 100999))
    candidates["set_object.used"] = offsets_holding(id(members), 999, SSIZE, 128)

    created, suspended, closed = generator_states()
    candidates["gen_object.gi_name"] = offsets_holding(id(created), id(created.__name__), POINTER)
    # not in the table: pydeep takes gi_qualname as the word after gi_name
    candidates["gen_object.qualname_pointer"] = offsets_holding(
        id(created), id(created.__qualname__), POINTER
    )
    candidates["gen_object.gi_frame_state"] = [
        o
        for o in range(0, SCAN)
        if len(
            {
                signed_word(id(created) + o, 1),
                signed_word(id(suspended) + o, 1),
                signed_word(id(closed) + o, 1),
            }
        )
        == 3
    ]
    # gi_iframe is an embedded frame whose executable is the generator's
    # code: the test checks gi_iframe + interpreter_frame.executable here.
    candidates["gen_object.code_pointer"] = offsets_holding(
        id(created), id(created.gi_code), POINTER, tag_bits=2
    )

    table = ctypes.string_at(runtime, 4096)
    json.dump(
        {
            "version": list(sys.version_info[:3]),
            "pointer_size": POINTER,
            "table": table.hex(),
            "candidates": candidates,
            # the generators' first bytes, for their gi_frame_state values
            "generators": {
                "created": ctypes.string_at(id(created), SCAN).hex(),
                "suspended": ctypes.string_at(id(suspended), SCAN).hex(),
                "closed": ctypes.string_at(id(closed), SCAN).hex(),
            },
        },
        sys.stdout,
        indent=1,
        sort_keys=True,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
