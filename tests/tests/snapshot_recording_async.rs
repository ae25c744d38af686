//! Generators, coroutines and asyncio tasks in recorded snapshots:
//! `pydeep attach --snapshot-every [--snapshot-async]` on the fixtures of
//! tests/tests/snapshot_async.rs (which hold generators in every state and
//! an asyncio task tree, write inspect's and asyncio's view in-process,
//! then block), read back with `pydeep-view generators --json`; every
//! snapshot must equal the truth, on every interpreter found.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use pydeep_integration::blocking::{scene_thread_in, EPOLL, FUTEX};
use pydeep_integration::json_truth::{by_address, sorted_addresses};
use pydeep_integration::run::{json_lines, succeeds};
use pydeep_integration::{test_pythons, workspace_binary, Fixture, Python};
use serde_json::Value;

/// Starts `name`, waits for its truth and until its scene thread blocks
/// in one of `syscalls`.
fn start(python: &Python, name: &str, syscalls: &[&str]) -> (Fixture, Value) {
    Fixture::start_with_truth(python, name, &[], |pid, truth| {
        scene_thread_in(pid, truth, syscalls)
    })
}

/// Attaches for a second with a snapshot every 200 ms and returns the
/// `pydeep-view generators --json` documents of the recording.
fn record_generators(fixture: &Fixture, dir: &Path, extra: &[&str], label: &str) -> Vec<Value> {
    let file = dir.join("async.pdr");
    let status = Command::new(workspace_binary("pydeep"))
        .args(["attach", &fixture.pid().to_string(), "-q", "-d", "1s", "-o"])
        .arg(&file)
        .args(["--snapshot-every", "200ms"])
        .args(extra)
        .status()
        .expect("run pydeep attach");
    assert!(status.success(), "{label}: pydeep attach: {status}");
    let snapshots = json_lines(&succeeds(
        "pydeep-view",
        [
            OsStr::new("generators"),
            OsStr::new("--json"),
            file.as_os_str(),
        ],
    ));
    assert!(!snapshots.is_empty(), "{label}: no snapshot");
    snapshots
}

#[test]
fn recorded_generators_in_every_state_match_inspect() {
    for python in test_pythons("snapshots in recordings: generators") {
        let label = python.label();
        let dir = tempfile::tempdir().expect("tempdir");
        let (fixture, truth) = start(&python, "snapshot_async_generators.py", FUTEX);
        let snapshots = record_generators(&fixture, dir.path(), &[], &label);
        let mut errors = Vec::new();
        for snapshot in &snapshots {
            let generators = &snapshot["generators"];
            for (name, expected) in truth.as_object().unwrap() {
                if name == "thread" {
                    continue;
                }
                let found = by_address(generators, &expected["id"]);
                if name == "heap_only" {
                    if found.is_some() {
                        errors.push(format!("{name}: reachable only from the heap, found"));
                    }
                    continue;
                }
                let Some(found) = found else {
                    errors.push(format!("{name}: not found"));
                    continue;
                };
                for (field, truth_field) in [
                    ("kind", "kind"),
                    ("state", "state"),
                    ("qualname", "qualname"),
                    ("line", "line"),
                    ("awaiting", "awaiting"),
                    ("awaiting_type", "awaiting_type"),
                    ("instruction_offset", "lasti"),
                ] {
                    // The running generator's f_lasti moved on after the
                    // truth was taken; its line is the blocking line.
                    if field == "instruction_offset" && name == "running_gen" {
                        continue;
                    }
                    if found[field] != expected[truth_field] {
                        errors.push(format!(
                            "snapshot {}: {name}.{field}: recorded {} != in-process {}",
                            snapshot["index"], found[field], expected[truth_field]
                        ));
                    }
                }
            }
        }
        assert!(
            errors.is_empty(),
            "{label}: {} mismatches:\n{}",
            errors.len(),
            errors.join("\n")
        );
        eprintln!(
            "   {label}: {} snapshots, each with every generator equal to inspect's view",
            snapshots.len()
        );
    }
}

#[test]
fn recorded_asyncio_task_trees_match_all_tasks() {
    for python in test_pythons("snapshots in recordings: asyncio tasks") {
        let label = python.label();
        let dir = tempfile::tempdir().expect("tempdir");
        let (fixture, truth) = start(&python, "snapshot_async_tasks.py", EPOLL);
        let snapshots = record_generators(&fixture, dir.path(), &["--snapshot-async"], &label);
        let expected_tasks = truth["tasks"].as_object().unwrap();
        let mut errors = Vec::new();
        for snapshot in &snapshots {
            let tasks = &snapshot["tasks"];
            let pending = tasks
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["state"] == "pending")
                .count();
            if pending != expected_tasks.len() {
                errors.push(format!(
                    "snapshot {}: {pending} pending tasks, all_tasks() has {}",
                    snapshot["index"],
                    expected_tasks.len()
                ));
            }
            for expected in expected_tasks.values() {
                let name = expected["name"].as_str().unwrap();
                let Some(found) = by_address(tasks, &expected["id"]) else {
                    errors.push(format!("task {name}: not found"));
                    continue;
                };
                for (field, truth_field) in [
                    ("name", "name"),
                    ("state", "state"),
                    ("coroutine", "coroutine"),
                    ("awaiting", "awaiting"),
                    ("awaiting_type", "awaiting_type"),
                ] {
                    if found[field] != expected[truth_field] {
                        errors.push(format!(
                            "task {name}.{field}: recorded {} != in-process {}",
                            found[field], expected[truth_field]
                        ));
                    }
                }
                for field in ["awaiting_tasks", "awaited_by"] {
                    if sorted_addresses(&found[field]) != sorted_addresses(&expected[field]) {
                        errors.push(format!(
                            "task {name}.{field}: recorded {} != in-process {}",
                            found[field], expected[field]
                        ));
                    }
                }
                // The coroutine stack (outermost first) as the recording's
                // frames: each link's qualname and line.
                let stack: Vec<(Value, Value)> = found["stack"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| (f["qualname"].clone(), f["line"].clone()))
                    .collect();
                let expected_stack: Vec<(Value, Value)> = expected["coroutine_stack"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| (l["qualname"].clone(), l["line"].clone()))
                    .collect();
                if stack != expected_stack {
                    errors.push(format!(
                        "task {name}.stack: recorded {stack:?} != in-process {expected_stack:?}"
                    ));
                }
            }
        }
        assert!(
            errors.is_empty(),
            "{label}: {} mismatches:\n{}",
            errors.len(),
            errors.join("\n")
        );
        eprintln!(
            "   {label}: {} snapshots, each with {} tasks equal to asyncio's view",
            snapshots.len(),
            expected_tasks.len()
        );
    }
}
