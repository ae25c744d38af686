"""Fixture of tests/tests/trace.rs's test that a window says when it may
have missed calls: during the window the program makes a class with
type() whose __init__ is a function not named __init__ (`make`), and
calls the class 500 times at one call site. 3.13 specialises that site
as CALL_ALLOC_AND_ENTER_INIT, which runs `make` inline, past PEP 523's
eval-frame hook, and pydeep's rule for a fresh __init__ (give it local
sys.monitoring call events at its first call through the hook) goes by
the name `__init__`: so its calls are missed, and the window must say so
(TraceEventBatch.unwatched_functions). The same for 3.11.0-3.11.3's
BINARY_SUBSCR_GETITEM: a class made during the window whose __getitem__
is a function named `pick`, subscribed 500 times at one site. The truth:
`make` and `pick` count their own calls, and say what they are as the
window must name them (round.json "functions": co_qualname, co_name
before 3.11; co_filename; co_firstlineno).

argv[1]: the ready file ({"ready": true} once started). Files in its
folder: go -> the class is made and called between time.monotonic_ns()
readings, round.json (the counts, the readings, the thread's native id);
end (the window is over) -> exit 0. The classes stay alive until then, so
the walk at the window's end finds it.
"""
import json
import os
import sys
import threading
import time

CALLS = 0
PICKS = 0


def make(self, v):
    global CALLS
    CALLS += 1
    self.v = v


def pick(self, i):
    global PICKS
    PICKS += 1
    return i


def subscribe(holder, n):
    total = 0
    for i in range(n):
        total += holder[i]
    return total


def build(cls, n):
    total = 0
    for i in range(n):
        total += cls(i).v
    return total


def identity(function):
    code = function.__code__
    return {
        "qualname": getattr(code, "co_qualname", code.co_name),
        "filename": code.co_filename,
        "first_line": code.co_firstlineno,
    }


def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.01)


def write(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def main():
    ready = sys.argv[1]
    folder = os.path.dirname(ready)
    write(ready, {"ready": True})
    wait_for(os.path.join(folder, "go"))
    before = time.monotonic_ns()
    made = type("Made", (), {"__init__": make})
    total = build(made, 500)
    holder = type("Holder", (), {"__getitem__": pick})
    total += subscribe(holder(), 500)
    after = time.monotonic_ns()
    write(
        os.path.join(folder, "round.json"),
        {
            "calls": CALLS,
            "picks": PICKS,
            "total": total,
            "before": before,
            "after": after,
            "thread": threading.get_native_id(),
            "functions": {"make": identity(make), "pick": identity(pick)},
        },
    )
    wait_for(os.path.join(folder, "end"))
    assert made(1).v == 1 and holder()[2] == 2


main()
