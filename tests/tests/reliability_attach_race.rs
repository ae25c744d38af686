//! Attaching to a process that has only just started (issue #14 item 16):
//! before its interpreter is up, or while it `exec`s, every failure is one
//! of the documented exit codes for that situation (5: no interpreter
//! found yet), never 1. On every interpreter, `attach` and `dump` are
//! started at random tiny delays after a fresh interpreter, and after one
//! that replaces itself at once by `os.execv` (a process read while it
//! execs). An attach that succeeds must leave a recording that verifies.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::process::{Command, Stdio};
use std::time::Duration;

use pydeep_integration::{test_pythons, workspace_binary, Python};

/// Rounds per interpreter, per way of starting it.
const ROUNDS: usize = 8;

/// A delay of 0 to 3 ms, different every call.
fn tiny_delay() -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    Duration::from_micros(hasher.finish() % 3_000)
}

/// How the target starts: straight away, or by exec'ing a second
/// interpreter at once (the first image dies while pydeep reads it).
#[derive(Clone, Copy, Debug)]
enum Start {
    Direct,
    Reexec,
}

fn start(python: &Python, how: Start) -> std::process::Child {
    let sleeper = "import time; time.sleep(3)";
    let mut command = Command::new(&python.path);
    match how {
        Start::Direct => command.args(["-c", sleeper]),
        Start::Reexec => command.args([
            "-c",
            &format!(
                "import os, sys; os.execv(sys.executable, [sys.executable, '-c', {sleeper:?}])"
            ),
        ]),
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn attaching_to_a_freshly_started_python_exits_with_a_documented_code() {
    for python in test_pythons("attach during start-up and exec") {
        let dir = tempfile::tempdir().unwrap();
        let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
        for round in 0..ROUNDS {
            for how in [Start::Direct, Start::Reexec] {
                for command in ["attach", "dump"] {
                    let mut target = start(&python, how);
                    std::thread::sleep(tiny_delay());
                    let output = dir.path().join(format!("{round}-{how:?}-{command}.pdr"));
                    let pid = target.id().to_string();
                    let mut pydeep = Command::new(workspace_binary("pydeep"));
                    if command == "attach" {
                        pydeep
                            .args(["attach", &pid, "-d", "50ms", "-q", "-o"])
                            .arg(&output);
                    } else {
                        pydeep.args(["dump", &pid]);
                    }
                    let result = pydeep.stdin(Stdio::null()).output().unwrap();
                    let _ = target.kill();
                    target.wait().unwrap();
                    let stderr = String::from_utf8_lossy(&result.stderr);
                    let code = result.status.code();
                    *outcomes
                        .entry(format!("{command} {how:?} exit {code:?}"))
                        .or_default() += 1;
                    // 0: attached; 5: no interpreter found (yet). Nothing
                    // else is documented for a live process that is, or is
                    // becoming, a supported Python.
                    assert!(
                        matches!(code, Some(0) | Some(5)),
                        "{}: {command} {how:?} round {round}: exit {code:?}: {stderr}",
                        python.label()
                    );
                    if code == Some(5) {
                        assert!(
                            stderr.contains("no CPython interpreter"),
                            "{}: {stderr}",
                            python.label()
                        );
                    }
                    if command == "attach" && code == Some(0) {
                        let (verified, report) = pydeep_integration::run::verify(&output);
                        assert_eq!(verified, Some(0), "{}: {report}", python.label());
                    }
                }
            }
        }
        eprintln!("{}: {outcomes:?}", python.label());
    }
}
