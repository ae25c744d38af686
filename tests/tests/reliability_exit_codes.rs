//! Exit codes 7 (the target exited before pydeep could attach) and 9 (the
//! output file could not be written), each with a message that says so.
//! Exit 9 on a full disk is in reliability_disk_full.rs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pydeep_integration::{test_pythons, workspace_binary};

fn pydeep(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(workspace_binary("pydeep"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// State letter of `pid` from /proc/PID/stat.
fn state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[test]
fn attaching_to_a_python_that_has_exited_exits_7() {
    for python in test_pythons("exit 7: attach to an exited target") {
        // The interpreter exits and stays a zombie until this test, its
        // parent, reaps it: its pid is there, its memory is gone.
        let mut target = Command::new(&python.path)
            .args(["-c", "pass"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while state(target.id()) != Some('Z') {
            assert!(
                Instant::now() < deadline,
                "{}: never exited",
                python.label()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let (code, stderr) = pydeep(&["attach", &target.id().to_string(), "-o", "/dev/null"]);
        target.wait().unwrap();
        assert_eq!(code, Some(7), "{}: {stderr}", python.label());
        assert!(
            stderr.contains("has exited"),
            "{}: {stderr}",
            python.label()
        );
    }
}

#[test]
fn a_program_that_exits_before_it_becomes_python_exits_7() {
    // A shell that exits at once never has an interpreter to attach to, on
    // any machine. (A Python that dies while parsing its options is not a
    // reliable stand-in: on 3.13+ the runtime's debug offsets are static,
    // attaching succeeds at once and the exit is recorded instead.)
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("never.pdr");
    let (code, stderr) = pydeep(&[
        "record",
        "-o",
        output.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        // Alive long enough for an attach attempt to see what it is: a
        // program gone before any attempt cannot be told from a Python one
        // that exited early (the message then says only that it exited).
        "sleep 0.5; exit 3",
    ]);
    assert_eq!(code, Some(7), "{stderr}");
    assert!(
        stderr.contains("exit status: 3") && stderr.contains("before pydeep could attach"),
        "{stderr}"
    );
    // It was never Python, and the message says so (not that pydeep was late).
    assert!(
        stderr.contains("it never ran Python") && stderr.contains("is not a Python interpreter"),
        "{stderr}"
    );
    assert!(!output.exists(), "a recording was left");
}

#[test]
fn an_output_that_cannot_be_created_exits_9_and_names_the_path() {
    let python = &test_pythons("exit 9: output cannot be created")[0];
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("no-such-folder").join("x.pdr");
    let (code, stderr) = pydeep(&[
        "record",
        "-o",
        output.to_str().unwrap(),
        "--",
        python.path.to_str().unwrap(),
        "-c",
        "import time; time.sleep(0.5)",
    ]);
    assert_eq!(code, Some(9), "{stderr}");
    assert!(
        stderr.contains("cannot create") && stderr.contains("no-such-folder"),
        "{stderr}"
    );
}
