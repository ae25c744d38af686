//! The sampler never waits on the disk: with every write of the recording
//! slowed to 2 s (`PYDEEP_TEST_OUTPUT_DELAY_MS`, a hook only tests use),
//! `record` still takes its ticks on time, and whatever it did miss is
//! recorded as gaps that add up (footer, records, summary), none caused by
//! writing. The recording is complete and verifies.
//!
//! One interpreter: what is tested is the agent's pipeline, not a layout.

use pydeep_format::{Event, Recording};
use pydeep_integration::run::{record_busy_while_slowed, SlowedRecording};

#[test]
fn ticks_stay_on_time_while_the_output_is_slow_and_missed_time_is_recorded_as_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 200.0;
    let SlowedRecording {
        label,
        path,
        summary,
    } = record_busy_while_slowed(
        "slow output",
        &[("PYDEEP_TEST_OUTPUT_DELAY_MS", "2000")],
        rate as u32,
        4,
        dir.path(),
    );
    let mut recording = Recording::open(&path).unwrap();
    let (mut samples, mut weights, mut gaps, mut gap_ticks) = (0u64, 0u64, 0u64, 0u64);
    let mut footer = None;
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(sample) => {
                samples += 1;
                weights += u64::from(sample.weight);
            }
            Event::Gap(gap) => {
                gaps += 1;
                gap_ticks += gap.ticks;
                assert!(
                    !gap.cause.contains("recording") && !gap.cause.contains("writing"),
                    "{label}: a gap caused by the output: {gap:?}"
                );
            }
            Event::Footer(f) => footer = Some(f),
            _ => {}
        }
    }
    let footer = footer.expect("complete recording");
    assert_eq!(
        (gaps, gap_ticks),
        (footer.gap_count, footer.gap_ticks),
        "{label}"
    );
    assert!(
        summary.contains(&format!("gaps {gaps}")),
        "{label}: the summary does not count the gaps: {summary}"
    );
    // One thread: its samples stand for every tick (one each, or a few
    // where reads take over a third of a tick: schedule.rs's strata). The
    // old tick thread waited 2 s on each chunk written (one a second): a
    // third of the ticks at most.
    let expected = rate * footer.duration_ns as f64 / 1e9;
    assert!(
        weights as f64 >= 0.6 * expected,
        "{label}: {samples} samples standing for {weights} of {expected:.0} ticks due, {} missed: {summary}",
        footer.missed_ticks
    );
    println!(
        "{label}: {samples} samples of {expected:.0} due ({} missed, {gaps} gaps of {gap_ticks} ticks) with every write delayed 2 s",
        footer.missed_ticks
    );
}
