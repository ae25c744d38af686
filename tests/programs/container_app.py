"""Fixture of tests/tests/container.rs, run inside a private mount
namespace from a copy only that namespace can see (/tmp/app/app.py there).

argv[1]: the control folder, outside the namespace's private /tmp.
  ready       written at start: the file and interpreter paths as the
              namespace sees them (JSON)
  go          wait for it, then call leaf() exactly CALLS times and write
              done.json (the in-process count, the work's CLOCK_MONOTONIC
              span)
  end         spin() until it appears (a target to sample), then exit 0
"""
import json
import os
import sys
import time

control = sys.argv[1]
CALLS = 20000
calls = 0


def leaf(i):
    global calls
    calls += 1
    return i + 1


def twig(i):
    return i - 1


def spin():
    total = 0
    for i in range(2000):
        total += twig(i)
    return total


def publish(name, value):
    path = os.path.join(control, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)


publish("ready", {"file": __file__, "executable": sys.executable, "prefix": sys.prefix})
while not os.path.exists(os.path.join(control, "go")):
    time.sleep(0.005)
before = time.monotonic_ns()
for i in range(CALLS):
    leaf(i)
after = time.monotonic_ns()
publish("done.json", {"calls": calls, "before": before, "after": after})
while not os.path.exists(os.path.join(control, "end")):
    spin()
