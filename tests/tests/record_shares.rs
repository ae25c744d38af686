//! Sampling accuracy on every interpreter: a program spending known shares
//! of its CPU time in two functions (it measures them itself with
//! `time.thread_time_ns`) is recorded at 100 Hz for 10 s, and the recorded
//! shares must be within 3 points of the measured ones. Alone in its own
//! test binary so that no other test competes for the CPU meanwhile.

use std::process::{Command, Stdio};

use pydeep_format::proto::ProcessEventKind;
use pydeep_integration::recording::read;
use pydeep_integration::{program, test_pythons, workspace_binary};

#[test]
fn recorded_time_shares_match_what_the_program_measured_itself() {
    for python in test_pythons("record: time shares") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("shares.pdr");
        let truth = dir.path().join("truth.json");
        let status = Command::new(workspace_binary("pydeep"))
            .args(["record", "-r", "100", "-q", "-o"])
            .arg(&output)
            .arg("--")
            .arg(&python.path)
            .arg(program("cpu_shares.py"))
            .arg(&truth)
            .arg("10")
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{}: pydeep record failed: {status}",
            python.label()
        );

        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
        let heavy_ns = truth["spent_ns"]["heavy"].as_f64().unwrap();
        let light_ns = truth["spent_ns"]["light"].as_f64().unwrap();
        let true_heavy = heavy_ns / (heavy_ns + light_ns);

        let recorded = read(&output);
        let (heavy, light) = (recorded.samples_in("heavy"), recorded.samples_in("light"));
        let recorded_heavy = heavy as f64 / (heavy + light).max(1) as f64;
        eprintln!(
            "{}: {} samples, heavy {heavy} light {light}: recorded {:.1}% vs measured {:.1}%",
            python.label(),
            recorded.samples,
            recorded_heavy * 100.0,
            true_heavy * 100.0
        );
        assert!(
            heavy + light >= 800,
            "{}: only {} samples in heavy/light",
            python.label(),
            heavy + light
        );
        assert!(
            (recorded_heavy - true_heavy).abs() <= 0.03,
            "{}: recorded share {recorded_heavy:.3} vs measured {true_heavy:.3}",
            python.label()
        );
        assert_eq!(
            recorded.footer_samples,
            Some(recorded.samples),
            "{}",
            python.label()
        );
        assert!(recorded
            .events
            .iter()
            .any(|&(kind, code)| kind == ProcessEventKind::ProcessExited && code == 0));

        let verify = Command::new(workspace_binary("pydeep"))
            .arg("verify")
            .arg(&output)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let info = Command::new(workspace_binary("pydeep"))
            .arg("info")
            .arg(&output)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(
            info.contains(&recorded.samples.to_string()),
            "info lacks the sample count: {info}"
        );
    }
}
