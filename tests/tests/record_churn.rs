//! Sampling accuracy on call-heavy code (issue #13), on every interpreter:
//! `bench/workloads/churn.py` spends its time in short calls (a recursion
//! of `fib(12)` under a loop of its own; small methods over a tree; a
//! generator pipeline), the kind of code where a read from outside cannot
//! keep up with the stack. The same running process is recorded in
//! alternating slices, with `--blocking` (every tick read with the target
//! stopped: the exact profile) and in the default mode, so that both see
//! the same phases of a program whose speed drifts on a loaded machine
//! (two 3 s recordings one after the other differed by up to 5 points).
//! Every named function's own and total share of the ticks must agree
//! within a few points (the chain's fib against the share of its wall
//! time the chain measured itself during the default slices), and the
//! default mode may lose only a few of its ticks to torn reads (3%: under
//! 1% on a quiet machine, which bench/run measures; 1.1% was seen with
//! the machine's load at 10). The bounds widen with the slices' own
//! spread (paired default-minus-exact differences, and each default
//! slice against its own clock): on a loaded machine the target stands
//! still for whole scheduling stretches, so a slice's ticks are far fewer
//! independent draws than their count says (`bound`). Alone in its own
//! test binary so that no other test competes for the CPU meanwhile.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use pydeep_integration::recording::{read, Read};
use pydeep_integration::{test_pythons, workspace_binary};

/// Points two recordings of the same steady program may differ by, at
/// least: drift between slices (measured up to ~3 points on a quiet
/// machine) and sampling noise.
const BOUND: f64 = 5.0;

/// Points the default profile may differ from the blocking one by, at
/// least: 3 points plus a quarter of the larger share. The blocking reads
/// perturb what they measure (a pause per tick; the chain, which measures
/// itself, spent 26.5% of its time in fib during its blocking slices and
/// 30.3% during the default ones of one run), and at a load of 10 two sets
/// of slices read the same way (3.9, where the default pauses too) put
/// `evens` at 31.1% and 39.8% of the generators' time. This catches the
/// losses issue #13 was about (a leaf at 0.4% for 8%, fib at 13.9% for
/// 26.9%); the chain's own clock holds the default to a few points.
fn blocking_floor(own_or_total_exact: f64, seen: f64) -> f64 {
    3.0 + 0.25 * own_or_total_exact.max(seen)
}

/// The bound for two shares (percent) measured over `n1` and `n2` ticks,
/// at least `floor`: 2 points of drift plus four standard errors of their
/// difference when few ticks make it noisier (with the machine's load at
/// 10, two slices of the same --blocking reads differed by 4.6 points over
/// ~2,300 ticks: 3 standard errors), or [`SPREAD_ERRORS`] standard errors
/// of the mean of the slices' paired differences (`paired`) when the
/// slices disagree more than that.
///
/// Ticks are independent observations only while the target runs. On a
/// loaded machine it stands still for whole scheduling stretches (tens of
/// milliseconds: a busy loop per core, load 10-19), every tick of such a
/// stretch sees the same stack whatever the read mode, and the ticks of a
/// 0.4 s slice are worth only a few dozen draws: slices of 3.11.7's
/// generators (2026-12-07, 24 pairs at load 10) spread 5-10 points around
/// their mean in both modes, two to three times what their tick counts
/// say, so 8 slices per mode put two reads of the same program 8 points
/// apart once in a while (the failures of notes/benchmarks.md "pause
/// budget", consume 17.6% against 9.8%). The slices' own spread measures
/// that; on a quiet machine it is small and the floor rules.
fn bound(floor: f64, share: f64, n1: u64, n2: u64, paired: &[f64]) -> f64 {
    let p = (share / 100.0).clamp(0.0, 1.0);
    let se = (p * (1.0 - p) * (1.0 / n1.max(1) as f64 + 1.0 / n2.max(1) as f64)).sqrt() * 100.0;
    floor
        .max(2.0 + 4.0 * se)
        .max(2.0 + SPREAD_ERRORS * standard_error(paired))
}

/// Standard errors of the slices' paired differences a difference of the
/// means may reach: the error is estimated from `SLICES` pairs or more (7 degrees
/// of freedom; Student's t is past 5 with probability 0.0016, and a run
/// makes ~140 comparisons, most of them correlated).
const SPREAD_ERRORS: f64 = 5.0;

/// The standard error of the mean of `values` (0 for fewer than two).
fn standard_error(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (variance / n as f64).sqrt()
}

/// For each slice pair, `share(default) - share(exact)` (percent).
fn paired(exact: &[Read], default: &[Read], share: impl Fn(&Read) -> f64) -> Vec<f64> {
    exact
        .iter()
        .zip(default)
        .map(|(e, d)| share(d) - share(e))
        .collect()
}

/// (shape, functions whose shares are compared with the blocking
/// profile's). The chain is held to what it measures of itself instead:
/// pausing it for every tick changes its own balance (fib's share of its
/// wall time was 26.5% during the blocking slices and 30.3% during the
/// default ones of one run, at a load of 10), so its blocking profile is
/// no reference for it.
const SHAPES: [(&str, &[&str]); 3] = [
    ("chain", &[]),
    ("methods", &["visit", "weight", "leaf_cost"]),
    ("generators", &["consume", "evens", "squares", "numbers"]),
];

fn workload() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench/workloads/churn.py")
}

/// Slices each mode records, alternating.
const SLICES: usize = 8;

/// Slices each mode records at most: more rounds of [`SLICES`] while the
/// blocking slices hold under [`MIN_EXACT_TICKS`].
const MAX_SLICES: usize = 3 * SLICES;

/// Ticks the blocking slices must hold for a verdict.
const MIN_EXACT_TICKS: u64 = 1000;

fn attach(pid: u32, output: &Path, extra: &[&str]) -> String {
    let out = Command::new(workspace_binary("pydeep"))
        .args([
            "attach",
            &pid.to_string(),
            "-r",
            "1000",
            "-d",
            "400ms",
            "--force",
            "-o",
        ])
        .arg(output)
        .args(extra)
        .output()
        .expect("run pydeep attach");
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pydeep attach failed: {summary}");
    summary
}

/// The clocks a workload printed with one mark (`mark COUNT TIME
/// name=ns...`, bench/workloads/common.py).
fn mark(pid: u32, stdout: &mut impl BufRead) -> Vec<(String, u64)> {
    let status = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -USR1 {pid}");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("mark line");
    assert!(line.starts_with("mark "), "not a mark: {line:?}");
    line.split_whitespace()
        .filter_map(|field| {
            let (name, value) = field.split_once('=')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Wall time the chain workload measured of itself over some slices.
#[derive(Default)]
struct Clocks {
    fib_ns: u64,
    work_ns: u64,
}

impl Clocks {
    /// Adds the time between two marks.
    fn add(&mut self, before: &[(String, u64)], after: &[(String, u64)]) {
        let delta = |name: &str| {
            let get = |m: &[(String, u64)]| m.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            match (get(before), get(after)) {
                (Some(b), Some(a)) => a.saturating_sub(b),
                _ => 0,
            }
        };
        self.fib_ns += delta("fib_ns");
        self.work_ns += delta("work_ns");
    }

    /// fib's share of work's time, in percent (None if nothing measured).
    fn fib_share(&self) -> Option<f64> {
        (self.work_ns > 0).then(|| self.fib_ns as f64 * 100.0 / self.work_ns as f64)
    }
}

/// The sum of `count` over the slices of one mode.
fn sum(slices: &[Read], count: impl Fn(&Read) -> u64) -> u64 {
    slices.iter().map(count).sum()
}

/// Own and total shares (percent of the kept ticks) of `name` over the
/// slices of one mode.
fn shares(slices: &[Read], name: &str) -> (f64, f64) {
    let ticks = sum(slices, Read::kept_ticks).max(1) as f64;
    (
        sum(slices, |r| r.own_ticks_in(name)) as f64 * 100.0 / ticks,
        sum(slices, |r| r.ticks_in(name)) as f64 * 100.0 / ticks,
    )
}

/// Own and total shares (percent of the kept ticks) of `name` in one slice.
fn slice_shares(slice: &Read, name: &str) -> (f64, f64) {
    shares(std::slice::from_ref(slice), name)
}

#[test]
fn the_default_profile_of_call_heavy_code_matches_the_exact_one() {
    for python in test_pythons("record: call-churn shares against --blocking") {
        for (shape, functions) in SHAPES {
            let label = format!("{} {shape}", python.label());
            let mut child = Command::new(&python.path)
                .arg(workload())
                .args(["--shape", shape, "--seconds", "180"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start churn.py");
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            stdout.read_line(&mut line).expect("ready line");
            assert_eq!(line.trim(), "ready", "{label}");
            let dir = tempfile::tempdir().unwrap();
            let (mut exact, mut default) = (Vec::new(), Vec::new());
            let mut summary = String::new();
            // The chain measures its own wall time in fib (`fib_ns`) and in
            // work (`work_ns`): what each mode's slices saw of it.
            let (mut exact_truth, mut default_truth) = (Clocks::default(), Clocks::default());
            // The default slices' clocks one by one, for their spread.
            let mut default_slice_truth: Vec<Clocks> = Vec::new();
            let pid = child.id();
            // A machine that starved the sampler (3.9.18 at load 12-14:
            // 678 exact ticks in 8 blocking slices, pauses of up to 0.4 s)
            // gets more slices, up to MAX_SLICES, rather than no verdict.
            for slice in 0..MAX_SLICES {
                if slice > 0 && slice % SLICES == 0 {
                    if sum(&exact, Read::kept_ticks) >= MIN_EXACT_TICKS {
                        break;
                    }
                    eprintln!("{label}: too few exact ticks after {slice} slices, {SLICES} more");
                }
                let path = dir.path().join(format!("exact{slice}.pdr"));
                let before = mark(pid, &mut stdout);
                attach(pid, &path, &["--blocking"]);
                exact_truth.add(&before, &mark(pid, &mut stdout));
                exact.push(read(&path));
                let path = dir.path().join(format!("default{slice}.pdr"));
                let before = mark(pid, &mut stdout);
                summary = attach(pid, &path, &[]);
                let after = mark(pid, &mut stdout);
                default_truth.add(&before, &after);
                let mut slice_truth = Clocks::default();
                slice_truth.add(&before, &after);
                default_slice_truth.push(slice_truth);
                default.push(read(&path));
            }
            let _ = child.kill();
            let _ = child.wait();

            let exact_ticks = sum(&exact, Read::kept_ticks);
            let (samples, torn) = (sum(&default, |r| r.samples), sum(&default, |r| r.torn));
            eprintln!(
                "{label}: {exact_ticks} exact ticks, {samples} default samples ({torn} torn)"
            );
            assert!(
                exact_ticks >= MIN_EXACT_TICKS,
                "{label}: too few exact ticks"
            );
            if let (Some(exact_true), Some(default_true)) =
                (exact_truth.fib_share(), default_truth.fib_share())
            {
                let of_work = |slices: &[Read]| {
                    let work = sum(slices, |r| r.ticks_in("work")).max(1) as f64;
                    sum(slices, |r| r.ticks_in("fib")) as f64 * 100.0 / work
                };
                let (exact_seen, default_seen) = (of_work(&exact), of_work(&default));
                eprintln!(
                    "   fib share of work, recorded vs measured in-process: blocking {exact_seen:.1}% vs {exact_true:.1}%, default {default_seen:.1}% vs {default_true:.1}%"
                );
                let ticks = sum(&default, |r| r.ticks_in("work"));
                // Each default slice's recorded share against its own clock.
                let differences: Vec<f64> = default
                    .iter()
                    .zip(&default_slice_truth)
                    .filter_map(|(slice, truth)| {
                        Some(of_work(std::slice::from_ref(slice)) - truth.fib_share()?)
                    })
                    .collect();
                let limit = bound(BOUND, default_true, ticks, ticks, &differences);
                eprintln!(
                    "   default slices against their clocks: spread ±{:.1} (standard error), bound {limit:.1}",
                    standard_error(&differences)
                );
                assert!(
                    (default_seen - default_true).abs() <= limit,
                    "{label}: fib {default_seen:.1}% of work's ticks, {default_true:.1}% of its time measured in-process (bound {limit:.1})\n{summary}"
                );
            }
            // Under 1% on a quiet machine (bench/run measures it); a
            // loaded one preempts the sampler between a copy and the
            // pointer read after it, and more reads tear. Each slice is a
            // new recording whose default mode starts reading fast and
            // learns from its first torn ticks (3 in a window switch it to
            // paused reads, exactness.rs): up to 3 torn per slice on top,
            // which on a loaded machine (70-100 samples a slice) was
            // 21-24 of 560-750 samples over 8 slices (3.11.7 and 3.12.1
            // generators, load 4.5-8.3).
            let learning = default.len() as u64 * 3;
            assert!(
                torn * 100 <= samples * 3 + learning * 100,
                "{label}: {torn} of {samples} samples torn over {} slices\n{summary}",
                default.len()
            );
            for name in functions {
                let (own_exact, total_exact) = shares(&exact, name);
                let (own, total) = shares(&default, name);
                eprintln!(
                    "   {name}: own {own:.1}% (exact {own_exact:.1}%), total {total:.1}% (exact {total_exact:.1}%)"
                );
                assert!(total_exact > 1.0, "{label}: {name} never ran");
                let ticks = sum(&default, Read::kept_ticks);
                let own_pairs = paired(&exact, &default, |r| slice_shares(r, name).0);
                let total_pairs = paired(&exact, &default, |r| slice_shares(r, name).1);
                let (own_bound, total_bound) = (
                    bound(
                        blocking_floor(own_exact, own),
                        own_exact,
                        exact_ticks,
                        ticks,
                        &own_pairs,
                    ),
                    bound(
                        blocking_floor(total_exact, total),
                        total_exact,
                        exact_ticks,
                        ticks,
                        &total_pairs,
                    ),
                );
                eprintln!(
                    "      slices' paired spread: own ±{:.1}, total ±{:.1} (standard errors); bounds {own_bound:.1}, {total_bound:.1}",
                    standard_error(&own_pairs),
                    standard_error(&total_pairs)
                );
                assert!(
                    (own - own_exact).abs() <= own_bound && (total - total_exact).abs() <= total_bound,
                    "{label}: {name} own {own:.1}% vs {own_exact:.1}% (bound {own_bound:.1}), total {total:.1}% vs {total_exact:.1}% (bound {total_bound:.1})\n{summary}"
                );
            }
        }
    }
}
