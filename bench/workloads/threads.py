"""Four busy threads, each running the depth-30 CPU sweep of cpu_depth.py."""

import threading
import time

from common import Counter, finish, install, parse


def level(k, depth, counter, slot):
    if k > depth // 2:
        total = 0
        for i in range(150):
            total += i * i % 7
        counter.slots[slot] += 1
    if k < depth:
        level(k + 1, depth, counter, slot)


def worker(counter, slot, depth, stop):
    while not stop.is_set():
        level(1, depth, counter, slot)


def main():
    args = parse(__doc__, threads=4, depth=30)
    counter = Counter(args.threads)
    stop = threading.Event()
    workers = [
        threading.Thread(target=worker, args=(counter, n, args.depth, stop), name=f"busy-{n}", daemon=True)
        for n in range(args.threads)
    ]
    for thread in workers:
        thread.start()
    install(counter)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    stop.set()
    finish(counter)


if __name__ == "__main__":
    main()
