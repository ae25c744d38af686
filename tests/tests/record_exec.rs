//! After the target `exec`s into another Python program, everything pydeep
//! knew of the old image (code objects, their ids, interned stacks, thread
//! names) dies with it: the samples taken after the exec name the new
//! program's functions and none of the old one's. On every interpreter.

use pydeep_format::proto::{ProcessEventKind, SampleFlag};
use pydeep_format::{Event, Recording};
use pydeep_integration::run::record_program;
use pydeep_integration::test_pythons;

/// The function names of every untorn sample, with whether it was taken
/// after the recording's first exec event.
fn samples_by_phase(path: &std::path::Path) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut recording = Recording::open(path).expect("open recording");
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut execed = false;
    let mut stacks = Vec::new();
    while let Some(event) = recording.next_event().expect("read event") {
        match event {
            Event::Process(process) if process.kind() == ProcessEventKind::ProcessExeced => {
                execed = true
            }
            Event::Sample(sample) if sample.flags & SampleFlag::Torn as u32 == 0 => {
                stacks.push((execed, sample.stack))
            }
            _ => {}
        }
    }
    let tables = recording.tables();
    for (execed, stack) in stacks {
        let names = pydeep_integration::recording::stack_names(tables, stack);
        if execed { &mut after } else { &mut before }.push(names);
    }
    (before, after)
}

#[test]
fn samples_after_an_exec_into_python_name_only_the_new_programs_functions() {
    for python in test_pythons("exec into python") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("exec.pdr");
        let status = record_program(
            &python,
            &["-r", "200"],
            &output,
            "exec_into_python.py",
            &["first", "1.0", "1.5"],
        );
        let label = python.label();
        assert!(status.success(), "{label}: pydeep record failed: {status}");
        let (before, after) = samples_by_phase(&output);
        let has = |stacks: &[Vec<String>], prefix: &str| {
            stacks
                .iter()
                .filter(|s| s.iter().any(|n| n.starts_with(prefix)))
                .count()
        };
        assert!(
            has(&before, "old_") > 0,
            "{label}: no sample before the exec named old_*"
        );
        let stale = has(&after, "old_");
        assert_eq!(
            stale, 0,
            "{label}: {stale} samples after the exec name old_* functions"
        );
        let new = has(&after, "new_spin_inner");
        // 1.5 s at 200 Hz is 300 ticks; start-up of the new interpreter
        // takes some of them, and a loaded machine more.
        assert!(
            new >= 30,
            "{label}: only {new} of {} samples after the exec are in new_spin_inner: {:?}",
            after.len(),
            after.iter().take(5).collect::<Vec<_>>()
        );
        // Nothing of the old image's start-up code either: every sample
        // after the exec that is in the program names new_* functions, and
        // its outermost frame is the new script's module.
        for stack in &after {
            assert!(
                !stack.iter().any(|n| n == "old_phase" || n == "old_spin"),
                "{label}: stale stack after exec: {stack:?}"
            );
        }
        println!(
            "{label}: {} samples before, {} after ({new} in new_spin_inner)",
            before.len(),
            after.len()
        );
    }
}
