//! `pydeep record` end to end on every interpreter: the program's exit
//! status is passed through and recorded, and `verify` catches truncation.

use std::process::{Command, Stdio};

use pydeep_format::proto::ProcessEventKind;
use pydeep_integration::recording::read;
use pydeep_integration::{program, test_pythons, workspace_binary};

#[test]
fn record_exits_with_the_programs_status_and_records_how_it_ended() {
    for python in test_pythons("record: exit status") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("exit.pdr");
        let status = Command::new(workspace_binary("pydeep"))
            .args(["record", "-q", "-o"])
            .arg(&output)
            .arg("--")
            .arg(&python.path)
            .arg(program("exit_with.py"))
            .args(["7", "0.5"])
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(7), "{}", python.label());
        let recorded = read(&output);
        assert!(
            recorded
                .events
                .contains(&(ProcessEventKind::ProcessExited, 7)),
            "{}: events {:?}",
            python.label(),
            recorded.events
        );
        assert!(recorded.samples > 0, "{}: no samples", python.label());
    }
}

#[test]
fn verify_rejects_a_truncated_recording_and_says_how_much_is_readable() {
    let python = &test_pythons("verify: truncation")[0];
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("cut.pdr");
    let status = Command::new(workspace_binary("pydeep"))
        .args(["record", "-q", "-o"])
        .arg(&output)
        .arg("--")
        .arg(&python.path)
        .arg(program("exit_with.py"))
        .args(["0", "1.5"])
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&output).unwrap();
    std::fs::write(&output, &bytes[..bytes.len() - 10]).unwrap();
    let verify = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
