"""Forks and exits at once: the child, re-parented away from its parent at
its first instruction, works in `orphan_work` for argv[2] seconds, then
writes its pid to argv[1]."""
import os
import sys
import time


def orphan_work(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


if os.fork() == 0:
    orphan_work(float(sys.argv[2]))
    with open(sys.argv[1], "w") as out:
        out.write(str(os.getpid()))
    os._exit(0)
os._exit(0)
