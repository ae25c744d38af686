"""Threads that stop at known points and write their own stacks as truth.

Usage: python known_stacks.py TRUTH_JSON [DEPTH]

Starts named threads (a deep recursion, a generator, a closure, one idle on
a lock) and blocks the main thread. A "recorder" thread waits until every
one of them is asleep in the kernel at its blocking point, takes
sys._current_frames() (function, file, line, f_lasti of every frame), writes
TRUTH_JSON atomically and exits. From then on nothing in the process runs
Python code until it is killed, so a paused snapshot must match the truth
exactly, instruction offsets included.
"""
import json
import os
import sys
import threading

TRUTH = sys.argv[1]
DEPTH = int(sys.argv[2]) if len(sys.argv) > 2 else 60

release = threading.Event()  # never set: everyone waits forever
held = threading.Lock()
held.acquire()


def wait_forever():
    release.wait()


def recurse(n):
    if n == 0:
        wait_forever()
    else:
        recurse(n - 1)


def deep_worker():
    recurse(DEPTH)


def numbers():
    yield 1
    wait_forever()
    yield 2


def generator_worker():
    for _ in numbers():
        pass


def make_closure(label):
    def closure():
        if label:
            wait_forever()
        return (1, "a", 2.5, None), 0.1, 1e16  # constants of several types
    return closure


def closure_worker():
    make_closure("x")()


def idle_on_lock():
    held.acquire()


WORKERS = {
    "deep-recursion": deep_worker,
    "generator": generator_worker,
    "closure": closure_worker,
    "idle-lock": idle_on_lock,
}
# Innermost function each thread must be in before the truth is taken.
BLOCKED_IN = {
    "deep-recursion": "wait",
    "generator": "wait",
    "closure": "wait",
    "idle-lock": "idle_on_lock",
    "MainThread": "wait",
}


def kernel_state(native_id):
    with open("/proc/self/task/%d/stat" % native_id) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def bounded_repr(value):
    """notes/bytecode.md's rule, for the constant types the agent renders."""
    if hasattr(value, "co_name"):
        return "<code %s>" % value.co_name
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def code_truth(code):
    """The code object as CPython exposes it, for comparison with the agent."""
    adaptive = getattr(code, "_co_code_adaptive", None)
    table = code.co_linetable if sys.version_info >= (3, 10) else code.co_lnotab
    return {
        "qualname": getattr(code, "co_qualname", code.co_name),
        "first_line": code.co_firstlineno,
        "bytecode": (adaptive if adaptive is not None else code.co_code).hex(),
        "line_table": table.hex(),
        "varnames": list(code.co_varnames),
        "cellvars": list(code.co_cellvars),
        "freevars": list(code.co_freevars),
        "names": list(code.co_names),
        "consts": [
            [type(c).__name__, bounded_repr(c)] for c in code.co_consts
        ],
        "argcount": code.co_argcount,
        "posonlyargcount": code.co_posonlyargcount,
        "kwonlyargcount": code.co_kwonlyargcount,
        "flags": code.co_flags,
        "stacksize": code.co_stacksize,
    }


def frames_of(frame):
    out = []
    while frame is not None:
        code = frame.f_code
        out.append({
            "function": code.co_name,
            "qualname": getattr(code, "co_qualname", code.co_name),
            "filename": code.co_filename,
            "line": frame.f_lineno,
            "lasti": frame.f_lasti,
            "first_line": code.co_firstlineno,
            "code": code_truth(code),
        })
        frame = frame.f_back
    return out


def recorder(threads):
    import time
    main = threading.main_thread()
    watched = list(threads) + [main]
    while True:
        frames = sys._current_frames()
        ready = all(
            t.ident in frames
            and frames[t.ident].f_code.co_name == BLOCKED_IN[t.name]
            and kernel_state(t.native_id) == "S"
            for t in watched
        )
        if ready:
            # Twice the same reading: nothing was moving in between.
            again = sys._current_frames()
            if all(frames_of(frames[t.ident]) == frames_of(again[t.ident]) for t in watched):
                break
        time.sleep(0.01)
    truth = {
        "pid": os.getpid(),
        "version": list(sys.version_info[:3]),
        "threads": [
            {
                "name": t.name,
                "ident": t.ident,
                "native_id": t.native_id,
                "is_main": t is main,
                "idle_on_lock": t.name == "idle-lock",
                "frames": frames_of(frames[t.ident]),
            }
            for t in watched
        ],
    }
    del frames, again
    with open(TRUTH + ".tmp", "w") as f:
        json.dump(truth, f, indent=1)
    os.rename(TRUTH + ".tmp", TRUTH)


def main():
    sys.setrecursionlimit(max(1000, DEPTH + 100))
    threads = [threading.Thread(target=fn, name=name, daemon=True) for name, fn in WORKERS.items()]
    for t in threads:
        t.start()
    threading.Thread(target=recorder, args=(threads,), name="recorder", daemon=True).start()
    wait_forever()


if __name__ == "__main__":
    main()
