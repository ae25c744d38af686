//! Ground truth for `pydeep dump --async --json`: fixture programs hold
//! generators, coroutines and async generators in every state and an
//! asyncio task tree, write inspect's and asyncio's own view of them
//! in-process (states, f_lineno, f_lasti, gi_yieldfrom / cr_await chains,
//! all_tasks(), names, _fut_waiter, id()s), then block; the dump of the
//! paused process must match exactly, on every interpreter found.

use pydeep_integration::blocking::{scene_thread_in, EPOLL, FUTEX};
use pydeep_integration::json_truth::{by_address, sorted_addresses};
use pydeep_integration::run::pydeep_json;
use pydeep_integration::{test_pythons, Fixture, Python};
use serde_json::Value;

/// Starts `name` and waits until it wrote its truth and its thread
/// `truth.thread.native_id` sleeps in one of `syscalls`.
fn start(python: &Python, name: &str, syscalls: &[&str]) -> (Fixture, Value) {
    Fixture::start_with_truth(python, name, &[], |pid, truth| {
        scene_thread_in(pid, truth, syscalls)
    })
}

fn dump(pid: i32, all: bool) -> Value {
    let pid = pid.to_string();
    let mut args = vec!["dump", &pid, "--async", "--json"];
    if all {
        args.push("--all");
    }
    pydeep_json(args)
}

#[test]
fn generators_in_every_state_match_inspect_on_every_interpreter() {
    for python in test_pythons("dump --async: generator states") {
        let (fixture, truth) = start(&python, "snapshot_async_generators.py", FUTEX);
        let dumped = dump(fixture.pid(), false);
        let generators = &dumped["generators"];
        let mut errors = Vec::new();
        let mut checked = 0;
        for (label, expected) in truth.as_object().unwrap() {
            if label == "thread" {
                continue;
            }
            let found = by_address(generators, &expected["id"]);
            if label == "heap_only" {
                // Referenced by a module global only: not reachable from
                // the stacks, found by --all.
                if found.is_some() {
                    errors.push(format!("{label}: found without --all"));
                }
                continue;
            }
            let Some(found) = found else {
                errors.push(format!(
                    "{label}: 0x{:x} not found",
                    expected["id"].as_u64().unwrap()
                ));
                continue;
            };
            checked += 1;
            for (field, truth_field) in [
                ("kind", "kind"),
                ("state", "state"),
                ("name", "name"),
                ("qualname", "qualname"),
                ("line", "line"),
                ("awaiting", "awaiting"),
                ("awaiting_type", "awaiting_type"),
                ("instruction_offset", "lasti"),
            ] {
                // The running generator's f_lasti moved on after the
                // truth was taken; its line is the blocking line.
                if field == "instruction_offset"
                    && expected[truth_field].is_null()
                    && label == "running_gen"
                {
                    continue;
                }
                if found[field] != expected[truth_field] {
                    errors.push(format!(
                        "{label}.{field}: pydeep {} != in-process {}",
                        found[field], expected[truth_field]
                    ));
                }
            }
        }
        let with_all = dump(fixture.pid(), true);
        if by_address(&with_all["generators"], &truth["heap_only"]["id"]).is_none() {
            errors.push("heap_only: not found with --all".into());
        }
        assert!(
            errors.is_empty(),
            "{}: {} mismatches:\n{}",
            python.label(),
            errors.len(),
            errors.join("\n")
        );
        eprintln!(
            "   {}: {checked} generators equal to inspect's view",
            python.label()
        );
    }
}

#[test]
fn asyncio_task_tree_matches_all_tasks_on_every_interpreter() {
    for python in test_pythons("dump --async: asyncio task tree") {
        let (fixture, truth) = start(&python, "snapshot_async_tasks.py", EPOLL);
        let dumped = dump(fixture.pid(), false);
        let tasks = &dumped["tasks"];
        let generators = &dumped["generators"];
        let mut errors = Vec::new();
        let expected_tasks = truth["tasks"].as_object().unwrap();
        // asyncio.all_tasks() lists the pending tasks of the loop.
        let pending: Vec<&Value> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "pending")
            .collect();
        if pending.len() != expected_tasks.len() {
            errors.push(format!(
                "{} pending tasks found, all_tasks() has {}",
                pending.len(),
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
                ("type", "type"),
                ("implementation", "implementation"),
                ("coroutine", "coroutine"),
                ("running", "running"),
            ] {
                if found[field] != expected[truth_field] {
                    errors.push(format!(
                        "task {name}.{field}: pydeep {} != in-process {}",
                        found[field], expected[truth_field]
                    ));
                }
            }
            if found["awaiting"]["address"] != expected["awaiting"]
                || found["awaiting"]["type"] != expected["awaiting_type"]
            {
                errors.push(format!(
                    "task {name}.awaiting: pydeep {} != in-process {} ({})",
                    found["awaiting"], expected["awaiting"], expected["awaiting_type"]
                ));
            }
            for field in ["awaiting_tasks", "awaited_by"] {
                if sorted_addresses(&found[field]) != sorted_addresses(&expected[field]) {
                    errors.push(format!(
                        "task {name}.{field}: pydeep {} != in-process {}",
                        found[field], expected[field]
                    ));
                }
            }
            // The coroutine stack, link by link, with each link's line.
            let stack: Vec<u64> = addresses(&found["coroutine_stack"]);
            let expected_stack = expected["coroutine_stack"].as_array().unwrap();
            if stack.len() != expected_stack.len() {
                errors.push(format!(
                    "task {name}.coroutine_stack: pydeep {stack:?} != in-process {expected_stack:?}"
                ));
                continue;
            }
            for (address, link) in stack.iter().zip(expected_stack) {
                let generator = by_address(generators, &Value::from(*address));
                let found_link = generator.map(|g| (g["qualname"].clone(), g["line"].clone()));
                if link["id"].as_u64() != Some(*address)
                    || found_link != Some((link["qualname"].clone(), link["line"].clone()))
                {
                    errors.push(format!(
                        "task {name}: coroutine link 0x{address:x} {found_link:?} != in-process {link}"
                    ));
                }
            }
        }
        assert!(
            errors.is_empty(),
            "{}: {} mismatches:\n{}\nwarnings: {}",
            python.label(),
            errors.len(),
            errors.join("\n"),
            dumped["warnings"]
        );
        eprintln!(
            "   {}: {} tasks equal to asyncio's view",
            python.label(),
            expected_tasks.len()
        );
    }
}

/// The addresses of a JSON array, in order.
fn addresses(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Issue #16: a generator, coroutine or async generator held by a
/// variable is named and stated where the variable is shown (`dump
/// --locals`, and through the same rendering snapshots and the viewer),
/// not only in `dump --async` and `objects`: `<coroutine outer_coro
/// suspended at snapshot_async_generators.py:55>`, from inspect's view.
#[test]
fn generators_held_by_variables_are_named_and_stated_in_dump_locals() {
    for python in test_pythons("dump --locals: generators named and stated") {
        let (fixture, truth) = start(&python, "snapshot_async_generators.py", FUTEX);
        let pid = fixture.pid().to_string();
        let dumped = pydeep_json(["dump", &pid, "--locals", "--json"]);
        let mut expected = std::collections::HashMap::new();
        for (label, generator) in truth.as_object().unwrap() {
            if label == "thread" || label.contains('.') {
                continue;
            }
            let place = match generator["line"].as_u64() {
                Some(line) => format!(" at snapshot_async_generators.py:{line}"),
                None => String::new(),
            };
            let repr = format!(
                "<{} {} {}{place}>",
                generator["kind"].as_str().unwrap(),
                generator["qualname"].as_str().unwrap(),
                generator["state"].as_str().unwrap(),
            );
            expected.insert(generator["id"].as_u64().unwrap(), (label.clone(), repr));
        }
        let scene = dumped["threads"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["frames"].as_array().unwrap())
            .find(|f| f["name"] == "scene")
            .expect("the scene() frame");
        let mut errors = Vec::new();
        let mut checked = 0;
        for variable in scene["locals"].as_array().unwrap() {
            let value = &variable["value"];
            let Some((label, repr)) = value["address"].as_u64().and_then(|a| expected.get(&a))
            else {
                continue;
            };
            checked += 1;
            if value["repr"] != repr.as_str() {
                errors.push(format!("{label}: pydeep {} != {repr}", value["repr"]));
            }
        }
        assert!(
            checked >= 10,
            "{}: {checked} generator locals",
            python.label()
        );
        assert!(
            errors.is_empty(),
            "{}: {} mismatches:\n{}",
            python.label(),
            errors.len(),
            errors.join("\n")
        );
        eprintln!(
            "   {}: {checked} generator locals named and stated as inspect sees them",
            python.label()
        );
    }
}
