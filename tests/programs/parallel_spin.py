"""Four threads computing in pure Python at the same time, each in a
function of its own (spin_0 ... spin_3), never blocking.

Usage: python parallel_spin.py READY_FILE

Writes READY_FILE (its pid) once every thread has started spinning. On a
free-threaded build (no GIL) the four really run at once; on a GIL build
they take turns.
"""
import os
import sys
import threading
import time

READY = sys.argv[1]
started = threading.Barrier(5)
spinning = []


def make(n):
    def spin():
        started.wait()
        spinning.append(n)
        x = 0
        while True:
            for i in range(1000):
                x = (x + i * n) % 1000003

    spin.__name__ = spin.__qualname__ = f"spin_{n}"
    names = {"co_name": f"spin_{n}"}
    if sys.version_info >= (3, 11):
        names["co_qualname"] = f"spin_{n}"
    spin.__code__ = spin.__code__.replace(**names)
    return spin


threads = [threading.Thread(target=make(n), name=f"spinner-{n}", daemon=True) for n in range(4)]
for t in threads:
    t.start()
started.wait()
# Past the barrier every spinner is in its own function's loop.
while len(spinning) < 4:
    time.sleep(0.01)
with open(READY + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(READY + ".tmp", READY)
threading.Event().wait()
