//! The sampler never waits on the recording's sink: with the sink thread
//! stalled 700 ms after every chunk it closes (`PYDEEP_TEST_SINK_DELAY_MS`,
//! a hook only tests use: as a slow deflate or a blocked disk would) and
//! every write of the file delayed 2 s behind it
//! (`PYDEEP_TEST_OUTPUT_DELAY_MS`), `record` takes its ticks on time: no
//! tick is ever as late as one stall (the old tick thread, which closed
//! chunks itself, was 700 ms late once a second), no gap is caused by the
//! recording, no sample is dropped (the queue holds seconds at this rate),
//! and the recording is complete.
//!
//! Statistical and generous (the machine may be loaded): the gaps a
//! starved CPU causes are allowed up to a quarter of the ticks, and the
//! samples must be 60% of the ticks due.
//!
//! One interpreter: what is tested is the agent's pipeline, not a layout.

use std::process::Command;

use pydeep_format::{Event, Recording};
use pydeep_integration::{test_pythons, workspace_binary};

const BUSY: &str = "import time\nend = time.monotonic() + 5\nwhile time.monotonic() < end:\n    sum(range(1000))\n";

#[test]
fn ticks_stay_on_time_while_the_sink_is_stalled_behind_them() {
    let python = test_pythons("sink stall")
        .into_iter()
        .rfind(|p| p.at_least(3, 11))
        .unwrap();
    let label = python.label();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("stalled.pdr");
    let rate = 500.0;
    let run = Command::new(workspace_binary("pydeep"))
        .env("PYDEEP_TEST_SINK_DELAY_MS", "700")
        .env("PYDEEP_TEST_OUTPUT_DELAY_MS", "2000")
        .args(["record", "-r", "500", "-d", "3s", "-o"])
        .arg(&output)
        .arg("--")
        .arg(&python.path)
        .args(["-c", BUSY])
        .output()
        .unwrap();
    let summary =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    assert!(
        summary.contains("stopped: duration reached"),
        "{label}: {summary}"
    );
    let (code, report) = pydeep_integration::run::verify(&output);
    assert_eq!(code, Some(0), "{label}: {report}");

    let mut recording = Recording::open(&output).unwrap();
    let (mut samples, mut gap_ticks) = (0u64, 0u64);
    let mut footer = None;
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(_) => samples += 1,
            Event::Gap(gap) => {
                gap_ticks += gap.ticks;
                assert!(
                    !gap.cause.contains("recording") && !gap.cause.contains("chunk"),
                    "{label}: a gap caused by the sink: {gap:?}"
                );
            }
            Event::Footer(f) => footer = Some(f),
            _ => {}
        }
    }
    let footer = footer.expect("complete recording");
    let due = rate * footer.duration_ns as f64 / 1e9;
    println!(
        "{label}: {samples} samples of {due:.0} due, max lag {:.1} ms, {} gaps of {gap_ticks} ticks, {} dropped, with the sink stalled 700 ms a chunk",
        footer.max_lag_ns as f64 / 1e6,
        footer.gap_count,
        footer.dropped_samples
    );
    assert_eq!(footer.dropped_samples, 0, "{label}: {summary}");
    assert!(
        footer.max_lag_ns < 500_000_000,
        "{label}: a tick {:.0} ms late: the sampler waited on the sink? {summary}",
        footer.max_lag_ns as f64 / 1e6
    );
    assert!(
        (gap_ticks as f64) < 0.25 * due,
        "{label}: {gap_ticks} ticks in gaps of {due:.0}: {summary}"
    );
    assert!(
        samples as f64 >= 0.6 * due,
        "{label}: {samples} samples of {due:.0} ticks due: {summary}"
    );
}
