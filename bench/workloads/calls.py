"""Call-heavy workload of the tracing benchmark (bench/trace.py).

One round calls Python functions about 1,100 times: recursion (fib),
methods, generators and closures. The workload runs rounds for --seconds
and prints, every --slice seconds, one line `slice START END ROUNDS CPU`
(CLOCK_MONOTONIC ns, and the main thread's CPU ns in the slice): the
harness compares the rate inside a profiling window with the rate of the
slices around it on the same process, per wall second and per CPU second
(on a loaded machine the latter leaves out the time other processes, the
profiler among them, took the CPU from the workload).

--anchor NAME profiles the stretch [--from, --to) seconds after the start
from inside, with one of the in-process tools the benchmark compares with:
cprofile, viztracer, setprofile (a no-op Python profile function) or
monitoring (no-op sys.monitoring PY_START/PY_RETURN callbacks, 3.12+) or
settrace (a no-op Python sys.settrace function that asks for every line:
the in-process floor of a Python-level line tracer).
--duty F runs rounds only for the fraction F of each millisecond slot (a
lower call rate, to see whether a tracer keeps up without losing events).
At start the workload prints `calls_per_round N`, counted with a
sys.setprofile counter.
"""

import argparse
import sys
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Node:
    def __init__(self, value):
        self.value = value

    def weight(self):
        return self.value * 2

    def visit(self, extra):
        return self.weight() + extra


def numbers(n):
    for i in range(n):
        yield i


def squares(n):
    for i in numbers(n):
        yield i * i


def make_scaler(k):
    def scale(x):
        return x * k

    return scale


def one_round():
    total = fib(12)
    nodes = [Node(i) for i in range(40)]
    for node in nodes:
        total += node.visit(1)
    total += sum(squares(60))
    scale = make_scaler(3)
    for i in range(100):
        total += scale(i)
    return total


def count_calls():
    calls = 0

    def counter(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(counter)
    one_round()
    sys.setprofile(None)
    return calls - 1  # the sys.setprofile(None) call itself


class Anchor:
    """An in-process profiler switched on and off by the workload."""

    def __init__(self, name):
        self.name = name
        self.profiler = None

    def start(self):
        if self.name == "cprofile":
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()
        elif self.name == "viztracer":
            import viztracer

            self.profiler = viztracer.VizTracer(tracer_entries=10_000_000, verbose=0)
            self.profiler.start()
        elif self.name == "setprofile":
            sys.setprofile(lambda frame, event, arg: None)
        elif self.name == "settrace":

            def local(frame, event, arg):
                return local

            sys.settrace(local)
        elif self.name == "monitoring":
            monitoring = sys.monitoring
            tool = monitoring.PROFILER_ID
            monitoring.use_tool_id(tool, "bench")
            monitoring.register_callback(tool, monitoring.events.PY_START, lambda code, offset: None)
            monitoring.register_callback(tool, monitoring.events.PY_RETURN, lambda code, offset, value: None)
            monitoring.set_events(tool, monitoring.events.PY_START | monitoring.events.PY_RETURN)

    def stop(self):
        if self.name == "cprofile":
            self.profiler.disable()
        elif self.name == "viztracer":
            self.profiler.stop()
            self.profiler.clear()
        elif self.name == "setprofile":
            sys.setprofile(None)
        elif self.name == "settrace":
            sys.settrace(None)
        elif self.name == "monitoring":
            monitoring = sys.monitoring
            monitoring.set_events(monitoring.PROFILER_ID, 0)
            monitoring.free_tool_id(monitoring.PROFILER_ID)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--slice", type=float, default=0.25)
    parser.add_argument("--anchor", default=None)
    parser.add_argument("--from", dest="start", type=float, default=0.0)
    parser.add_argument("--to", dest="stop", type=float, default=0.0)
    parser.add_argument("--duty", type=float, default=1.0)
    args = parser.parse_args()
    print("calls_per_round", count_calls(), flush=True)
    anchor = Anchor(args.anchor) if args.anchor else None
    begin = time.monotonic_ns()
    end = begin + int(args.seconds * 1e9)
    slice_ns = int(args.slice * 1e9)
    on_ns, off_ns = begin + int(args.start * 1e9), begin + int(args.stop * 1e9)
    started = stopped = False
    slot_ns = 1_000_000
    busy_ns = int(slot_ns * args.duty)
    now = begin
    while now < end:
        if anchor and not started and now >= on_ns:
            anchor.start()
            started = True
        if anchor and started and not stopped and now >= off_ns:
            anchor.stop()
            stopped = True
        slice_start = now
        cpu_start = time.thread_time_ns()
        slice_end = min(slice_start + slice_ns, end)
        rounds = 0
        while now < slice_end:
            one_round()
            rounds += 1
            now = time.monotonic_ns()
            if busy_ns < slot_ns and (now - begin) % slot_ns >= busy_ns:
                time.sleep((slot_ns - (now - begin) % slot_ns) / 1e9)
                now = time.monotonic_ns()
        print("slice", slice_start, now, rounds, time.thread_time_ns() - cpu_start, flush=True)
    if anchor and started and not stopped:
        anchor.stop()


if __name__ == "__main__":
    main()
