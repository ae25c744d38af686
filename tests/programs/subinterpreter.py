"""A thread running code in a subinterpreter, asleep at a known point.

Usage: python subinterpreter.py READY_FILE

The "runner" thread enters a new subinterpreter and calls sub_wait(), which
writes READY_FILE and sleeps; the main thread waits on an Event. The
runner's OS thread then has two thread states: one in the main interpreter
(inside run_string) and one in the subinterpreter (in sub_wait).
"""
import sys
import threading

try:
    import _xxsubinterpreters as interpreters
except ImportError:  # 3.13 renamed it
    import _interpreters as interpreters

READY = sys.argv[1]
CODE = """
import os, time

def sub_wait():
    with open(%r + ".tmp", "w") as f:
        f.write("ready")
    os.rename(%r + ".tmp", %r)
    time.sleep(1000)

sub_wait()
""" % (READY, READY, READY)


def runner():
    interpreters.run_string(interpreters.create(), CODE)


threading.Thread(target=runner, name="runner", daemon=True).start()
threading.Event().wait()
