"""Fixture of tests/tests/trace.rs: a deterministic call-heavy workload run
by two threads once the test says go, with its own truth.

argv[1]: the ready file. Files in its folder drive the rounds:
  go1, go2 ...  run round N: main thread and worker thread each call work()
                once, reading time.monotonic_ns() (CLOCK_MONOTONIC, the
                clock of the recording's times) right before and after;
                written to roundN.json
  end           write final.json (sys.getprofile/gettrace and the
                sys.monitoring tools now, the settrace counter) and exit 0

At the end, every thread's C-level c_profilefunc (read through ctypes) and
the interpreter's eval-frame function (PEP 523) are what they were before
the windows.

The truth (per-function call counts of one work()) is taken before any
trace window with a sys.setprofile counter, then removed: work() is
deterministic, so each thread's traced counts must equal it. A sys.settrace
function stays installed on the main thread throughout: a trace window must
keep it working (it counts calls of marker()).
"""
import json
import os
import sys
import threading
import time

from c_hooks import c_profile_hooks, default_eval_frame, eval_frame

ready = sys.argv[1]
folder = os.path.dirname(ready)


from call_workload import WORKLOAD, count_calls, work


marker_calls = 0


def marker():
    pass


def tracer(frame, event, arg):
    global marker_calls
    if event == "call" and frame.f_code.co_name == "marker":
        marker_calls += 1
    return None


truth = count_calls()
start_round = threading.Event()
round_done = threading.Event()
worker_clock = {}


def worker():
    while True:
        start_round.wait()
        start_round.clear()
        before = time.monotonic_ns()
        work()
        after = time.monotonic_ns()
        worker_clock.update(thread=threading.get_native_id(), before=before, after=after)
        round_done.set()


def monitoring_tools():
    """Each sys.monitoring tool id's name and global events (3.12+): pydeep's
    tool of the window must be gone after it."""
    mon = getattr(sys, "monitoring", None)
    if mon is None:
        return []
    return [[mon.get_tool(t), mon.get_events(t)] for t in range(6)]


threading.Thread(target=worker, name="worker", daemon=True).start()
tools_before = monitoring_tools()
sys.settrace(tracer)
profile_before = repr(sys.getprofile())
c_profile_before = c_profile_hooks()
eval_frame_before = eval_frame()
trace_before = sys.gettrace() is tracer
marker()
with open(ready + ".tmp", "w") as f:
    json.dump({"truth": truth, "pid": os.getpid()}, f)
os.rename(ready + ".tmp", ready)

n = 1
while True:
    if os.path.exists(os.path.join(folder, "end")):
        break
    if not os.path.exists(os.path.join(folder, "go%d" % n)):
        time.sleep(0.005)
        continue
    round_done.clear()
    start_round.set()
    before = time.monotonic_ns()
    work()
    after = time.monotonic_ns()
    round_done.wait()
    marker()
    result = {
        # During the window: pydeep's eval-frame hook, where it is used.
        "eval_frame_is_default": eval_frame() == default_eval_frame(),
        "threads": [
            {"thread": threading.get_native_id(), "before": before, "after": after},
            dict(worker_clock),
        ],
        "marker_calls": marker_calls,
    }
    with open(os.path.join(folder, "round%d.tmp" % n), "w") as f:
        json.dump(result, f)
    os.rename(os.path.join(folder, "round%d.tmp" % n), os.path.join(folder, "round%d.json" % n))
    n += 1

marker()
final = {
    "profile_before": profile_before,
    "profile_after": repr(sys.getprofile()),
    "c_profile_before": c_profile_before,
    "c_profile_after": c_profile_hooks(),
    "eval_frame_before": eval_frame_before,
    "eval_frame_after": eval_frame(),
    "trace_kept": trace_before and sys.gettrace() is tracer,
    "tools_before": tools_before,
    "tools_after": monitoring_tools(),
    "marker_calls": marker_calls,
    "rounds": n - 1,
}
with open(os.path.join(folder, "final.tmp"), "w") as f:
    json.dump(final, f)
os.rename(os.path.join(folder, "final.tmp"), os.path.join(folder, "final.json"))
print("trace_calls: done", flush=True)
