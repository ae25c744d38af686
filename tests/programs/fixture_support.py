"""Helpers shared by the fixture programs of this folder (each runs with
this folder first on sys.path, so `import fixture_support` finds it).

Each helper keeps the property its programs' truths depend on: the shares
loop measures CPU time with time.thread_time_ns() around each call; the
GC count and the JSON writer leave nothing GC-tracked behind.
"""
import gc
import json
import os
import random
import time


def measure_shares(truth_path, seconds, heavy, light):
    """Calls heavy(k) then light(k) in rounds until `seconds` have passed,
    measuring the CPU time inside each with time.thread_time_ns(), and
    writes {"spent_ns": {"heavy": ns, "light": ns}, "rounds": n} as JSON to
    truth_path at the end.

    Rounds of varying length (k in 3..5) keep the phases from beating in
    step with the sampler's fixed interval (aliasing would bias the shares).
    """
    spent = {"heavy": 0, "light": 0}
    end = time.monotonic() + seconds
    rounds = 0
    rng = random.Random(1234)
    while time.monotonic() < end:
        k = rng.choice((3, 4, 5))
        t0 = time.thread_time_ns()
        heavy(k)
        t1 = time.thread_time_ns()
        light(k)
        t2 = time.thread_time_ns()
        spent["heavy"] += t1 - t0
        spent["light"] += t2 - t1
        rounds += 1
    with open(truth_path, "w") as f:
        json.dump({"spent_ns": spent, "rounds": rounds}, f)


def count_gc_objects_by_type():
    """GC-tracked objects by type name, as gc.get_objects() lists them.

    Leaves nothing tracked behind: the counts are a str -> int dict (such
    dicts are untracked) and the list gc.get_objects() returns is deleted.
    """
    counts = {}
    objects = gc.get_objects()
    for obj in objects:
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
    del objects, obj
    return counts


def write_json_atomically(path, data):
    """Writes data as JSON to path through a rename, so a reader never sees
    half a file.

    json.dumps encodes in one shot in C; json.dump would build the pure
    Python encoder, whose recursive closures are a reference cycle left
    behind as garbage while the collector is disabled.
    """
    text = json.dumps(data)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def work(ready, go):
    """Creates the file `ready`, then spins on the CPU until the file `go`
    exists: the program is known to be running Python code in work() from
    the moment `ready` appears until the test says go."""
    open(ready, "w").close()
    total = 0
    while not os.path.exists(go):
        for i in range(2000):
            total += i * i
    return total


def readable_ranges():
    """(start, end) of the memory this process can read, for programs that
    look at their own objects through ctypes and must not follow a wrong
    pointer into a crash: the WebAssembly linear memory on Pyodide, the
    readable mappings of /proc/self/maps natively."""
    try:
        import pyodide_js  # only on Pyodide

        return [(4096, pyodide_js._module.HEAPU8.length)]
    except ImportError:
        pass
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            if perms.startswith("r"):
                start, end = (int(x, 16) for x in span.split("-"))
                ranges.append((start, end))
    return ranges
