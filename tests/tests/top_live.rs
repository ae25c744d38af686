//! `pydeep top PID` (issue #17 item 2): the view printed once for scripts
//! holds exactly what the viewer's `top` computes from the recording behind
//! it, on every interpreter; in a real terminal (tmux) it redraws, re-sorts
//! on a key and quits on `q`, leaving a complete recording.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pydeep_integration::run::{succeeds, verify};
use pydeep_integration::waits::start_until_ready;
use pydeep_integration::{test_pythons, workspace_binary, Python};

fn start_target(python: &Python) -> Child {
    start_until_ready(python, "top_target.py")
}

#[test]
fn top_once_prints_the_viewers_numbers_for_its_recording() {
    for python in test_pythons("top --once") {
        let mut target = start_target(&python);
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("top.pdr");
        let out = Command::new(workspace_binary("pydeep"))
            .args([
                "top",
                "--pid",
                &target.id().to_string(),
                "--once",
                "--limit",
                "0",
            ])
            .arg("-o")
            .arg(&recording)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        target.kill().unwrap();
        target.wait().unwrap();
        let screen = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            python.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(verify(&recording).0, Some(0), "{}", python.label());
        assert!(screen.contains(&format!("pid {}", target.id())), "{screen}");
        assert!(
            screen.contains("worker (pid"),
            "{}: {screen}",
            python.label()
        );
        assert!(
            screen.contains("MainThread (pid"),
            "{}: {screen}",
            python.label()
        );
        // Every function row equals the viewer's top of the same file.
        let top: serde_json::Value = serde_json::from_slice(&succeeds(
            "pydeep-view",
            ["top", "--json", "--limit", "0", recording.to_str().unwrap()],
        ))
        .unwrap();
        let functions = top["functions"].as_array().unwrap();
        assert!(!functions.is_empty());
        for function in functions {
            let row = format!(
                "{:>6.2}%  {:>6.2}%",
                function["own_percent"].as_f64().unwrap(),
                function["total_percent"].as_f64().unwrap()
            );
            let label = function["label"].as_str().unwrap();
            assert!(
                screen
                    .lines()
                    .any(|l| l.starts_with(&row) && l.ends_with(label)),
                "{}: no row `{row} … {label}` in\n{screen}",
                python.label()
            );
        }
        for leaf in ["worker_leaf", "main_leaf"] {
            assert!(
                screen.contains(leaf),
                "{}: {leaf} missing:\n{screen}",
                python.label()
            );
        }
    }
}

#[test]
fn top_in_a_terminal_resorts_on_a_key_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed (scripts/setup installs it)");
    }
    let python = &test_pythons("top in tmux")[0];
    let mut target = start_target(python);
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("live.pdr");
    let session = format!("pydeep-top-{}", std::process::id());
    let socket = dir.path().join("tmux.sock");
    let tmux = |args: &[&str]| {
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "tmux {args:?}");
    };
    let command = format!(
        "{} top {} -o {}; echo EXIT=$?; sleep 60",
        workspace_binary("pydeep").display(),
        target.id(),
        recording.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    let pane = |_: &str| {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = pane("");
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "tmux: {what} never shown:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = wait("the view", &|t| {
        t.contains("sorted by own") && t.contains("worker_leaf")
    });
    assert!(first.contains("worker (pid"), "{first}");
    tmux(&["send-keys", "-t", &session, "t"]);
    wait("the view sorted by total", &|t| {
        t.contains("sorted by total")
    });
    tmux(&["send-keys", "-t", &session, "q"]);
    let last = wait("the exit", &|t| t.contains("EXIT="));
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("kill-server")
        .status();
    target.kill().unwrap();
    target.wait().unwrap();
    assert!(last.contains("EXIT=0"), "{last}");
    assert_eq!(
        verify(&recording).0,
        Some(0),
        "the recording behind the view is not complete"
    );
}
