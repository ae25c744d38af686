"""A CPU-bound program whose balance between two functions is an argument.

Each round calls `alpha` and `beta` with work in the proportion SHARE :
1 - SHARE, so about SHARE of the time is in `alpha`. Two recordings with
different shares are what `pydeep-view diff` compares.

Usage: balance.py SHARE SECONDS
"""
import sys
import time


UNIT = 400000


# Each loops in its own frame, so its time is its own (not a callee's).
def alpha(share):
    total = 0
    for i in range(int(UNIT * share)):
        total += i * i
    return total


def beta(share):
    total = 0
    for i in range(int(UNIT * (1 - share))):
        total += i * i
    return total


def main():
    share = float(sys.argv[1])
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        alpha(share)
        beta(share)


if __name__ == "__main__":
    main()
