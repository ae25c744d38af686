//! Threads as the recording tells them: a new OS thread that reuses a joined
//! thread's ident is a thread of its own with its own name, and thread
//! names cost no reads while no thread can be named.

use std::process::{Command, Stdio};

use pydeep_format::Recording;
use pydeep_integration::run::record_program;
use pydeep_integration::waits::start_until_ready;
use pydeep_integration::{test_pythons, workspace_binary};

#[test]
fn a_thread_reusing_an_ident_is_its_own_thread_with_its_own_name() {
    for python in test_pythons("record: reused thread idents") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("idents.pdr");
        let truth_path = dir.path().join("truth.json");
        let status = record_program(
            &python,
            &["-r", "200"],
            &output,
            "reused_idents.py",
            &[truth_path.to_str().unwrap()],
        );
        assert!(status.success(), "{}", python.label());
        let truth: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
        let mut recording = Recording::open(&output).unwrap();
        let mut samples_by_thread = std::collections::HashMap::<u32, u64>::new();
        while let Some(event) = recording.next_event().unwrap() {
            if let pydeep_format::Event::Sample(sample) = event {
                *samples_by_thread.entry(sample.thread).or_default() += 1;
            }
        }
        let tables = recording.tables();
        let idents: std::collections::HashSet<u64> =
            truth.iter().map(|t| t["ident"].as_u64().unwrap()).collect();
        for thread in &truth {
            let native = thread["native_id"].as_u64().unwrap();
            let name = thread["name"].as_str().unwrap();
            let defs: Vec<_> = tables
                .threads
                .values()
                .filter(|def| def.native_id == native)
                .collect();
            assert_eq!(defs.len(), 1, "{}: {name}: {defs:?}", python.label());
            let def = defs[0];
            assert_eq!(
                tables.name(def.name),
                name,
                "{}: the samples of OS thread {native} are named after another thread",
                python.label()
            );
            // A spinning thread is sampled at about every tick; never at
            // more ticks than it ran (another thread's samples mixed in).
            let samples = samples_by_thread.get(&def.id).copied().unwrap_or(0);
            let ran_ticks = thread["seconds"].as_f64().unwrap() * 200.0;
            assert!(
                samples as f64 <= ran_ticks * 1.25 + 10.0,
                "{}: {name}: {samples} samples for {ran_ticks:.0} ticks of running",
                python.label()
            );
            assert!(samples > 0, "{}: {name} never sampled", python.label());
        }
        eprintln!(
            "{}: {} threads, {} distinct idents",
            python.label(),
            truth.len(),
            idents.len()
        );
    }
}

#[test]
fn a_program_without_thread_names_costs_at_most_three_reads_a_tick() {
    for python in test_pythons("attach: reads per tick, nameless threads") {
        let mut target = start_until_ready(&python, "busy_unthreaded.py");
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("reads.pdr");
        let out = Command::new(workspace_binary("pydeep"))
            .args(["attach", &target.id().to_string(), "-d", "3s", "-o"])
            .arg(&output)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        target.kill().unwrap();
        target.wait().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recording = {
            let mut recording = Recording::open(&output).unwrap();
            while recording.next_event().unwrap().is_some() {}
            recording
        };
        let footer = recording.footer().expect("a footer").clone();
        let ticks = footer.sample_count + footer.missed_ticks;
        let per_tick = footer.read_calls as f64 / ticks.max(1) as f64;
        eprintln!("{}: {per_tick:.2} reads per tick", python.label());
        // The attachment's own reads (a few dozen) are counted too.
        assert!(
            per_tick <= 3.0,
            "{}: {per_tick:.2} reads per tick ({} reads, {ticks} ticks)",
            python.label(),
            footer.read_calls
        );
    }
}
