"""Phases of known state, for `pydeep record --snapshot-every/--heap-every`.

Usage: python snapshot_recording.py TRUTH_PREFIX PHASES GROW

In phase k (1..PHASES) the program keeps GROW*k instances of Growth, binds
the locals of phase() to known values, makes the heap still (full
collection, then the collector disabled), measures the truth in-process
and writes it to TRUTH_PREFIX.k.json (atomically), then blocks in
_signal.sigwait() until the test sends SIGUSR1; after the last phase it exits.

Truth per phase: the pid; the line of the sigwait() call (a snapshot
whose main thread stands on that line of phase() with `signum` unbound was
taken inside the phase: nothing GC-tracked is created between the
measurement and that line, nor until `signum` is stored); counts of
GC-tracked objects by type name from gc.get_objects(); and for each local
its id(), type name, repr() and sys.getsizeof(); for a split-table dict,
types and code objects ("sized") id, type and sys.getsizeof(); for some
module globals ("globals") id and type.

The measurement leaves nothing tracked behind (a str -> int dict stays
untracked, the get_objects() list is deleted, JSON is encoded with
json.dumps, which builds no garbage cycles), and the file machinery is
warmed up once before the first measurement.
"""
import gc
import os
import signal
import sys

# _signal's C functions: signal.sigwait is a Python wrapper on some versions,
# whose frame (a GC-tracked object on 3.9/3.10) would appear after the count.
import _signal

from fixture_support import count_gc_objects_by_type, write_json_atomically

PREFIX = sys.argv[1]
PHASES = int(sys.argv[2])
GROW = int(sys.argv[3])


class Growth:
    def __init__(self, i):
        self.i = i


class Holder:
    def __init__(self, k):
        self.a = k
        self.b = "b"
        self.c = [k]


def make_closure(x):
    # x is an argument and a cell: 3.9/3.10 give the code a co_cell2arg map.
    return lambda: x


kept = []


def hot():
    # Run 2000 times below: 3.9/3.10 give it an opcache (for its
    # LOAD_GLOBALs) after 1024 calls, which code.__sizeof__ counts.
    return len(kept)


for _ in range(2000):
    hot()


def describe(scope):
    return {
        name: {
            "id": id(value),
            "type": type(value).__name__,
            "repr": repr(value),
            "size": sys.getsizeof(value),
        }
        for name, value in scope.items()
    }


def phase(k, mask):
    label = "phase-%d" % k
    values = list(range(k * 3))
    table = {"k": k, "label": label}
    big = 2**100 * k
    ratio = k / 4
    nothing = None
    # Objects whose sys.getsizeof() pydeep reproduces without rendering
    # them like repr(): a split-table dict (an instance's __dict__), heap
    # and static types, code objects (with and without cell2arg).
    holder = Holder(k)
    attrs = holder.__dict__
    cls = Holder
    builtin = int
    code = phase.__code__
    cell_code = make_closure.__code__
    hot_code = hot.__code__
    gc.enable()
    gc.collect()
    gc.disable()
    counts = count_gc_objects_by_type()
    # No locals(): on 3.9-3.12 it leaves a dict (and on 3.11+ a frame
    # object) on the frame, created after the count.
    scope = {"k": k, "label": label, "values": values, "table": table}
    scope.update({"big": big, "ratio": ratio, "nothing": nothing})
    truth = {"pid": os.getpid(), "phase": k, "counts": counts}
    truth["locals"] = describe(scope)
    sized = {"attrs": attrs, "cls": cls, "builtin": builtin, "code": code}
    sized["cell_code"] = cell_code
    sized["hot_code"] = hot_code
    truth["sized"] = describe(sized)
    truth["wait_line"] = WAIT_LINE
    module = {"PHASES": PHASES, "GROW": GROW, "PREFIX": PREFIX, "kept": kept}
    module["Growth"] = Growth
    truth["globals"] = {
        name: {"id": id(value), "type": type(value).__name__}
        for name, value in module.items()
    }
    write_json_atomically("%s.%d.json" % (PREFIX, k), truth)
    del truth, counts, scope, sized, module
    signum = _signal.sigwait(mask)
    return signum


# Where phase() waits. Not sys._getframe(): on 3.11+ it would leave a
# frame object behind, created after the count.
with open(__file__) as source:
    WAIT_LINE = next(
        number
        for number, line in enumerate(source, 1)
        if line.strip() == "signum = _signal.sigwait(mask)"
    )
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
mask = {signal.SIGUSR1}
write_json_atomically(PREFIX + ".warmup", describe({"warmup": count_gc_objects_by_type()}))
for k in range(1, PHASES + 1):
    kept.extend(Growth(i) for i in range(GROW))
    phase(k, mask)
