//! pydeep's `_Py_DebugOffsets` field lists against the interpreters' own
//! tables, on every 3.13+ interpreter found: the native 3.13 and the
//! WebAssembly builds of 3.14 and 3.15 (Pyodide, installed by
//! `scripts/setup`), the only 3.14/3.15 this machine can run.
//!
//! tests/programs/debug_offsets_truth.py prints the interpreter's table (the
//! first bytes of `_PyRuntime`) and, found independently through ctypes on
//! live objects, every offset where each field's recognisable value lies.
//! The table parsed with pydeep's field list for that version must give, for
//! each field, one of those offsets: a list that misses, adds or reorders a
//! field shifts every later field onto a neighbour that never holds the
//! value. WebAssembly is 32-bit, so its offsets differ from a native build's,
//! but the table's shape (the list of `uint64_t`s) is the same.

use std::process::Command;

use pydeep::reading::cpython::debug_offsets::DebugTable;
use pydeep::reading::cpython::{semantics_for, OffsetsSource};
use pydeep_integration::{bytecode_pythons, program, Python};
use serde_json::Value;

/// Runs the truth program under `python`.
fn truth(python: &Python) -> Value {
    let output = Command::new(&python.path)
        .arg(program("debug_offsets_truth.py"))
        .output()
        .expect("run debug_offsets_truth.py");
    assert!(
        output.status.success(),
        "debug_offsets_truth.py failed under {}: {}",
        python.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("debug_offsets_truth.py prints JSON")
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn offsets(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Checks one interpreter; returns (fields checked, problems).
fn check(python: &Python) -> (usize, Vec<String>) {
    let (_, minor, _) = python.version;
    let semantics = semantics_for(3, minor).expect("a layout for every 3.13+ found");
    let OffsetsSource::DebugOffsets(format) = semantics.offsets else {
        panic!("3.{minor} is read from its debug offsets");
    };
    let truth = truth(python);
    let table = DebugTable::parse(&hex(truth["table"].as_str().unwrap()), format)
        .unwrap_or_else(|e| panic!("{}: {e}", python.label()));
    let mut problems = Vec::new();
    let mut checked = 0;

    let version = table.get("version");
    if (version >> 24, (version >> 16) & 0xff) != (3, u64::from(minor)) {
        problems.push(format!("version field is 0x{version:08x}"));
    }
    let candidates = truth["candidates"].as_object().unwrap();
    for (field, found) in candidates {
        let found = offsets(found);
        if found.is_empty() || !format.fields().contains(&field.as_str()) {
            continue;
        }
        checked += 1;
        let parsed = table.get(field);
        if !found.contains(&parsed) {
            problems.push(format!(
                "{field}: the table parses to {parsed}, the object has it at {found:?}"
            ));
        }
    }
    // A generator embeds its first frame: gi_iframe + the frame's
    // executable lands on the pointer to the generator's code.
    if format.fields().contains(&"gen_object.gi_iframe") {
        checked += 1;
        let at = table.get("gen_object.gi_iframe") + table.get("interpreter_frame.executable");
        let found = offsets(&truth["candidates"]["gen_object.code_pointer"]);
        if !found.contains(&at) {
            problems.push(format!(
                "gi_iframe + executable = {at}, the generator's code pointer is at {found:?}"
            ));
        }
        // The table has no gi_qualname; pydeep reads the word after gi_name.
        checked += 1;
        let pointer = truth["pointer_size"].as_u64().unwrap();
        let at = table.get("gen_object.gi_name") + pointer;
        let found = offsets(&truth["candidates"]["gen_object.qualname_pointer"]);
        if !found.contains(&at) {
            problems.push(format!(
                "gi_name + one word = {at}, the generator's qualname is at {found:?}"
            ));
        }
        // gi_frame_state holds pydeep's state values for this version.
        let states = semantics.generator_states.expect("3.13+ generator states");
        let at = table.get("gen_object.gi_frame_state") as usize;
        let byte = |name: &str| hex(truth["generators"][name].as_str().unwrap())[at] as i8;
        let (created, suspended, closed) = (byte("created"), byte("suspended"), byte("closed"));
        if created != states.created
            || suspended != states.suspended
            || closed < states.finished_from
        {
            problems.push(format!(
                "gi_frame_state at {at}: created {created}, suspended {suspended}, closed \
                 {closed}; pydeep expects {}, {}, >= {}",
                states.created, states.suspended, states.finished_from
            ));
        }
    }
    (checked, problems)
}

#[test]
fn debug_offsets_field_lists_parse_the_interpreters_own_tables() {
    let pythons: Vec<Python> = bytecode_pythons("debug offsets")
        .into_iter()
        .filter(|p| p.at_least(3, 13))
        .collect();
    assert!(!pythons.is_empty(), "no CPython 3.13+ found");
    let mut failures = Vec::new();
    for python in &pythons {
        let (checked, problems) = check(python);
        eprintln!(
            "   {}: {checked} fields checked, {} wrong",
            python.label(),
            problems.len()
        );
        assert!(checked >= 30, "{}: only {checked} fields", python.label());
        failures.extend(
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", python.label())),
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The generated table of each native 3.13+ interpreter found (same patch
/// release and build flavour: cpython/tools/gen_layouts.sh compiled it from
/// that interpreter's own headers) against the interpreter's
/// `_Py_DebugOffsets` read from its memory: every field both know agrees,
/// so a generator or header mistake cannot hide behind the debug table.
#[test]
fn generated_tables_agree_with_the_interpreters_own_debug_offsets() {
    use pydeep::reading::cpython::PythonVersion;
    use pydeep_cpython::layouts;
    let mut compared = 0;
    for python in pydeep_integration::test_pythons("generated tables vs debug offsets") {
        let (major, minor, patch) = python.version;
        if !python.at_least(3, 13) {
            continue;
        }
        let label = python.label();
        let Some(OffsetsSource::DebugOffsets(format)) =
            semantics_for(major, minor).map(|s| s.offsets)
        else {
            panic!("{label}: 3.{minor} is read from its debug offsets");
        };
        let Some(generated) = layouts::ALL.iter().find(|g| {
            g.version == (major, minor, patch) && g.free_threaded == python.free_threaded
        }) else {
            eprintln!("   {label}: no generated table of this release and build");
            continue;
        };
        let truth = truth(&python);
        let table = DebugTable::parse(&hex(truth["table"].as_str().unwrap()), format)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let version = PythonVersion {
            major,
            minor,
            patch,
            free_threaded: python.free_threaded,
            ..Default::default()
        };
        let from_memory = table.to_offsets(&version);
        assert_eq!(
            from_memory.free_threaded, python.free_threaded,
            "{label}: the table's free_threaded flag"
        );
        let mut both = 0;
        let mut wrong = Vec::new();
        for ((name, ours), (_, theirs)) in from_memory.fields().iter().zip(generated.fields()) {
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                both += 1;
                if *ours != theirs {
                    wrong.push(format!("{name}: memory {ours}, generated {theirs}"));
                }
            }
        }
        eprintln!("   {label}: {both} fields in both, {} differ", wrong.len());
        assert!(both >= 40, "{label}: only {both} fields compared");
        assert!(wrong.is_empty(), "{label}: {wrong:#?}");
        compared += 1;
    }
    assert!(compared > 0, "no 3.13+ interpreter with a generated table");
}
