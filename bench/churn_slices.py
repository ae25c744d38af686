#!/usr/bin/env python3
"""Call churn in interleaved slices: one workload process per shape, recorded
in short slices that rotate through the read modes, so that every mode sees
the same phases of a program whose speed drifts with the machine's load.

    bench/churn_slices.py [--shapes methods,generators,chain] [--rounds 12]
        [--slice 1.5] [--modes blocking@1000,default@1000,default@1000000]
        [--python PATH] [--pydeep target/release/pydeep]

`bench/run --workloads churn` compares runs of separate processes taken
minutes apart: on a loaded machine the workload's own balance moves by
points between them (the reference's halves differed by 0.2-3.4 points),
more than the 1 point issue #13 asks for. Here each round records every
mode once, in a rotating order, and the figure is the mean over rounds of
the per-round difference from the first mode (the reference), with its
standard error over rounds: the drift cancels within a round, and the
rounds' scatter is the noise, whatever its cause. The chain also times
itself (fib's share of `work`'s wall time, asked with SIGUSR1 around each
slice): its last row holds every mode, the reference too, to that
in-process truth.

Prints a table per shape and writes bench/results/DATE-slices.json."""

import argparse
import datetime
import importlib.machinery
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def load_run_module():
    """bench/run's folded-stack helpers (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("bench_run", str(BENCH / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


RUN = load_run_module()
FLAGS = {"blocking": ["--blocking"], "nonblocking": ["--nonblocking"], "default": []}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="methods,generators,chain")
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--slice", type=float, default=1.5, help="seconds per slice")
    parser.add_argument("--modes", default="blocking@1000,default@1000,default@1000000")
    parser.add_argument("--python", default=RUN.default_python())
    parser.add_argument("--pydeep", default=str(ROOT / "target/release/pydeep"))
    parser.add_argument("--view", default=None, help="pydeep-view (default: beside --pydeep)")
    return parser.parse_args()


def record(args, pid, mode, rate, path):
    """One slice: the tool's summary (torn, paused) and the churn region's
    function weights, in ticks."""
    command = [args.pydeep, "attach", str(pid), "-d", f"{args.slice}s", "-r", str(rate), "-o", str(path), "--force"]
    result = subprocess.run(command + FLAGS[mode], capture_output=True, text=True, timeout=60 + 3 * args.slice)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    parsed = RUN.parse_pydeep({"output": result.stderr + result.stdout}, path, {"pydeep": args.pydeep, "pydeep-view": args.view}, functions=True)
    return parsed


def mark(workload):
    """The workload's own clocks now ({name: ns}), asked with SIGUSR1."""
    workload.send_signal(signal.SIGUSR1)
    while True:
        line = workload.stdout.readline()
        if not line:
            raise RuntimeError("the workload ended")
        if line.startswith("mark "):
            return {k: int(v) for k, _, v in (field.partition("=") for field in line.split()[3:])}


def key_shares(profile, shape):
    return {name: RUN.shares(profile, f"{name} (churn.py)") for name in RUN.KEY_FUNCTIONS[shape]}


def run_shape(args, shape, modes, scratch):
    workload = subprocess.Popen(
        [args.python, str(BENCH / "workloads/churn.py"), "--shape", shape, "--depth", str(args.depth)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        workload.stdout.readline()  # "ready"
        time.sleep(0.5)  # past the first round of work: its clocks exist
        slices = {mode: [] for mode in modes}
        for round_ in range(args.rounds):
            order = modes[round_ % len(modes):] + modes[:round_ % len(modes)]
            for mode in order:
                kind, rate = mode.split("@")
                before = mark(workload)
                parsed = record(args, workload.pid, kind, int(rate), scratch / "slice.pdr")
                after = mark(workload)
                profile = parsed["functions"]
                truth = None
                if shape == "chain":
                    # The chain's own wall clocks over the slice: fib's share
                    # of work (churn.py), the in-process truth.
                    fib_ns = after.get("fib_ns", 0) - before.get("fib_ns", 0)
                    truth = fib_ns / max(1, after.get("work_ns", 0) - before.get("work_ns", 0))
                slices[mode].append({
                    "truth_fib_of_work": truth,
                    "shares": key_shares(profile, shape),
                    "region": profile["region"],
                    "samples": parsed.get("samples"),
                    "torn": parsed.get("torn"),
                    "paused": parsed.get("paused"),
                    "held": parsed.get("held", 0),
                })
            print(f"  {shape} round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        return slices
    finally:
        workload.kill()
        workload.wait()


def summarize(shape, modes, slices):
    """Per mode and key function: pooled-by-round mean share, and the mean
    and standard error over rounds of its difference from the reference
    (the first mode) in the same round."""
    reference = modes[0]
    table = {}
    for mode in modes:
        rows = {}
        for name in RUN.KEY_FUNCTIONS[shape]:
            for which, index in (("own", 0), ("total", 1)):
                values = [s["shares"][name][index] * 100 for s in slices[mode]]
                refs = [s["shares"][name][index] * 100 for s in slices[reference]]
                diffs = [v - r for v, r in zip(values, refs)]
                rows[f"{name} {which}"] = {
                    "mean": statistics.fmean(values),
                    "diff": statistics.fmean(diffs),
                    "se": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan"),
                }
        if shape == "chain":
            # Recorded fib ÷ work (total shares) against the chain's own
            # clock in the same slice: the program's truth, which pausing
            # every tick (the reference) perturbs too.
            gaps = [
                100 * (s["shares"]["fib"][1] / max(1e-9, s["shares"]["work"][1]) - s["truth_fib_of_work"])
                for s in slices[mode]
            ]
            rows["fib of work, recorded - own clock"] = {
                "mean": statistics.fmean(100 * s["truth_fib_of_work"] for s in slices[mode]),
                "diff": statistics.fmean(gaps),
                "se": statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("nan"),
            }
        table[mode] = {
            "functions": rows,
            "samples_per_slice": statistics.median(s["samples"] or 0 for s in slices[mode]),
            "torn": sum(s["torn"] or 0 for s in slices[mode]),
            "paused": sum(s["paused"] or 0 for s in slices[mode]),
            "held": sum(s["held"] or 0 for s in slices[mode]),
        }
    return table


def print_table(shape, modes, table):
    print(f"\n### churn {shape}: share of the samples under `descend` (%), mean over rounds; "
          f"difference from {modes[0]} (same rounds) ± its standard error\n")
    print("| function | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for key in table[modes[0]]["functions"]:
        cells = []
        for index, mode in enumerate(modes):
            row = table[mode]["functions"][key]
            if key.startswith("fib of work"):
                # The chain's own clock: every mode against it.
                cells.append(f"{row['mean']:.1f} ({row['diff']:+.1f} ± {row['se']:.1f})")
            elif index == 0:
                cells.append(f"{row['mean']:.1f}")
            else:
                cells.append(f"{row['mean']:.1f} ({row['diff']:+.1f} ± {row['se']:.1f})")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("| samples per slice; torn; paused; held | " + " | ".join(
        f"{table[m]['samples_per_slice']:.0f}; {table[m]['torn']}; {table[m]['paused']}; {table[m]['held']}" for m in modes) + " |")


def main():
    args = parse_args()
    args.view = args.view or str(Path(args.pydeep).with_name("pydeep-view"))
    modes = args.modes.split(",")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    results = {"started": started.isoformat(), "python": args.python, "args": vars(args), "shapes": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for shape in args.shapes.split(","):
            slices = run_shape(args, shape, modes, Path(scratch))
            table = summarize(shape, modes, slices)
            results["shapes"][shape] = {"slices": slices, "table": table}
            print_table(shape, modes, table)
    results["load"] = {"before": load_before, "after": os.getloadavg()}
    print(f"\nload average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; {args.python}")
    out = BENCH / "results" / f"{started:%Y-%m-%dT%H%MZ}-slices.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
