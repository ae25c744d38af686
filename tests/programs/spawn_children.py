"""Starts child Python processes that burn CPU in a known function.

Two multiprocessing workers (fork) run `child_work`, then one child started
through subprocess runs `spawned_work`. Each child writes its pid to the
directory in argv[1], so a test knows which processes to expect.

Usage: spawn_children.py PID_DIR
"""
import multiprocessing
import os
import subprocess
import sys
import time


def child_work(pid_dir, seconds):
    with open(os.path.join(pid_dir, "fork-%d" % os.getpid()), "w"):
        pass
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(i * i for i in range(1000))
    return total


SPAWNED = """
import os, sys, time
def spawned_work():
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        sum(i * i for i in range(1000))
open(os.path.join(sys.argv[1], "spawn-%d" % os.getpid()), "w").close()
spawned_work()
"""


def main():
    pid_dir = sys.argv[1]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=child_work, args=(pid_dir, 1.5)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    subprocess.run([sys.executable, "-c", SPAWNED, pid_dir], check=True)


if __name__ == "__main__":
    main()
