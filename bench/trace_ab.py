"""A/B of two pydeep binaries under `pydeep trace --calls` (issue #19's cost
goal), alternated in one run on each interpreter given, with the no-op
anchors of bench/trace_bench.py beside them (`sys.setprofile`, and on
3.12+ `sys.monitoring` callbacks).

    python3 bench/trace_ab.py --before OLD/pydeep --after NEW/pydeep \\
        --python ~/.pyenv/versions/3.12.1/bin/python --python /usr/bin/python3.11 \\
        --runs 2 --seconds 2 --results bench/results/DATE-trace-ab.json

The tracer runs in the target, and `agent/build.rs` builds it optimised
whatever the agent's profile, so a debug pydeep measures the target's
slowdown too (its drain is slower: the `lost` column says whether the ring
filled, which makes the tracer skip its store). Read the CPU column: the
machine is shared, and the wall figure counts what others took.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trace_bench  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--python", action="append", required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--anchors", action="store_true", help="also the no-op anchors")
    parser.add_argument("--duty", type=float, default=1.0,
                        help="the workload's duty cycle (0.1: a tenth of the call rate, where nothing is lost)")
    parser.add_argument("--results", default="/tmp/pydeep-trace-ab.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for python in args.python:
        version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()
        new = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"],
                             capture_output=True, text=True).stdout.strip() == "True"
        for index in range(args.runs):
            for name, binary in (("before", args.before), ("after", args.after)):
                row = trace_bench.pydeep_run(python, binary, args.seconds, "/tmp", duty=args.duty, name=name)
                rows.append(row | {"run": index, "python": version})
                print(json.dumps(rows[-1]), flush=True)
            if args.anchors:
                anchors = ["setprofile"] + (["monitoring"] if new else [])
                for anchor in anchors:
                    row = trace_bench.anchor_run(python, anchor, args.seconds)
                    rows.append(row | {"run": index, "python": version})
                    print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()[0]
    print(f"\nload average {load:.1f} before, {load_after:.1f} after")
    print(f"{'python':<16} {'tool':<12} {'CPU slowdown (median, range)':<30} {'wall':<22} lost/events")
    for python in dict.fromkeys(r["python"] for r in rows):
        for tool in dict.fromkeys(r["tool"] for r in rows if r["python"] == python):
            mine = [r for r in rows if r["python"] == python and r["tool"] == tool and "cpu_slowdown" in r]
            if not mine:
                print(f"{python:<16} {tool:<12} failed")
                continue
            cpu = [r["cpu_slowdown"] for r in mine]
            wall = [r["slowdown"] for r in mine]
            lost = f"{sum(r.get('lost', 0) for r in mine)}/{sum(r.get('events', 0) for r in mine)}"
            print(f"{python:<16} {tool:<12} {statistics.median(cpu):.2f}x ({min(cpu):.2f}-{max(cpu):.2f}){'':<14}"
                  f" {statistics.median(wall):.2f}x ({min(wall):.2f}-{max(wall):.2f})  {lost}")
    Path(args.results).write_text(json.dumps({"load": [load, load_after], "duty": args.duty, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
