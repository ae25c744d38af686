"""A long-running target for the daemon tests: computes in known functions
until killed.

Usage: python daemon_target.py READY_JSON TAG [WORKERS]

TAG only marks the command line, so that a daemon rule can select this
process and no other. Once running, the program writes READY_JSON
atomically: its pid, its version and, as ground truth taken in-process by
sys._getframe, the function names of the main thread's stack at its
innermost function (outermost first). WORKERS extra threads (default 0)
run the same functions.
"""
import json
import os
import sys
import threading

READY = sys.argv[1]
WORKERS = int(sys.argv[3]) if len(sys.argv) > 3 else 0
truth = {}


def daemon_leaf(n):
    total = 0
    for i in range(n):
        total += i * i
    if not truth and threading.current_thread() is threading.main_thread():
        frame = sys._getframe()
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        truth.update(
            stack=names[::-1],
            pid=os.getpid(),
            version="%d.%d.%d" % sys.version_info[:3],
        )
        with open(READY + ".tmp", "w") as out:
            json.dump(truth, out)
        os.rename(READY + ".tmp", READY)
    return total


def daemon_work():
    while True:
        daemon_leaf(2000)


for _ in range(WORKERS):
    threading.Thread(target=daemon_work, daemon=True).start()

daemon_work()
