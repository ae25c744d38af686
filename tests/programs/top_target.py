"""Two named threads spinning in known functions for `pydeep top`: the
main thread in `main_leaf`, a thread named "worker" in `worker_leaf`
(called from `worker_loop`). Prints "ready" once both run."""
import threading


def worker_leaf():
    return sum(range(2000))


def worker_loop(started):
    started.set()
    while True:
        worker_leaf()


def main_leaf():
    return sum(range(500))


started = threading.Event()
threading.Thread(target=worker_loop, args=(started,), name="worker", daemon=True).start()
started.wait()
print("ready", flush=True)
while True:
    main_leaf()
