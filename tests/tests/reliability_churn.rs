//! A program churning objects and frames as fast as it can
//! (tests/programs/churn_shares.py) sampled at 10 kHz without pausing it
//! (`--nonblocking`: the default mode would read such churn paused),
//! for 10 s, or 60 s with `PYDEEP_LONG_TESTS=1` (scripts/test sets it): no
//! panic, torn samples counted, reported in the summary and flagged in the
//! file, and the shares of the good samples within 3 points of the
//! target's own measurement (time.thread_time_ns), on every interpreter.
//! Alone in its test binary so that no other test competes for the CPU.

use std::process::{Command, Stdio};

use pydeep_integration::recording::read;
use pydeep_integration::waits::run_measured_within;
use pydeep_integration::{program, test_pythons, workspace_binary, Python};

fn churn(python: &Python, seconds: u32) {
    let label = python.label();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("churn.pdr");
    let truth = dir.path().join("truth.json");
    let what = format!("{label}: record churn_shares.py at 10 kHz for {seconds} s");
    let finished = run_measured_within(
        Command::new(workspace_binary("pydeep"))
            .args(["record", "-r", "10000", "--nonblocking", "-q", "-o"])
            .arg(&output)
            .arg("--")
            .arg(&python.path)
            .arg(program("churn_shares.py"))
            .arg(&truth)
            .arg(seconds.to_string())
            .stdin(Stdio::null()),
        &what,
        // The program's own time, plus a minute for start and finish.
        std::time::Duration::from_secs(u64::from(seconds) + 60),
    );
    assert_eq!(finished.code, Some(0), "{what}: {}", finished.stderr);
    // The summary reports the torn samples; the footer counts them; the
    // file holds exactly that many flagged.
    let summary = &finished.stderr;
    let reported: u64 = summary
        .split("torn samples ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no torn count in {summary}"));
    let recorded = read(&output);
    assert_eq!(recorded.torn, reported, "{what}: {summary}");
    let verify = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(&output)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{what}: verify failed");

    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let heavy_ns = truth["spent_ns"]["heavy"].as_f64().unwrap();
    let light_ns = truth["spent_ns"]["light"].as_f64().unwrap();
    let true_heavy = heavy_ns / (heavy_ns + light_ns);
    let (heavy, light) = (recorded.samples_in("heavy"), recorded.samples_in("light"));
    let recorded_heavy = heavy as f64 / (heavy + light).max(1) as f64;
    let torn_share = recorded.torn as f64 / recorded.samples.max(1) as f64;
    eprintln!(
        "{what}: {} samples, {} torn ({:.2}%), heavy {heavy} light {light}: recorded {:.1}% vs measured {:.1}% (error {:.2} points), peak RSS {} KiB",
        recorded.samples,
        recorded.torn,
        torn_share * 100.0,
        recorded_heavy * 100.0,
        true_heavy * 100.0,
        (recorded_heavy - true_heavy).abs() * 100.0,
        finished.max_rss_kib
    );
    assert!(
        heavy + light >= 500,
        "{what}: only {} good samples",
        heavy + light
    );
    assert!(
        (recorded_heavy - true_heavy).abs() <= 0.03,
        "{what}: recorded share {recorded_heavy:.3} vs measured {true_heavy:.3}"
    );
}

#[test]
fn churning_objects_at_10_khz_keeps_good_samples_right_and_counts_torn_ones() {
    let long = std::env::var("PYDEEP_LONG_TESTS").is_ok_and(|v| v == "1");
    let seconds = if long { 60 } else { 10 };
    for python in test_pythons("object churn at 10 kHz") {
        churn(&python, seconds);
    }
}
