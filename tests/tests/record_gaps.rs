//! A stall of the sampler is a gap, not a weight: pydeep is stopped
//! (SIGSTOP) for 0.6 s in the middle of a recording; the recording holds a
//! `Gap` covering about that many ticks with its cause, no sample stands
//! for more than 4 ticks (200 Hz: 20 ms), weights plus gap ticks add up to
//! the ticks due, and the summary, `pydeep info` and the viewer's profile
//! commands say so. One interpreter: the rule is the agent's.

use std::process::{Command, Stdio};
use std::time::Duration;

use pydeep_format::{Event, Recording};
use pydeep_integration::waits::{wait_exit, wait_for_file};
use pydeep_integration::{test_pythons, workspace_binary};

#[test]
fn a_stopped_sampler_leaves_a_gap_that_no_sample_stands_for_and_every_view_reports() {
    let python = test_pythons("gaps")
        .into_iter()
        .rfind(|p| p.at_least(3, 11))
        .unwrap();
    let label = python.label();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let output = dir.path().join("gaps.pdr");
    let mut target = Command::new(&python.path)
        .args(["-c", pydeep_integration::waits::BUSY])
        .arg(&ready)
        .spawn()
        .unwrap();
    wait_for_file(&ready, &mut target, &label);
    let mut agent = Command::new(workspace_binary("pydeep"))
        .args([
            "attach",
            &target.id().to_string(),
            "-r",
            "200",
            "-d",
            "3s",
            "-o",
        ])
        .arg(&output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let pid = agent.id() as libc::pid_t;
    // SAFETY: kill takes a pid and a signal number and touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(600));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let status = wait_exit(&mut agent, &label);
    let out = agent.wait_with_output().unwrap();
    target.kill().unwrap();
    target.wait().unwrap();
    let summary =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "{label}: attach failed: {summary}");

    let mut recording = Recording::open(&output).unwrap();
    let (mut samples, mut weights, mut heaviest) = (0u64, 0u64, 0u32);
    let mut gaps = Vec::new();
    let mut footer = None;
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(sample) => {
                samples += 1;
                weights += u64::from(sample.weight);
                heaviest = heaviest.max(sample.weight);
            }
            Event::Gap(gap) => gaps.push(gap),
            Event::Footer(f) => footer = Some(f),
            _ => {}
        }
    }
    let footer = footer.expect("complete recording");
    let gap_ticks: u64 = gaps.iter().map(|g| g.ticks).sum();
    assert_eq!(
        (gaps.len() as u64, gap_ticks),
        (footer.gap_count, footer.gap_ticks)
    );
    // The stop: 0.6 s at 200 Hz is 120 ticks (the signal lands a little
    // after the kill returns, and a loaded machine stretches it).
    let stop = gaps
        .iter()
        .find(|g| g.ticks >= 100)
        .unwrap_or_else(|| panic!("{label}: no gap of the stop: {gaps:?}\n{summary}"));
    let length = (stop.to_ns - stop.from_ns) as f64 / 1e9;
    assert!(
        (0.5..3.0).contains(&length),
        "{label}: the stop's gap lasts {length} s"
    );
    assert!(stop.cause.contains("did not run"), "{label}: {stop:?}");
    assert!(
        heaviest <= 4,
        "{label}: a sample stands for {heaviest} ticks"
    );
    assert_eq!(
        weights + gap_ticks,
        samples + footer.missed_ticks,
        "{label}: weights and gaps against ticks taken + missed"
    );
    assert!(
        summary.contains(&format!("gaps {} (", gaps.len())),
        "{label}: summary: {summary}"
    );
    let info = pydeep_integration::run::info(&output);
    assert!(
        info.contains(&format!("gaps:        {} (", gaps.len())),
        "{label}: info: {info}"
    );
    let top = Command::new(workspace_binary("pydeep-view"))
        .arg("top")
        .arg(&output)
        .output()
        .unwrap();
    let note = String::from_utf8_lossy(&top.stderr);
    assert!(
        note.contains("the profile covers only the time observed"),
        "{label}: pydeep-view top says: {note}"
    );
    println!(
        "{label}: {samples} samples, {} gaps of {gap_ticks} ticks, the stop {length:.3} s ({} ticks): {}",
        gaps.len(),
        stop.ticks,
        stop.cause
    );
}
