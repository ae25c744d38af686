#!/usr/bin/env python3
"""Back-to-back, interleaved A/B of pydeep binaries' CPU per sample.

Usage: bench/ab_cpu.py NAME=BINARY,NAME=BINARY DEPTHS ROUNDS SECONDS
       (e.g. main=/tmp/pydeep-main,branch=target/release/pydeep 30,1000 4 4)

One workload process per depth (3.11.7 cpu_depth.py); each run attaches a
binary for --seconds at -r 100000 --nonblocking; CPU = the child's
ru_utime+ru_stime (getrusage RUSAGE_CHILDREN via os.wait4), samples from the
summary's 'samples' line. Order alternates A B A B..., and which goes first
flips each round. RATE=N in the environment attaches at -r N instead
(e.g. RATE=1000000 with binaries whose strata are one tick: back to back)."""
import os, re, subprocess, sys, time, json, statistics
PY = os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python")
WL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads", "cpu_depth.py")
bins = dict(a.split("=", 1) for a in sys.argv[1].split(","))
depths = [int(d) for d in sys.argv[2].split(",")]
rounds = int(sys.argv[3]); secs = sys.argv[4]
OUT = os.environ.get("TMPDIR", "/tmp")
RATE = os.environ.get("RATE", "100000")
out = {}
for depth in depths:
    wl = subprocess.Popen([PY, WL, "--depth", str(depth)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wl.stdout.readline()
    time.sleep(0.5)
    names = list(bins)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.monotonic()
            p = subprocess.Popen([bins[name], "attach", str(wl.pid), "-r", RATE, "-d", secs, "--nonblocking", "-o", os.path.join(OUT, f"{name}.pdr"), "--force"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            text = p.stdout.read().decode()
            _, status, ru = os.wait4(p.pid, 0)
            cpu = ru.ru_utime + ru.ru_stime
            m = re.search(r"(\d+) samples in", text)
            samples = int(m.group(1).replace(",", "")) if m else 0
            load = os.getloadavg()[0]
            rec = dict(name=name, depth=depth, cpu=cpu, samples=samples, us=cpu / samples * 1e6 if samples else None, load=load, wall=time.monotonic() - t0)
            out.setdefault(f"{depth}/{name}", []).append(rec)
            print(json.dumps(rec), flush=True)
    wl.terminate(); wl.wait()
print("== summary ==")
for key, recs in out.items():
    us = [r["us"] for r in recs if r["us"]]
    rate = [r["samples"] / float(secs) for r in recs]
    print(f"{key}: median {statistics.median(us):.2f} us/sample (min {min(us):.2f} max {max(us):.2f}, n={len(us)}), median {statistics.median(rate):.0f} samples/s; all: {' '.join(f'{u:.2f}' for u in us)}")
