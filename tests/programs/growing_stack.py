"""Threads whose stacks only grow while they are sampled, then stop.

Usage: python growing_stack.py READY_FILE DEPTH THREADS BUSY

Starts THREADS threads that spin (no calls: no frame is pushed or popped)
until told to go, then writes READY_FILE (its pid). Once READY_FILE + ".go"
exists, every thread calls `grow` DEPTH levels deep, each level first
looping BUSY times (a few microseconds) and then calling deeper, without
ever returning: at the bottom it blocks in a C call (a lock acquire, no
Python frame). Deep stacks of small frames cross many data-stack chunks
on 3.11+ (16 KiB each, Python/pystate.c push_chunk). From "go" until the
threads block, every stack of these threads is a prefix of its final
stack: nothing returns.

Once every thread is at the bottom, the main thread writes
READY_FILE + ".truth" (JSON): for each thread (ident) its frames as
sys._current_frames shows them, outermost first, (function, f_lasti).
"""
import os
import sys
import threading
import time

from fixture_support import write_json_atomically

READY = sys.argv[1]
DEPTH, THREADS, BUSY = (int(a) for a in sys.argv[2:5])
sys.setrecursionlimit(DEPTH + 1000)
# 3.9/3.10 recurse on the C stack too.
threading.stack_size(256 << 20)

go = False
spinning = []
arrived = []
bottom = threading.Lock()
bottom.acquire()


def grow(level):
    total = 0
    for i in range(BUSY):
        total += i
    if level < DEPTH:
        grow(level + 1)
    else:
        arrived.append(threading.get_ident())
        bottom.acquire()


def grower():
    spinning.append(threading.get_ident())
    while not go:
        pass
    grow(1)


def main():
    global go
    threads = [threading.Thread(target=grower, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    while len(spinning) < THREADS:
        time.sleep(0.001)
    with open(READY + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(READY + ".tmp", READY)
    while not os.path.exists(READY + ".go"):
        time.sleep(0.001)
    go = True
    while len(arrived) < THREADS:
        time.sleep(0.001)
    # Each thread appended itself right before blocking in acquire().
    time.sleep(0.2)
    frames = sys._current_frames()
    truth = {"threads": []}
    for ident in arrived:
        stack = []
        frame = frames[ident]
        while frame is not None:
            stack.append({"function": frame.f_code.co_name, "lasti": frame.f_lasti})
            frame = frame.f_back
        stack.reverse()
        truth["threads"].append({"ident": ident, "frames": stack})
    write_json_atomically(READY + ".truth", truth)
    bottom.acquire()


main()
