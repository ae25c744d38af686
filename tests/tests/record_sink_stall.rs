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
//! samples must stand for 60% of the ticks due.
//!
//! One interpreter: what is tested is the agent's pipeline, not a layout.

use pydeep_format::{Event, Recording};
use pydeep_integration::run::{record_busy_while_slowed, SlowedRecording};

#[test]
fn ticks_stay_on_time_while_the_sink_is_stalled_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 500.0;
    let SlowedRecording {
        label,
        path,
        summary,
    } = record_busy_while_slowed(
        "sink stall",
        &[
            ("PYDEEP_TEST_SINK_DELAY_MS", "700"),
            ("PYDEEP_TEST_OUTPUT_DELAY_MS", "2000"),
        ],
        rate as u32,
        5,
        dir.path(),
    );

    let mut recording = Recording::open(&path).unwrap();
    let (mut samples, mut weights, mut gap_ticks) = (0u64, 0u64, 0u64);
    let mut footer = None;
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(sample) => {
                samples += 1;
                weights += u64::from(sample.weight);
            }
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
        "{label}: {samples} samples standing for {weights} ticks of {due:.0} due, max lag {:.1} ms, {} gaps of {gap_ticks} ticks, {} dropped, with the sink stalled 700 ms a chunk",
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
    // Ticks, not samples: when reads take over a third of a tick (paused
    // reads on a loaded machine) the schedule samples strata of a few
    // ticks, each sample standing for its stratum (schedule.rs).
    assert!(
        weights as f64 >= 0.6 * due,
        "{label}: {samples} samples standing for {weights} of {due:.0} ticks due: {summary}"
    );
}
