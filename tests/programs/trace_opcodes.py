"""Fixture of tests/tests/trace.rs (`--opcodes`): a loop of known count,
with its own per-instruction truth.

argv[1]: the ready file. Files in its folder drive the rounds:
  go1, go2 ...  round N: call loop(0) once (its call event is what makes
                pydeep select loop's code object), on 3.12+ wait until a
                sys.monitoring tool other than this program's has local
                INSTRUCTION events on loop's code (pydeep's), then call
                loop(N) CALLS times; write roundN.json
  end           write final.json (the hooks now) and exit 0

The truth is taken before any window, in-process, per instruction offset
of one loop(0) and one loop(N): f_trace_opcodes set by a sys.settrace
function on 3.9-3.11, a sys.monitoring tool with local INSTRUCTION events
on 3.12+ (the same mechanisms pydeep uses in the target). The hooks
(sys.getprofile, sys.gettrace, every thread's C-level profile and trace
functions, and on 3.12+ the sys.monitoring tool ids) are recorded before
the windows and at the end.
"""
import json
import os
import sys
import time

from c_hooks import c_hooks

ready = sys.argv[1]
folder = os.path.dirname(ready)
N = 40
CALLS = 3
MONITORING = sys.version_info >= (3, 12)


def loop(n):
    total = 0
    for i in range(n):
        total += i * 2
    return total


def own_counts(n):
    """Executions per instruction offset of one loop(n), counted here."""
    counts = {}
    code = loop.__code__
    if MONITORING:
        mon = sys.monitoring
        tool = next(t for t in range(6) if mon.get_tool(t) is None)
        mon.use_tool_id(tool, "trace_opcodes fixture")

        def instruction(c, offset):
            if c is code:
                counts[offset] = counts.get(offset, 0) + 1

        mon.register_callback(tool, mon.events.INSTRUCTION, instruction)
        mon.set_local_events(tool, code, mon.events.INSTRUCTION)
        loop(n)
        mon.set_local_events(tool, code, 0)
        mon.register_callback(tool, mon.events.INSTRUCTION, None)
        mon.free_tool_id(tool)
    else:

        def local(frame, event, arg):
            if event == "opcode":
                counts[frame.f_lasti] = counts.get(frame.f_lasti, 0) + 1
            return local

        def tracer(frame, event, arg):
            if frame.f_code is code:
                frame.f_trace_opcodes = True
                return local
            return None

        sys.settrace(tracer)
        loop(n)
        sys.settrace(None)
    return counts


def hooks():
    state = {
        "profile": repr(sys.getprofile()),
        "trace": repr(sys.gettrace()),
        "c_hooks": c_hooks(),
    }
    if MONITORING:
        state["tools"] = [sys.monitoring.get_tool(t) for t in range(6)]
    return state


def instrumented_by_another_tool():
    mon = sys.monitoring
    return any(
        mon.get_local_events(t, loop.__code__) & mon.events.INSTRUCTION
        for t in range(6)
        if mon.get_tool(t) is not None
    )


truth = {"warm": own_counts(0), "run": own_counts(N), "n": N, "calls": CALLS}
before = hooks()
with open(ready + ".tmp", "w") as f:
    json.dump({"truth": truth, "pid": os.getpid(), "monitoring": MONITORING}, f)
os.rename(ready + ".tmp", ready)

n = 1
while not os.path.exists(os.path.join(folder, "end")):
    if not os.path.exists(os.path.join(folder, "go%d" % n)):
        time.sleep(0.005)
        continue
    loop(0)
    instrumented = None
    if MONITORING:
        deadline = time.monotonic() + 60
        while not instrumented_by_another_tool() and time.monotonic() < deadline:
            time.sleep(0.001)
        instrumented = instrumented_by_another_tool()
    for _ in range(CALLS):
        loop(N)
    with open(os.path.join(folder, "round%d.tmp" % n), "w") as f:
        json.dump({"instrumented": instrumented}, f)
    os.rename(os.path.join(folder, "round%d.tmp" % n), os.path.join(folder, "round%d.json" % n))
    n += 1

final = {"before": before, "after": hooks()}
with open(os.path.join(folder, "final.tmp"), "w") as f:
    json.dump(final, f)
os.rename(os.path.join(folder, "final.tmp"), os.path.join(folder, "final.json"))
