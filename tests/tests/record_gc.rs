//! Garbage collection against the program's own clock, on every
//! interpreter: a loop that makes reference cycles
//! (tests/programs/gc_heavy.py) times each collection with `gc.callbacks`.
//! The share of its samples flagged as the collector's
//! (`SAMPLE_FLAG_GC`, read with the stack) must match the collector's
//! share of its time (loose: 0.1), and the viewer must show them under a
//! `<gc>` frame on top of the allocating stack.

use pydeep_format::proto::SampleFlag;
use pydeep_format::{Event, Recording};
use pydeep_integration::recording::stack_names;
use pydeep_integration::run::record_program;
use pydeep_integration::{test_pythons, workspace_binary};

#[test]
fn samples_taken_while_the_collector_runs_are_flagged_for_the_share_of_time_it_runs() {
    for python in test_pythons("record: garbage collection") {
        let label = python.label();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("gc.pdr");
        let truth = dir.path().join("truth.json");
        let status = record_program(
            &python,
            &["-r", "250"],
            &output,
            "gc_heavy.py",
            &[truth.as_os_str(), "3".as_ref()],
        );
        assert!(status.success(), "{label}: pydeep record failed");
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
        let start_ns = truth["start_ns"].as_u64().unwrap();
        let end_ns = truth["end_ns"].as_u64().unwrap();
        let gc_share = truth["gc_ns"].as_u64().unwrap() as f64 / (end_ns - start_ns) as f64;

        let mut recording = Recording::open(&output).unwrap();
        let mut samples = Vec::new();
        while let Some(event) = recording.next_event().unwrap() {
            if let Event::Sample(sample) = event {
                if (start_ns..=end_ns).contains(&sample.time_ns) {
                    samples.push(sample);
                }
            }
        }
        let tables = recording.tables();
        let (mut total, mut collecting) = (0u64, 0u64);
        for sample in &samples {
            if sample.flags & SampleFlag::Torn as u32 != 0 {
                continue;
            }
            if !stack_names(tables, sample.stack)
                .iter()
                .any(|n| n == "churn")
            {
                continue;
            }
            let weight = u64::from(sample.weight);
            total += weight;
            if sample.flags & SampleFlag::Gc as u32 != 0 {
                collecting += weight;
            }
        }
        assert!(total >= 100, "{label}: only {total} ticks in the loop");
        let share = collecting as f64 / total as f64;
        eprintln!(
            "{label}: collector {:.1}% of the loop's time (gc.callbacks, {} collections, by generation {}), \
             flagged {:.1}% of {total} ticks",
            100.0 * gc_share,
            truth["collections"],
            truth["by_generation"],
            100.0 * share
        );
        assert!(
            (share - gc_share).abs() <= 0.1,
            "{label}: flagged {share:.3} of the ticks, the collector ran {gc_share:.3} of the time"
        );

        let collapsed = std::process::Command::new(workspace_binary("pydeep-view"))
            .arg("collapsed")
            .arg(&output)
            .output()
            .unwrap();
        assert!(collapsed.status.success(), "{label}: pydeep-view collapsed");
        let collapsed = String::from_utf8_lossy(&collapsed.stdout);
        assert!(
            collapsed
                .lines()
                .any(|l| l.contains("make_cycles (") && l.contains(";<gc> ")),
            "{label}: no <gc> frame on top of the loop's stacks:\n{collapsed}"
        );
    }
}
