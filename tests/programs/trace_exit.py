"""Fixture of tests/tests/trace_exit.rs: a program that exits while pydeep's
tracer waits for the GIL.

argv[1]: the ready file. Runs Python calls (so the tracer can be loaded)
until a file named `end` appears next to it, then returns from the module:
the interpreter finalizes. At exit, an atexit function written in C holds
the GIL for HOLD_SECONDS (ctypes.PyDLL calls keep the GIL, and no bytecode
runs between its return and the start of finalization, so no eval-breaker
check hands the GIL over): the tracer's watchdog, which rescans the
threads every 100 ms, is then waiting for the GIL in PyGILState_Ensure when
the interpreter starts finalizing, and CPython ends such a thread with
pthread_exit. That forced unwind once aborted the target ("panic in a
function that cannot unwind": Rust's std thread entry). The program must
exit 0 with nothing from the tracer on its stderr.
"""
import atexit
import ctypes
import os
import sys

HOLD_SECONDS = 2

ready = sys.argv[1]
folder = os.path.dirname(ready)
atexit.register(ctypes.PyDLL(None).usleep, HOLD_SECONDS * 1_000_000)


def step(n):
    return n + 1


with open(ready + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(ready + ".tmp", ready)
while not os.path.exists(os.path.join(folder, "end")):
    for i in range(1000):
        step(i)
print("trace_exit: leaving", flush=True)
