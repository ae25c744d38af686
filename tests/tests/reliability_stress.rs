//! Targets at the edges of what the sampler meets, on every interpreter:
//! 500 threads (each recorded, by native id) and a 1,000-deep recursion
//! (every frame of it, in every sample). The object-churn test at 10 kHz is
//! in reliability_churn.rs, alone in its binary so nothing competes with it
//! for the CPU.

use std::collections::HashSet;
use std::process::Command;

use pydeep_format::{Event, Recording};
use pydeep_integration::recording::read;
use pydeep_integration::waits::run_measured;
use pydeep_integration::{test_pythons, workspace_binary, Fixture, Python};

fn pydeep(args: &[&str], label: &str) -> String {
    let what = format!("{label}: pydeep {}", args.join(" "));
    let finished = run_measured(Command::new(workspace_binary("pydeep")).args(args), &what);
    assert_eq!(finished.code, Some(0), "{what}: {}", finished.stderr);
    eprintln!(
        "{what}: peak RSS {} KiB, {:.2} s",
        finished.max_rss_kib,
        finished.elapsed.as_secs_f64()
    );
    finished.stdout + &finished.stderr
}

const THREADS: usize = 500;

fn many_threads(python: &Python) {
    let label = python.label();
    let fixture = Fixture::start(python, "many_threads.py", &[&THREADS.to_string()]);
    fixture.wait_ready();
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture.ready).unwrap()).unwrap();
    let truth: HashSet<u64> = truth["native_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(truth.len(), THREADS, "{label}");
    let pid = fixture.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("threads.pdr");
    let out = output.to_str().unwrap();
    pydeep(
        &[
            "attach", &pid, "--idle", "-q", "-r", "50", "-d", "2s", "-o", out,
        ],
        &label,
    );
    // Every parked thread, by its native id, has samples in parked().
    let mut recording = Recording::open(&output).unwrap();
    let mut seen: HashSet<u64> = HashSet::new();
    while let Some(event) = recording.next_event().unwrap() {
        let Event::Sample(sample) = event else {
            continue;
        };
        let tables = recording.tables();
        let in_parked = tables.stack_frames(sample.stack).iter().any(|frame| {
            let code = tables.frames[frame].code;
            tables.string(tables.code_objects[&code].name) == "parked"
        });
        if in_parked {
            seen.insert(tables.threads[&sample.thread].native_id);
        }
    }
    assert_eq!(seen, truth, "{label}: threads recorded in parked()");
    let dump = pydeep(&["dump", &pid], &label);
    assert_eq!(
        dump.matches("\nThread ").count(),
        THREADS + 1,
        "{label}: dump"
    );
}

const DEPTH: usize = 1000;

fn deep_recursion(python: &Python) {
    let label = python.label();
    let fixture = Fixture::start(python, "deep_stack.py", &[&DEPTH.to_string()]);
    fixture.wait_ready();
    let pid = fixture.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("deep.pdr");
    let out = output.to_str().unwrap();
    pydeep(
        &[
            "attach",
            &pid,
            "--blocking",
            "--idle",
            "-q",
            "-r",
            "100",
            "-d",
            "1s",
            "-o",
            out,
        ],
        &label,
    );
    // descend(DEPTH) ... descend(0): DEPTH + 1 frames, in every sample of
    // the deep thread, none cut.
    let recorded = read(&output);
    let deep: Vec<usize> = recorded
        .stacks
        .iter()
        .map(|(names, _)| names.iter().filter(|n| *n == "descend").count())
        .filter(|&n| n > 0)
        .collect();
    assert!(!deep.is_empty(), "{label}: no sample of the deep thread");
    assert!(
        deep.iter().all(|&n| n == DEPTH + 1),
        "{label}: descend frames per stack {deep:?}, expected {}",
        DEPTH + 1
    );
}

#[test]
fn five_hundred_threads_are_each_recorded() {
    for python in test_pythons("500 threads") {
        many_threads(&python);
    }
}

#[test]
fn a_thousand_deep_recursion_is_recorded_whole() {
    for python in test_pythons("1,000-deep recursion") {
        deep_recursion(&python);
    }
}
