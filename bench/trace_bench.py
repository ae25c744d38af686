"""The tracing benchmark (issue #19): `bench/run --workloads trace`.

How much `pydeep trace` slows a call-heavy workload (workloads/calls.py:
recursion, methods, generators, closures), side by side in one run with
the in-process tools people use for the same answer: VizTracer, cProfile,
a no-op Python `sys.setprofile` function and, on 3.12+, no-op
`sys.monitoring` callbacks. Every figure is a ratio of one process's own
rates: the rounds per second of the slices inside the profiling window
against the slices before and after it (its unprofiled neighbours), so the
machine's drift between processes does not enter.

For pydeep it also reports the events per second it drained, the events it
lost (the tracer drops and counts when its ring is full), bytes per event in
the .pdr, and the same at a tenth of the call rate (--duty 0.1), where
nothing should be lost. Only the standard library; VizTracer comes from
bench/.venv.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "calls.py"
LEAD, TAIL, SLICE = 1.5, 1.5, 0.25


def start(python, *args):
    return subprocess.Popen(
        [python, str(WORKLOAD), "--slice", str(SLICE), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def read_slices(process):
    """(calls per round, [(start_ns, end_ns, rounds)]) once it ends."""
    calls, slices = 0, []
    for line in process.stdout:
        words = line.split()
        if words[:1] == ["calls_per_round"]:
            calls = int(words[1])
        elif words[:1] == ["slice"]:
            slices.append(tuple(int(w) for w in words[1:5]))
    process.wait()
    return calls, slices


def rates(slices, inside, outside, cpu=False):
    """Median rounds/s (per wall second, or per CPU second of the workload
    with `cpu`) of the slices within `inside` (from, to) and of the slices
    that end before outside[0] or start after outside[1]."""

    def rate(s):
        return s[2] / (max(s[3] if cpu else s[1] - s[0], 1) / 1e9)

    profiled = [rate(s) for s in slices if s[0] >= inside[0] and s[1] <= inside[1]]
    neighbours = [rate(s) for s in slices if s[1] <= outside[0] or s[0] >= outside[1]]
    if not profiled or not neighbours:
        return None
    return statistics.median(neighbours), statistics.median(profiled)


def anchor_run(python, name, window):
    process = start(python, "--seconds", str(LEAD + window + TAIL), "--anchor", name,
                    "--from", str(LEAD), "--to", str(LEAD + window))
    calls, slices = read_slices(process)
    if process.returncode != 0 or not slices:
        return {"tool": name, "failure": f"exit {process.returncode}"}
    begin = slices[0][0]
    on, off = begin + int(LEAD * 1e9), begin + int((LEAD + window) * 1e9)
    found = rates(slices, (on, off), (on, off))
    if found is None:
        return {"tool": name, "failure": "no slice inside or outside the window"}
    plain, profiled = found
    plain_cpu, profiled_cpu = rates(slices, (on, off), (on, off), cpu=True)
    return {"tool": name, "slowdown": plain / profiled, "cpu_slowdown": plain_cpu / profiled_cpu,
            "calls_per_s": plain * calls, "profiled_calls_per_s": profiled * calls}


#: The function `--lines --functions` selects in workloads/calls.py: 40
#: of a round's ~600 calls (before 3.11 the qualified name is `visit`).
SELECTED = r"calls\.py:(Node\.)?visit$"


def pydeep_run(python, pydeep, window, scratch, duty=1.0, extra=(), name=None):
    process = start(python, "--seconds", str(LEAD + window + TAIL + 3), "--duty", str(duty))
    result = {}
    reader = threading.Thread(target=lambda: result.update(zip(("calls", "slices"), read_slices(process))))
    reader.start()
    time.sleep(LEAD)
    output = Path(scratch) / f"trace-{process.pid}.pdr"
    launched = time.monotonic_ns()
    trace = subprocess.Popen(
        [str(pydeep), "trace", str(process.pid), "-d", f"{window}s", "-o", str(output), "--force", *extra],
        stderr=subprocess.PIPE, text=True,
    )
    tracing_at, summary = None, ""
    for line in trace.stderr:
        if "tracing process" in line and tracing_at is None:
            tracing_at = time.monotonic_ns()
        if "traced" in line:
            summary = line
    trace.wait()
    ended = time.monotonic_ns()
    reader.join()
    row = {"tool": name or ("pydeep trace" if duty == 1.0 else f"pydeep trace, duty {duty}")}
    match = re.search(r"traced (\d+) events on (\d+) threads \((\d+) lost[;)]", summary)
    if trace.returncode != 0 or tracing_at is None or not match:
        row["failure"] = f"pydeep trace exit {trace.returncode}: {summary.strip()}"
        return row
    events, lost = int(match[1]), int(match[3])
    found = rates(result["slices"], (tracing_at, ended), (launched, ended))
    seconds = (ended - tracing_at) / 1e9
    row.update(events=events, lost=lost, events_per_s=events / seconds,
               bytes_per_event=output.stat().st_size / max(events, 1))
    if found:
        plain, profiled = found
        plain_cpu, profiled_cpu = rates(result["slices"], (tracing_at, ended), (launched, ended), cpu=True)
        row.update(slowdown=plain / profiled, cpu_slowdown=plain_cpu / profiled_cpu,
                   calls_per_s=plain * result["calls"], profiled_calls_per_s=profiled * result["calls"])
    output.unlink(missing_ok=True)
    return row


def has_module(python, module):
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def run(python, pydeep, window, runs, scratch, viztracer_python=None):
    """Every tool `runs` times; returns rows (one per run)."""
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"],
                             capture_output=True, text=True).stdout.strip()
    anchors = ["cprofile", "setprofile"] + (["monitoring"] if version == "True" else []) + ["settrace"]
    if has_module(viztracer_python or python, "viztracer"):
        anchors.insert(0, "viztracer")
    rows = []
    for index in range(runs):
        rows.append(pydeep_run(python, pydeep, window, scratch) | {"run": index})
        for name in anchors:
            rows.append(anchor_run(viztracer_python if name == "viztracer" and viztracer_python else python,
                                   name, window) | {"run": index})
        rows.append(pydeep_run(python, pydeep, window, scratch, duty=0.1) | {"run": index})
        rows.append(pydeep_run(python, pydeep, window, scratch, extra=["--lines"],
                               name="pydeep trace --lines") | {"run": index})
        rows.append(pydeep_run(python, pydeep, window, scratch, extra=["--lines", "--functions", SELECTED],
                               name="pydeep trace --lines --functions visit") | {"run": index})
    return rows


def table(rows):
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    lines = ["| tool | slowdown, wall (median, range) | slowdown, CPU (median, range) | calls/s unprofiled → profiled "
             "| events/s drained | lost | bytes/event |",
             "|---|---|---|---|---|---|---|"]
    for tool in tools:
        mine = [r for r in rows if r["tool"] == tool and "slowdown" in r]
        failures = [r["failure"] for r in rows if r["tool"] == tool and "failure" in r]
        if not mine:
            lines.append(f"| {tool} | failed: {'; '.join(failures)} | | | | | |")
            continue
        slow = [r["slowdown"] for r in mine]
        cpu = [r["cpu_slowdown"] for r in mine]
        cell = lambda key, spec: (format(statistics.median([r[key] for r in mine]), spec)
                                  if all(key in r for r in mine) else "–")
        lost = "–" if "lost" not in mine[0] else " / ".join(str(r["lost"]) for r in mine)
        lines.append(
            f"| {tool} | {statistics.median(slow):.2f}x ({min(slow):.2f}–{max(slow):.2f}) | "
            f"{statistics.median(cpu):.2f}x ({min(cpu):.2f}–{max(cpu):.2f}) | "
            f"{statistics.median([r['calls_per_s'] for r in mine]) / 1e6:.2f} M → "
            f"{statistics.median([r['profiled_calls_per_s'] for r in mine]) / 1e6:.2f} M | "
            f"{cell('events_per_s', ',.0f')} | {lost} | {cell('bytes_per_event', '.2f')} |")
    return "\n".join(lines)


def main(python, pydeep, window, runs, scratch, results, viztracer_python=None):
    load = "%.1f %.1f %.1f" % os.getloadavg()
    rows = run(python, pydeep, window, runs, scratch, viztracer_python)
    load_after = "%.1f %.1f %.1f" % os.getloadavg()
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()
    text = (f"trace benchmark: {version}, window {window}s, {runs} run(s), "
            f"load average {load} before, {load_after} after\n\n{table(rows)}\n")
    results.write_text(json.dumps({"python": version, "load": [load, load_after], "rows": rows}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pydeep", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--results", default="/tmp/pydeep-trace-bench.json")
    args = parser.parse_args()
    sys.exit(main(args.python, args.pydeep, args.seconds, args.runs, "/tmp", Path(args.results)))
