//! `pydeep record` end to end on every interpreter: the program's exit
//! status is passed through and recorded, and `verify` catches truncation.

use std::process::{Command, Stdio};

use pydeep_format::proto::ProcessEventKind;
use pydeep_integration::recording::read;
use pydeep_integration::run::{info, record_program, verify};
use pydeep_integration::{program, test_pythons, workspace_binary};

#[test]
fn record_exits_with_the_programs_status_and_records_how_it_ended() {
    for python in test_pythons("record: exit status") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("exit.pdr");
        let status = record_program(&python, &[], &output, "exit_with.py", &["7", "0.5"]);
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
    let status = record_program(python, &[], &output, "exit_with.py", &["0", "1.5"]);
    assert!(status.success());
    let bytes = std::fs::read(&output).unwrap();
    std::fs::write(&output, &bytes[..bytes.len() - 10]).unwrap();
    let (code, report) = verify(&output);
    assert_eq!(code, Some(8), "{report}");
}

#[test]
fn ctrl_c_stops_attach_and_leaves_a_complete_recording() {
    let python = &test_pythons("attach: SIGINT")[0];
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("interrupted.pdr");
    let mut target = Command::new(&python.path)
        .arg(program("idle_forever.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(target.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let mut agent = Command::new(workspace_binary("pydeep"))
        .args(["attach", &target.id().to_string(), "--idle", "-q", "-o"])
        .arg(&output)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !output.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no recording after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: sending a signal to our own child.
    unsafe { libc_kill(agent.id() as i32, 2) };
    let status = agent.wait().unwrap();
    target.kill().unwrap();
    target.wait().unwrap();
    assert!(status.success(), "pydeep exited {status} on SIGINT");
    let (code, report) = verify(&output);
    assert_eq!(code, Some(0), "{report}");
    let info = info(&output);
    assert!(info.contains("interrupted"), "{info}");
    assert!(
        read(&output).samples > 0,
        "no idle samples recorded with --idle"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
