"""Fixture of tests/tests/trace.rs (`--functions`, `--lines`): a deterministic
workload run by two threads once the test says go, with its own truth.

argv[1]: the ready file. Files in its folder drive the rounds:
  go1, go2 ...  run round N: main thread and worker thread each call work()
                once, reading time.monotonic_ns() right before and after;
                written to roundN.json
  gone          (once) wait until no thread has a C-level profile or trace
                function any more (the agent was killed: the tracer's
                watchdog removes them by itself), at most 60 s; gone.json
  end           write final.json and exit 0

The truth of one work(), taken in-process before any trace window, for the
functions the test's regex selects (SELECTED) only:
  calls  a sys.setprofile counter: "call" events per function name
  lines  a sys.settrace counter: "line" events per "name:line"
Both are removed before the windows. work() also runs code the regex does
not select (work itself, noise, Acc.__init__), whose events must not be
recorded. After the last round the truth is taken again (the target's own
settrace and setprofile still work after the windows, and count the same).

sys.gettrace() and sys.getprofile() return the hook's object, which a C
hook installed without one (pydeep's) leaves None: so c_hooks() reads each
thread's c_profilefunc and c_tracefunc themselves through ctypes, at the
offsets found by setting its own (c_traceobj holds the function set; the
fields are c_profilefunc, c_tracefunc, c_profileobj, c_traceobj in that
order on 3.9-3.13).
"""
import json
import os
import sys
import threading
import time

from c_hooks import c_hooks

ready = sys.argv[1]
folder = os.path.dirname(ready)

SELECTED = {"spin", "add", "evens"}


def noise(n):
    s = 0
    for i in range(n):
        s += i
    return s


class Acc:
    def __init__(self):
        self.total = 0

    def add(self, x):
        if x % 3 == 0:
            self.total += x
        else:
            self.total -= 1
        return self.total


def evens(n):
    for i in range(n):
        if i % 2 == 0:
            yield i


def spin(n):
    acc = Acc()
    for i in range(n):
        acc.add(i)
        noise(3)
    total = sum(evens(n))
    try:
        raise KeyError(n)
    except KeyError:
        total += 1
    return total + acc.total


def work():
    noise(20)
    return spin(40)


def ours(frame):
    return frame.f_code.co_filename == __file__ and frame.f_code.co_name in SELECTED


def take_truth():
    calls = {}
    lines = {}

    def profiler(frame, event, arg):
        if event == "call" and ours(frame):
            name = frame.f_code.co_name
            calls[name] = calls.get(name, 0) + 1

    def local(frame, event, arg):
        if event == "line":
            key = "%s:%d" % (frame.f_code.co_name, frame.f_lineno)
            lines[key] = lines.get(key, 0) + 1
        return local

    def tracer(frame, event, arg):
        return local if ours(frame) else None

    sys.setprofile(profiler)
    work()
    sys.setprofile(None)
    sys.settrace(tracer)
    work()
    sys.settrace(None)
    return calls, lines


calls, lines = take_truth()
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


threading.Thread(target=worker, name="worker", daemon=True).start()
hooks_before = [repr(sys.getprofile()), repr(sys.gettrace())]
c_hooks_before = c_hooks()
with open(ready + ".tmp", "w") as f:
    json.dump({"calls": calls, "lines": lines, "pid": os.getpid()}, f)
os.rename(ready + ".tmp", ready)

n = 1
while True:
    if os.path.exists(os.path.join(folder, "end")):
        break
    gone = os.path.join(folder, "gone")
    if os.path.exists(gone) and not os.path.exists(gone + ".json"):
        waited_from = time.monotonic()
        hooked_at_first = c_hooks()
        deadline = waited_from + 60
        while any(any(h) for h in c_hooks()) and time.monotonic() < deadline:
            noise(10)
            time.sleep(0.01)
        with open(gone + ".tmp", "w") as f:
            json.dump({"c_hooks": c_hooks(), "at_first": hooked_at_first,
                       "waited_s": time.monotonic() - waited_from}, f)
        os.rename(gone + ".tmp", gone + ".json")
    if not os.path.exists(os.path.join(folder, "go%d" % n)):
        time.sleep(0.005)
        continue
    round_done.clear()
    start_round.set()
    before = time.monotonic_ns()
    work()
    after = time.monotonic_ns()
    round_done.wait()
    result = {
        "threads": [
            {"thread": threading.get_native_id(), "before": before, "after": after},
            dict(worker_clock),
        ],
    }
    with open(os.path.join(folder, "round%d.tmp" % n), "w") as f:
        json.dump(result, f)
    os.rename(os.path.join(folder, "round%d.tmp" % n), os.path.join(folder, "round%d.json" % n))
    n += 1

hooks_after = [repr(sys.getprofile()), repr(sys.gettrace())]
c_hooks_after = c_hooks()
calls_after, lines_after = take_truth()
final = {
    "hooks_before": hooks_before,
    "hooks_after": hooks_after,
    "c_hooks_before": c_hooks_before,
    "c_hooks_after": c_hooks_after,
    "truth_again": calls_after == calls and lines_after == lines,
    "rounds": n - 1,
}
with open(os.path.join(folder, "final.tmp"), "w") as f:
    json.dump(final, f)
os.rename(os.path.join(folder, "final.tmp"), os.path.join(folder, "final.json"))
print("trace_lines: done", flush=True)
