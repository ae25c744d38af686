"""Runs threads one after another, so `threading.get_ident()` values are
reused by new OS threads; each spins a while. Writes its truth (name, ident,
native id and seconds spun of each thread) as JSON to argv[1] at the end."""
import json
import sys
import threading
import time

truth = []


def spin(seconds):
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sum(range(100))
    me = threading.current_thread()
    truth.append(
        {
            "name": me.name,
            "ident": threading.get_ident(),
            "native_id": threading.get_native_id(),
            "seconds": time.perf_counter() - start,
        }
    )


for i in range(4):
    worker = threading.Thread(target=spin, args=(0.4,), name=f"late-{i}")
    worker.start()
    worker.join()

with open(sys.argv[1], "w") as out:
    json.dump(truth, out)
