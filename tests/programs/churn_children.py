"""Forks a child that goes on running Python, and starts 50 short-lived
Python children in batches of 10, killing each with SIGKILL once the test
says it has been recorded.

Usage: churn_children.py PID_DIR CONTROL_DIR [COUNT]

Each child writes PID_DIR/child-PID (the fork: PID_DIR/fork-PID) once it is
in its work function; the program kills child PID when CONTROL_DIR/kill-PID
appears, and the fork ends when CONTROL_DIR/stop-PID appears.
"""
import os
import subprocess
import sys
import time

pid_dir, control = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 50
BATCH = 10
LIMIT = 120  # seconds any wait here may take before giving up

CHILD = """
import os, sys
def short_lived():
    open(os.path.join(sys.argv[1], "child-%d" % os.getpid()), "w").close()
    total = 0
    while True:
        total += sum(i * i for i in range(1000))
short_lived()
"""


def wait_for(path):
    deadline = time.monotonic() + LIMIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("churn_children.py: no " + path)
        time.sleep(0.01)


def forked_child_work():
    me = os.getpid()
    open(os.path.join(pid_dir, "fork-%d" % me), "w").close()
    stop = os.path.join(control, "stop-%d" % me)
    deadline = time.monotonic() + LIMIT
    total = 0
    while not os.path.exists(stop) and time.monotonic() < deadline:
        total += sum(i * i for i in range(1000))
    os._exit(0)


def main():
    # So that a failing test can end every process of this program.
    open(os.path.join(pid_dir, "main-%d" % os.getpid()), "w").close()
    fork = os.fork()
    if fork == 0:
        forked_child_work()
    started = 0
    while started < count:
        batch = [
            subprocess.Popen([sys.executable, "-c", CHILD, pid_dir])
            for _ in range(min(BATCH, count - started))
        ]
        started += len(batch)
        for child in batch:
            wait_for(os.path.join(control, "kill-%d" % child.pid))
            child.kill()
            child.wait()
    os.waitpid(fork, 0)


main()
