//! Running the workspace's binaries (`pydeep`, `pydeep-view`) to their end
//! and reading what they print: bytes, one JSON document, or JSON lines.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use serde_json::Value;

use crate::{program, workspace_binary, Python};

/// Runs the workspace binary `binary` with `args` and returns its standard
/// output; panics with its standard error unless it exits successfully.
pub fn succeeds<I, S>(binary: &str, args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new(workspace_binary(binary))
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    assert!(
        output.status.success(),
        "{binary} {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `pydeep ARGS` like [`succeeds`] and parses its output as one JSON
/// document.
pub fn pydeep_json<I, S>(args: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    serde_json::from_slice(&succeeds("pydeep", args)).expect("pydeep printed JSON")
}

/// The JSON documents of `output`, one per line.
pub fn json_lines(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect()
}

/// Runs `pydeep record OPTIONS -q -o RECORDING -- PYTHON
/// tests/programs/NAME ARGS...` to its end with standard input closed and
/// returns pydeep's exit status.
pub fn record_program<S: AsRef<OsStr>>(
    python: &Python,
    options: &[&str],
    recording: &Path,
    name: &str,
    args: &[S],
) -> ExitStatus {
    Command::new(workspace_binary("pydeep"))
        .arg("record")
        .args(options)
        .args(["-q", "-o"])
        .arg(recording)
        .arg("--")
        .arg(&python.path)
        .arg(program(name))
        .args(args)
        .stdin(Stdio::null())
        .status()
        .expect("run pydeep record")
}

/// What [`record_busy_while_slowed`] gives back.
pub struct SlowedRecording {
    /// The interpreter's label, for messages.
    pub label: String,
    /// The recording (in the caller's directory).
    pub path: std::path::PathBuf,
    /// What `pydeep record` printed, standard error then output.
    pub summary: String,
}

/// `pydeep record -r RATE -d 3s` of a program spinning for `busy_seconds`
/// on the newest interpreter from 3.11 (what such a test checks is the
/// agent's pipeline, not a layout), with the test hooks in `env` slowing
/// the sink or the output. Asserts that the duration ended the recording
/// and that the file verifies.
pub fn record_busy_while_slowed(
    what: &str,
    env: &[(&str, &str)],
    rate: u32,
    busy_seconds: u32,
    dir: &Path,
) -> SlowedRecording {
    let python = crate::test_pythons(what)
        .into_iter()
        .rfind(|p| p.at_least(3, 11))
        .unwrap();
    let label = python.label();
    let path = dir.join("slowed.pdr");
    let busy = format!(
        "import time\nend = time.monotonic() + {busy_seconds}\nwhile time.monotonic() < end:\n    sum(range(1000))\n"
    );
    let run = Command::new(workspace_binary("pydeep"))
        .envs(env.iter().copied())
        .args(["record", "-r", &rate.to_string(), "-d", "3s", "-o"])
        .arg(&path)
        .arg("--")
        .arg(&python.path)
        .args(["-c", &busy])
        .output()
        .unwrap();
    let summary =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    // The program is stopped when the duration ends: SIGTERM or similar.
    assert!(
        summary.contains("stopped: duration reached"),
        "{label}: {summary}"
    );
    let (code, report) = verify(&path);
    assert_eq!(code, Some(0), "{label}: {report}");
    SlowedRecording {
        label,
        path,
        summary,
    }
}

/// Runs `pydeep verify RECORDING`; returns its exit code and report.
pub fn verify(recording: &Path) -> (Option<i32>, String) {
    let output = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(recording)
        .output()
        .expect("run pydeep verify");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// What `pydeep info RECORDING` prints.
pub fn info(recording: &Path) -> String {
    let output = Command::new(workspace_binary("pydeep"))
        .arg("info")
        .arg(recording)
        .output()
        .expect("run pydeep info");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
