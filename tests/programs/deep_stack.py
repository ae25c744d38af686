"""One thread DEPTH frames deep, then idle; optionally a busy thread too.

Usage: python deep_stack.py READY_FILE DEPTH [busy]

Writes READY_FILE (its pid) once the stack is DEPTH deep and blocked. With
"busy", the main thread then keeps calling and returning between two
recursion depths forever, so a reader that does not pause it sees stacks
change under it (the torn-read test).
"""
import os
import sys
import threading

READY, DEPTH = sys.argv[1], int(sys.argv[2])
BUSY = len(sys.argv) > 3 and sys.argv[3] == "busy"
sys.setrecursionlimit(DEPTH + 1000)
forever = threading.Event()


def descend(n):
    if n == 0:
        with open(READY + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(READY + ".tmp", READY)
        forever.wait()
    else:
        descend(n - 1)


def churn(n):
    if n:
        return churn(n - 1) + 1
    return 0


def main():
    if BUSY:
        threading.Thread(target=descend, args=(DEPTH,), name="deep", daemon=True).start()
        while True:
            for depth in (5, 40, 17, 60):
                churn(depth)
    else:
        descend(DEPTH)


main()
