//! Sample times against the target's own clock, on every interpreter: a
//! program runs `work` between two readings of CLOCK_MONOTONIC it takes
//! itself (`time.monotonic_ns()`), and every recorded sample inside `work`
//! must carry a time between them (less up to one interval for a read of
//! the running target, which may see `work` begin while it reads). Sample times are coded on the tick grid
//! or as deltas (format version 2), so this checks the decoded times, not
//! just their order.

use pydeep_format::{Event, Recording};
use pydeep_integration::run::{info, record_program};
use pydeep_integration::{test_pythons, Python};

/// The sampling interval of `-r 1000`.
const INTERVAL_NS: u64 = 1_000_000;

/// Records `timed_work.py` once; checks every sample's time; returns how
/// many samples were in `work` and the recording's `info`.
fn record_and_check(python: &Python) -> (u64, String) {
    {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("times.pdr");
        let truth = dir.path().join("truth.json");
        let status = record_program(
            python,
            &["-r", "1000"],
            &output,
            "timed_work.py",
            &[truth.as_os_str(), "1".as_ref()],
        );
        assert!(status.success(), "{}: pydeep record failed", python.label());
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
        let start_ns = truth["start_ns"].as_u64().unwrap();
        let end_ns = truth["end_ns"].as_u64().unwrap();

        let mut recording = Recording::open(&output).unwrap();
        let header_start = recording.header().start_clock_ns;
        let mut previous = header_start;
        let mut in_work = 0u64;
        let mut samples = 0u64;
        while let Some(event) = recording.next_event().unwrap() {
            let Event::Sample(sample) = event else {
                continue;
            };
            samples += 1;
            assert!(
                sample.time_ns >= previous,
                "{}: sample {samples} at {} before the previous one at {previous}",
                python.label(),
                sample.time_ns
            );
            previous = sample.time_ns;
            let tables = recording.tables();
            let working = tables.stack_frames(sample.stack).iter().any(|frame| {
                let code = tables.frames[frame].code;
                tables.string(tables.code_objects[&code].name) == "work"
            });
            if working {
                in_work += 1;
                // A sample carries the time its stacks were taken: once
                // the target is stopped for a paused read (exact), as the
                // read begins for a running one, which may then see
                // `work` begun during the read (microseconds; a sampler
                // preempted mid-read on a loaded machine: allowed up to
                // one interval, 1 ms).
                assert!(
                    (start_ns.saturating_sub(INTERVAL_NS)..=end_ns).contains(&sample.time_ns),
                    "{}: a sample in work at {} outside the program's {start_ns}..={end_ns}",
                    python.label(),
                    sample.time_ns
                );
            }
        }
        eprintln!(
            "{}: {samples} samples, {in_work} in work ({} ms of work)",
            python.label(),
            (end_ns - start_ns) / 1_000_000
        );
        (in_work, info(&output))
    }
}

#[test]
fn samples_in_work_are_stamped_between_the_programs_own_clock_readings() {
    for python in test_pythons("record: sample times") {
        // A second of work at 1 kHz; even a sampler slowed by a busy
        // machine takes far more than 100 samples of it. But a start-up
        // (attach) slower than the program's 0.2 s of sleep, or a stall
        // as long as the work, leaves too few to judge the times by: the
        // recording is taken again then (at most three times); the times
        // of every sample of every attempt are checked.
        let mut attempts = Vec::new();
        for _ in 0..3 {
            let (in_work, info) = record_and_check(&python);
            if in_work >= 100 {
                break;
            }
            attempts.push(format!("{in_work} samples in work; the recording:\n{info}"));
        }
        assert!(
            attempts.len() < 3,
            "{}: too few samples in work three times: {attempts:#?}",
            python.label()
        );
    }
}
