"""A heap of a million objects for the heap-walk figure (pydeep heap).

Builds --objects instances of a small class (each GC-tracked, with its
own attribute), then idles; the work counter is the number built, so the
harness can check the count pydeep reports against it.
"""

import time

from common import Counter, install, parse


class Point:
    def __init__(self, x):
        self.x = x


def main():
    args = parse(__doc__, objects=1_000_000)
    counter = Counter()
    heap = [Point(i) for i in range(args.objects)]
    counter.slots[0] = len(heap)
    install(counter)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
