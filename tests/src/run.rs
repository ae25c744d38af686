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
