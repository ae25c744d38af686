"""Fixture of tests/tests/trace.rs's eval-frame test: a program with its own
PEP 523 eval-frame function, which a trace window must keep working and
give back. The function is CPython's test module's
(`_testinternalcapi.set_eval_frame_record(list)`, 3.11+ where built: it
appends the name of each function whose frame it evaluates to the list,
then calls `_PyEval_EvalFrameDefault`); pure Python cannot install one.

argv[1]: the ready file (JSON: the truth, or {"unavailable": why}). Files in
its folder drive it:
  go    one round of work(), between time.monotonic_ns() readings, with the
        names the program's own eval function recorded meanwhile:
        round1.json
  end   one more work() (the own function must still record it), then
        final.json and exit 0
"""
import json
import os
import sys
import threading
import time

from c_hooks import default_eval_frame, eval_frame
from call_workload import count_calls, work

ready = sys.argv[1]
folder = os.path.dirname(ready)


def publish(name, value):
    with open(name + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(name + ".tmp", name)


def wait_for(name):
    while not os.path.exists(os.path.join(folder, name)):
        time.sleep(0.005)


try:
    import _testinternalcapi

    install = _testinternalcapi.set_eval_frame_record
except (ImportError, AttributeError) as e:
    publish(ready, {"unavailable": str(e)})
    wait_for("end")
    sys.exit(0)

truth = count_calls()
record = []
install(record)
own = eval_frame()
publish(ready, {"truth": truth, "own_is_default": own == default_eval_frame()})

wait_for("go")
del record[:]
before = time.monotonic_ns()
work()
after = time.monotonic_ns()
recorded = {}
for name in record:
    recorded[name] = recorded.get(name, 0) + 1
publish(os.path.join(folder, "round1.json"), {
    "thread": threading.get_native_id(),
    "before": before,
    "after": after,
    "recorded": recorded,
    "own_installed_during": eval_frame() == own,
})

wait_for("end")
del record[:]
work()
final = {
    "own_kept": eval_frame() == own,
    "fib_recorded_after": record.count("fib"),
}
_testinternalcapi.set_eval_frame_default()
publish(os.path.join(folder, "final.json"), final)
