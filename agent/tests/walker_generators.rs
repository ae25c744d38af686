//! Non-blocking reads of a generator pipeline (issue #13): generator
//! frames live in their generator objects, not on the data stack, and on
//! 3.11 each resumption runs in an evaluation loop of its own (its own
//! `_PyCFrame`), so a read from outside could join a stale generator frame
//! to its consumer, or keep a torn read's callers as a stack that gives the
//! consumer time it did not spend. The same running program
//! (`bench/workloads/churn.py --shape generators`) is read alternately
//! without stopping it and paused (exact): every untorn stack must be one
//! the program can have, and each function's own share of the untorn
//! fast reads must match the paused reads' (a cut stack counted as its
//! caller's own time would raise `consume`'s).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pydeep::recording::exactness::{MAX_TORN_PER_WINDOW, WINDOW};
use pydeep::{Target, ThreadSample};
use pydeep_integration::test_pythons;

/// The pipeline's functions, consumer first.
const PIPELINE: [&str; 4] = ["consume", "evens", "squares", "numbers"];

/// Pairs of reads (one fast, one paused) taken, at most.
const PAIRS: usize = 3000;

/// Batches the pairs are cut into, in order, for the spread of the
/// difference: consecutive reads are not independent (a preempted target
/// stands still for several of them).
const BATCHES: usize = 20;

/// True if `names` (innermost first) is a stack the pipeline can have:
/// below `work`, nothing, or `consume` with the generators it resumed in
/// order (`evens`, `squares`, `numbers`), or one generator function it is
/// calling to create a generator; above `descend`s, `main`, `<module>`.
fn is_possible(names: &[&str]) -> bool {
    let mut outer: Vec<&str> = names.iter().rev().copied().collect();
    if outer.first() != Some(&"<module>") || outer.get(1) != Some(&"main") {
        return false;
    }
    outer.drain(..2);
    let descends = outer.iter().take_while(|n| **n == "descend").count();
    if descends == 0 {
        return false;
    }
    outer.drain(..descends);
    match outer.as_slice() {
        [] | ["work"] | ["work", "consume"] => true,
        ["work", "consume", created] if *created != "consume" && PIPELINE.contains(created) => true,
        ["work", "consume", pipeline @ ..] => {
            pipeline.len() < PIPELINE.len() && pipeline == &PIPELINE[1..=pipeline.len()]
        }
        _ => false,
    }
}

/// The main thread's function names, innermost first, or `None` if torn
/// or empty. A stack flagged truncated (its callers could not be read) is
/// given as read.
fn names(
    target: &mut Target,
    names_by_code: &mut HashMap<u64, String>,
    samples: &[ThreadSample],
    pid: u32,
) -> Option<Vec<String>> {
    let main = samples.iter().find(|s| s.native_id == pid as u64)?;
    if main.torn || main.frames.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for frame in &main.frames {
        let name = match names_by_code.get(&frame.code_address) {
            Some(name) => name.clone(),
            None => {
                let name = target
                    .code_object(frame.code_address)
                    .map(|(_, code)| code.name.clone())
                    .unwrap_or_else(|e| panic!("untorn stack with unreadable code: {e}"));
                names_by_code.insert(frame.code_address, name.clone());
                name
            }
        };
        out.push(name);
    }
    Some(out)
}

/// The standard error of the mean of `values`.
fn standard_error(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (variance / n).sqrt()
}

/// Impossible untorn stacks one run of fast reads may show (see the
/// assertion: one mechanism on 3.11 is known and not fixed).
const MOST_IMPOSSIBLE: u32 = 2;

#[test]
fn fast_reads_of_a_generator_pipeline_show_possible_stacks_and_the_paused_reads_shares() {
    for python in test_pythons("walker: generator pipeline, fast against paused reads") {
        let label = python.label();
        let workload = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/workloads/churn.py");
        let mut child = Command::new(&python.path)
            .arg(workload)
            .args(["--shape", "generators", "--seconds", "120"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start churn.py");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready", "{label}");
        let pid = child.id();
        let mut target = Target::attach(pid as i32).expect("attach");
        let mut names_by_code: HashMap<u64, String> = HashMap::new();
        let mut samples = Vec::new();
        // Per pair: the innermost frame's index in PIPELINE (its length:
        // another function; None: torn) of the fast read and of the
        // paused read.
        let mut pairs: Vec<(Option<usize>, Option<usize>)> = Vec::new();
        let (mut fast_torn, mut fast_read) = (0u32, 0u32);
        // Untorn fast reads whose stack the program cannot have.
        let mut fast_impossible = 0u32;
        // `ready` is printed before `main` descends: begin once a paused
        // read shows the pipeline (time-bounded).
        let start_by = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < start_by, "{label}: the pipeline never ran");
            let guard = target.pause().expect("pause");
            target.sample_threads(&mut samples).expect("paused read");
            guard.release();
            let stack = names(&mut target, &mut names_by_code, &samples, pid);
            if stack.is_some_and(|s| s.iter().any(|n| n == "consume")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        let innermost = |names: &Option<Vec<String>>| {
            let names = names.as_ref()?;
            Some(
                PIPELINE
                    .iter()
                    .position(|p| *p == names[0])
                    .unwrap_or(PIPELINE.len()),
            )
        };
        let is_truncated = |samples: &[ThreadSample]| {
            samples
                .iter()
                .any(|s| s.native_id == pid as u64 && s.truncated && !s.torn)
        };
        let (mut fast_truncated, mut paused_truncated) = (0u32, 0u32);
        while pairs.len() < PAIRS && Instant::now() < deadline {
            target.sample_threads(&mut samples).expect("fast read");
            fast_read += 1;
            let fast = names(&mut target, &mut names_by_code, &samples, pid);
            let fast_sample = samples.iter().find(|s| s.native_id == pid as u64).cloned();
            let fast_cut = is_truncated(&samples);
            fast_truncated += u32::from(fast_cut);
            fast_torn += u32::from(samples.iter().any(|s| s.native_id == pid as u64 && s.torn));
            std::thread::sleep(Duration::from_micros(500));
            let guard = target.pause().expect("pause");
            target.sample_threads(&mut samples).expect("paused read");
            guard.release();
            let paused = names(&mut target, &mut names_by_code, &samples, pid);
            let paused_cut = is_truncated(&samples);
            paused_truncated += u32::from(paused_cut);
            std::thread::sleep(Duration::from_micros(500));
            // A truncated stack says it lacks callers (below): only the
            // others must be whole.
            if let Some(stack) = paused.as_ref().filter(|_| !paused_cut) {
                let stack: Vec<&str> = stack.iter().map(String::as_str).collect();
                let main = samples.iter().find(|s| s.native_id == pid as u64);
                assert!(
                    is_possible(&stack),
                    "{label}: impossible stack {stack:?} read paused: {main:?}"
                );
            }
            if let Some(stack) = fast.as_ref().filter(|_| !fast_cut) {
                let stack: Vec<&str> = stack.iter().map(String::as_str).collect();
                if !is_possible(&stack) {
                    fast_impossible += 1;
                    eprintln!("      impossible stack {stack:?} read fast: {fast_sample:?}");
                }
            }
            assert!(paused.is_some(), "{label}: a paused read tore or was empty");
            pairs.push((innermost(&fast), innermost(&paused)));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(pairs.len() >= 600, "{label}: only {} pairs", pairs.len());
        // None, fast or paused (notes/cpython-frames.md, "Impossible
        // generator stacks read fast"): 3.11's fast reads once joined a
        // generator to its consumer's caller about 1 in 3,000 (`squares`,
        // `evens`, `work`: a `consume` pushed again, not started, hidden
        // in a copy older than the generators'), and 3.12/3.13's, read
        // back to back, `numbers` to an `evens` copied from the pipeline
        // before (generator objects swap addresses from one pipeline to
        // the next); both now tear. One more is left: the CI proxy of
        // 2026-12-07 20:56 saw one in 3,000 on Debian's 3.11.2 (`numbers`
        // under `evens` under `consume`: the address reuse of 3.12/3.13,
        // whose saved-stack check is not made on 3.11), so up to
        // MOST_IMPOSSIBLE pass, each printed; the two mechanisms above,
        // before their fix, gave 10-25 per run of this size.
        eprintln!("   {label}: {fast_impossible} impossible stacks among {fast_read} fast reads");
        assert!(
            fast_impossible <= MOST_IMPOSSIBLE,
            "{label}: {fast_impossible} impossible stacks among {fast_read} fast reads"
        );
        eprintln!(
            "   {label}: {} pairs, fast reads torn {fast_torn} of {fast_read}, truncated {fast_truncated} (paused {paused_truncated})",
            pairs.len()
        );
        // Paused reads of 3.12+ catch YIELD_VALUE between unlinking the
        // generator's frame (`previous = NULL`) and making its caller the
        // current frame (3.12.1: 2.6% of the paused reads, a lone `evens`
        // or `numbers` at its yield): kept as truncated stacks, which say
        // their callers are missing. Not so often that own shares move.
        assert!(
            (fast_truncated + paused_truncated) * 100 <= pairs.len() as u32 * 5,
            "{label}: {fast_truncated} fast and {paused_truncated} paused reads truncated"
        );
        // Torn fast reads are left out, and whether a read tears depends on
        // where the program was: with a fraction t of them torn, the untorn
        // reads' share of a function can differ from all reads' by up to
        // 100 t points from that selection alone (p = (1 - t) p_untorn +
        // t p_torn). So t is allowed on top of the bound: where reads
        // rarely tear the fast path's own bias is held to 3 points; where
        // most tear (an idle machine running the target flat out beside the
        // reader: 3.9.18 tore 2,263 of 3,000, 3.11.2 1,430) the comparison
        // says little, and the default mode reads such a target paused
        // (over MAX_TORN_PER_WINDOW torn of WINDOW fast ticks: exactness.rs).
        let selection = 100.0 * f64::from(fast_torn) / f64::from(fast_read.max(1));
        if fast_torn * WINDOW > fast_read * MAX_TORN_PER_WINDOW {
            eprintln!(
                "      {selection:.1}% of fast reads torn: the default mode reads this target paused"
            );
        }
        let batch = pairs.len() / BATCHES;
        for (index, name) in PIPELINE.iter().enumerate() {
            // Own share (percent) in each batch, fast minus paused; the
            // fast share counts only the untorn fast reads.
            let differences: Vec<f64> = pairs
                .chunks(batch)
                .take(BATCHES)
                .map(|chunk| {
                    let untorn = chunk.iter().filter(|(f, _)| f.is_some()).count().max(1);
                    let fast = chunk.iter().filter(|(f, _)| *f == Some(index)).count();
                    let paused = chunk.iter().filter(|(_, p)| *p == Some(index)).count();
                    (fast as f64 / untorn as f64 - paused as f64 / chunk.len() as f64) * 100.0
                })
                .collect();
            let mean = differences.iter().sum::<f64>() / differences.len() as f64;
            let se = standard_error(&differences);
            // 3 points, or 5 standard errors of the batches' mean
            // difference (19 degrees of freedom), plus what the torn
            // reads' selection can move (above).
            let bound = 3.0f64.max(5.0 * se) + selection;
            eprintln!(
                "      {name}: fast minus paused own share {mean:+.1} points (standard error {se:.1}, bound {bound:.1})"
            );
            assert!(
                mean.abs() <= bound,
                "{label}: {name} own share, fast reads {mean:+.1} points from the paused ones (bound {bound:.1})"
            );
        }
    }
}
