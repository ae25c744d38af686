"""N threads parked in `parked()`, the main thread in `main_waits()`.

Usage: many_threads.py READY_FILE N
Writes READY_FILE (JSON: the native ids of the parked threads) once all N
are parked.
"""
import json
import os
import sys
import threading

ready, count = sys.argv[1], int(sys.argv[2])
threading.stack_size(256 * 1024)
forever = threading.Event()
lock = threading.Lock()
native_ids = []
all_parked = threading.Barrier(count + 1)


def parked():
    with lock:
        native_ids.append(threading.get_native_id())
    all_parked.wait()
    forever.wait()


def main_waits():
    for i in range(count):
        threading.Thread(target=parked, name="parked-%d" % i, daemon=True).start()
    all_parked.wait()
    with open(ready + ".tmp", "w") as f:
        json.dump({"native_ids": native_ids}, f)
    os.rename(ready + ".tmp", ready)
    forever.wait()


main_waits()
