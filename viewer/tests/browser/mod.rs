//! Shared by the browser tests: the system Chromium driven by Playwright
//! (check_page.py beside this file, run by the Python of the venv
//! `scripts/setup` makes in target/browser-venv), and the recording they
//! load: tests/programs/cpu_shares.py with snapshots and heap counts, made
//! by the newest interpreter found.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pydeep_integration::run::{record_program, succeeds};
use pydeep_integration::test_pythons;

/// The venv's Python with Playwright (the system Chromium must exist too).
fn browser_python() -> PathBuf {
    let python = std::env::var_os("PYDEEP_BROWSER_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-venv/bin/python"),
        PathBuf::from,
    );
    let chromium = std::env::var_os("PYDEEP_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        python.exists() && chromium.exists(),
        "{} or {} is missing: run scripts/setup (it installs chromium and Playwright)",
        python.display(),
        chromium.display()
    );
    python
}

/// Runs `check_page.py MODE PAGE SEARCH` and parses what it prints.
pub fn check_page(mode: &str, page: &Path, search: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check_page.py");
    let output = Command::new(browser_python())
        .arg(script)
        .arg(mode)
        .arg(page)
        .arg(search)
        .output()
        .expect("run check_page.py");
    assert!(
        output.status.success(),
        "check_page.py {mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("check_page.py prints JSON")
}

/// Runs `pydeep-view ARGS` and returns what it printed.
pub fn view(args: &[&OsStr]) -> Vec<u8> {
    succeeds("pydeep-view", args)
}

/// Records cpu_shares.py for 2 s at 200 Hz with snapshots and heap counts
/// every 400 ms into `dir`; returns the recording and the interpreter's
/// label.
pub fn record_shares(dir: &Path) -> (PathBuf, String) {
    let python = test_pythons("viewer: pages in a browser")
        .pop()
        .expect("an interpreter");
    let label = python.label();
    let recording = dir.join("shares.pdr");
    let truth = dir.join("truth.json");
    let status = record_program(
        &python,
        &[
            "-r",
            "200",
            "--snapshot-every",
            "400ms",
            "--heap-every",
            "400ms",
        ],
        &recording,
        "cpu_shares.py",
        &[truth.as_os_str(), "2".as_ref()],
    );
    assert!(status.success(), "{label}: pydeep record: {status}");
    (recording, label)
}
