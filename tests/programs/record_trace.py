"""Fixture of tests/tests/record_trace.rs: run under `pydeep record --trace`,
a deterministic call-heavy workload once the test says go, with its own
truth taken after the trace window.

argv[1]: a folder the test and the fixture share.
  first_frame()  is the program's first call: traced (the tracer goes in
                 at Py_RunMain, before the program's first line)
  ready          written once the worker thread runs, with the number of
                 Python threads; the test lets the work go only once pydeep
                 has said that many threads have the hook (the tracer's
                 rescan hooks a thread started after the window opened)
  go             (from the test) main and worker thread each run work()
                 once, reading
                 time.monotonic_ns() around it: round.json
  end            (from the test, once the window is over) the truth: the
                 calls of one work() counted by a sys.setprofile counter,
                 and every thread's C hooks after the window (ctypes);
                 then a second of plain work to be sampled; final.json
"""
import json
import os
import sys
import threading
import time


def first_frame():
    return 1


first_frame()
folder = sys.argv[1]


from call_workload import WORKLOAD, count_calls, fib, work


def wait_for(name):
    path = os.path.join(folder, name)
    while not os.path.exists(path):
        time.sleep(0.005)


def write(name, value):
    path = os.path.join(folder, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)


go = threading.Event()
clocks = {}


def worker():
    go.wait()
    before = time.monotonic_ns()
    work()
    after = time.monotonic_ns()
    clocks["worker"] = dict(thread=threading.get_native_id(), before=before, after=after)


thread = threading.Thread(target=worker, name="worker")
thread.start()
write("ready", {"pid": os.getpid(), "threads": threading.active_count()})
wait_for("go")
go.set()
before = time.monotonic_ns()
work()
after = time.monotonic_ns()
clocks["main"] = dict(thread=threading.get_native_id(), before=before, after=after)
thread.join()
write("round.json", clocks)
wait_for("end")
truth = count_calls()
from c_hooks import c_hooks  # noqa: E402  (sets and clears hooks of its own)

hooks = c_hooks()
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    fib(15)
write("final.json", {"truth": truth, "hooks": hooks, "profile": repr(sys.getprofile())})
