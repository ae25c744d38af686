"""Threads that each add 1 to their own slot of a shared array of
counters in a tight loop, for tests of pausing (pydeep's pause.rs): while
the process is paused no slot may move; once it is let go every slot moves.

Usage: pause_counters.py READY_FILE MODE N
  spin   N threads and the main thread spin on their slots forever
  churn  the main thread keeps starting threads that add N to slot 1 and
         end (at most 4 alive), counting the threads started in slot 0
  exit   like spin, but thread 1 ends the process with os._exit(3) once
         the file READY_FILE.exit exists
Writes READY_FILE (JSON: the array's address, its length and the spinning
threads' native ids) once every slot has moved.
"""
import ctypes
import json
import os
import sys
import threading

ready, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
spinners = count if mode in ("spin", "exit") else 1
counters = (ctypes.c_uint64 * (spinners + 1))()
native_ids = [0] * (spinners + 1)


def spin(slot):
    native_ids[slot] = threading.get_native_id()
    c = counters
    ending = mode == "exit" and slot == 1
    while True:
        c[slot] += 1
        if ending and c[slot] % 1000 == 0 and os.path.exists(ready + ".exit"):
            os._exit(3)


def short_lived():
    c = counters
    for _ in range(count):
        c[1] += 1


def write_truth():
    with open(ready + ".tmp", "w") as f:
        json.dump(
            {
                "address": ctypes.addressof(counters),
                "slots": len(counters),
                "native_ids": native_ids,
            },
            f,
        )
    os.rename(ready + ".tmp", ready)


def main():
    native_ids[0] = threading.get_native_id()
    written = False
    c = counters
    if mode == "churn":
        alive = []
        while True:
            thread = threading.Thread(target=short_lived, daemon=True)
            thread.start()
            alive.append(thread)
            c[0] += 1
            if len(alive) > 4:
                alive.pop(0).join()
            if not written and c[1] > 0:
                written = True
                write_truth()
    for slot in range(1, spinners + 1):
        threading.Thread(target=spin, args=(slot,), daemon=True).start()
    rounds = 0
    while True:
        c[0] += 1
        rounds += 1
        if not written and rounds % 10000 == 0 and all(c):
            written = True
            write_truth()


main()
