//! The generator state numbering, the `yield from` stack depth and the C
//! `TaskObj` offsets pydeep assumes, against what each interpreter shows of
//! its own live objects (tests/programs/snapshot_async_layout.py, through
//! ctypes): natively on 3.9-3.13, and on the WebAssembly builds of 3.14 and
//! 3.15 (`scripts/setup`), which pydeep cannot attach to but which run the
//! same C structs with 4-byte pointers.

use std::process::Command;

use pydeep::reading::cpython::semantics_for;
use pydeep::reading::cpython::tasks::task_object_offsets_with_head;
use pydeep_integration::{bytecode_pythons, program, Python};
use serde_json::Value;

fn observe(python: &Python) -> Value {
    let output = Command::new(&python.path)
        .arg(program("snapshot_async_layout.py"))
        .output()
        .expect("run snapshot_async_layout.py");
    assert!(
        output.status.success(),
        "{}: {}",
        python.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn task_offsets_states_and_delegate_depth_match_the_interpreters_own_objects() {
    for python in bytecode_pythons("asyncio layouts") {
        let (_, minor, _) = python.version;
        let seen = observe(&python);
        let label = python.label();
        let pointer = seen["pointer"].as_u64().unwrap();
        // PyObject_HEAD: two words, four on a free-threaded build.
        let head = if python.free_threaded { 4 } else { 2 } * pointer;
        let o = task_object_offsets_with_head(minor, pointer, head).expect("a TaskObj layout");
        let task = &seen["task"];
        for (name, ours) in [
            ("loop", o.fut_loop),
            ("fut_waiter", o.task_fut_waiter),
            ("coro", o.task_coro),
            ("name", o.task_name),
        ] {
            assert_eq!(task[name].as_u64(), Some(ours), "{label}: TaskObj {name}");
        }
        for (name, ours) in [("state", o.fut_state), ("result", o.fut_result)] {
            let candidates: Vec<u64> = task[name]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            assert!(
                candidates.contains(&ours),
                "{label}: fut_{name} {ours} not in {candidates:?}"
            );
        }
        let semantics = semantics_for(3, minor).unwrap();
        if let Some(states) = semantics.generator_states {
            let seen_states = &seen["states"];
            let value = |key: &str| seen_states[key].as_i64().unwrap();
            assert_eq!(
                value("created"),
                i64::from(states.created),
                "{label}: created"
            );
            assert_eq!(
                value("suspended"),
                i64::from(states.suspended),
                "{label}: suspended"
            );
            assert_eq!(
                value("running"),
                i64::from(states.executing),
                "{label}: executing"
            );
            let yield_from = states.suspended_yield_from.unwrap_or(states.suspended);
            assert_eq!(
                value("yield_from"),
                i64::from(yield_from),
                "{label}: in yield from"
            );
            for closed in ["closed", "exhausted"] {
                assert!(
                    value(closed) >= i64::from(states.finished_from),
                    "{label}: {closed}"
                );
            }
            // running_async is the byte before gi_frame_state (pydeep's
            // 3.14+ offsets assume it; 3.11-3.13 generate both).
            assert_eq!(
                seen["running_async"],
                serde_json::json!([1, 0]),
                "{label}: running_async"
            );
            if let Some(depth) = seen["yield_from_depth"].as_u64() {
                assert_eq!(
                    depth,
                    u64::from(states.yield_from_depth),
                    "{label}: delegate depth"
                );
            } else {
                assert!(minor < 14, "{label}: no stack pointer found");
            }
        }
        eprintln!("   {label}: TaskObj, generator states and delegate depth as pydeep assumes");
    }
}
