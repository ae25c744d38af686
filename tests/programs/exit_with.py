"""Runs briefly, then exits with the status given in argv[1]."""
import sys
import time

end = time.monotonic() + float(sys.argv[2] if len(sys.argv) > 2 else 0.5)
while time.monotonic() < end:
    sum(range(1000))
sys.exit(int(sys.argv[1]))
