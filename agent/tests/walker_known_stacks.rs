//! Ground truth: a fixture whose threads stop at known points writes its own
//! stacks (sys._current_frames: function, file, line, f_lasti) and thread
//! names; a paused pydeep snapshot must match it frame by frame, instruction
//! offset included, on every interpreter found. py-spy's library, reading
//! the same moment, must agree on names, files and lines.

use std::path::Path;

use pydeep::{Target, ThreadSample};
use pydeep_integration::blocking::thread_count;
use pydeep_integration::{program, test_pythons, Fixture, Python};
use serde_json::Value;

/// Starts the fixture and waits for its truth: it writes its truth once
/// every thread sleeps at its blocking point; the recorder thread then
/// exits, leaving five threads. Wait for both.
fn start_fixture(python: &Python, depth: u32) -> (Fixture, Value) {
    Fixture::start_with_truth(
        python,
        "known_stacks.py",
        &[&depth.to_string()],
        |pid, _| thread_count(pid) == 5,
    )
}

fn same_file(a: &str, b: &str) -> bool {
    a == b
        || Path::new(a).file_name() == Path::new(b).file_name() && a.ends_with(b)
        || b.ends_with(a)
}

/// Compares one thread's sample with its truth, frame by frame.
fn assert_thread_matches(
    target: &mut Target,
    label: &str,
    truth: &Value,
    sample: &ThreadSample,
    names: &std::collections::HashMap<u64, String>,
) {
    let name = truth["name"].as_str().unwrap();
    let expected = truth["frames"].as_array().unwrap();
    assert_eq!(
        sample.native_id,
        truth["native_id"].as_u64().unwrap(),
        "{label} {name}: native id"
    );
    assert_eq!(
        names.get(&sample.thread_id).map(String::as_str),
        Some(name),
        "{label}: thread name of {}",
        sample.thread_id
    );
    assert_eq!(
        sample.is_main,
        truth["is_main"].as_bool().unwrap(),
        "{label} {name}: is_main"
    );
    assert!(
        !sample.torn && !sample.truncated,
        "{label} {name}: flags {sample:?}"
    );
    let got: Vec<(String, String, String, u32)> = sample
        .frames
        .iter()
        .map(|f| {
            let (_, code) = target.code_object(f.code_address).expect("code object");
            (
                code.name.clone(),
                code.qualname.clone(),
                code.filename.clone(),
                f.instruction_offset,
            )
        })
        .collect();
    let want: Vec<(String, String, String, u32)> = expected
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["qualname"].as_str().unwrap().to_string(),
                f["filename"].as_str().unwrap().to_string(),
                f["lasti"].as_i64().unwrap() as u32,
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "{label} {name}: frames (name, qualname, file, f_lasti)"
    );
    // Each code object as CPython exposes it.
    for (frame, truth) in sample.frames.iter().zip(expected) {
        let (_, code) = target.code_object(frame.code_address).expect("code object");
        assert_code_matches(label, code, &truth["code"]);
    }
    // Generator frames are flagged as such, and only they.
    for (frame, truth) in sample.frames.iter().zip(expected) {
        assert_eq!(
            frame.is_generator,
            truth["function"] == "numbers",
            "{label} {name}: is_generator of {}",
            truth["function"]
        );
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_code_matches(label: &str, code: &pydeep::CodeObject, truth: &Value) {
    let what = format!("{label}: code {}", code.qualname);
    assert_eq!(code.qualname, truth["qualname"].as_str().unwrap(), "{what}");
    assert_eq!(
        u64::from(code.first_line),
        truth["first_line"].as_u64().unwrap(),
        "{what}"
    );
    // On 3.11+ the bytecode is the adaptive form, whose specializations and
    // counters change whenever the code runs. The fixture's own functions
    // run no more after the truth is taken; threading's may (the recorder
    // thread exits through them), so for those only the size is compared.
    let expected = truth["bytecode"].as_str().unwrap();
    if code.filename.ends_with("known_stacks.py") {
        assert_eq!(hex(&code.bytecode), expected, "{what}: bytecode");
    } else {
        assert_eq!(
            code.bytecode.len() * 2,
            expected.len(),
            "{what}: bytecode size"
        );
    }
    assert_eq!(
        hex(&code.line_table),
        truth["line_table"].as_str().unwrap(),
        "{what}: line table"
    );
    assert_eq!(
        code.varnames,
        strings(&truth["varnames"]),
        "{what}: varnames"
    );
    assert_eq!(
        code.cellvars,
        strings(&truth["cellvars"]),
        "{what}: cellvars"
    );
    assert_eq!(
        code.freevars,
        strings(&truth["freevars"]),
        "{what}: freevars"
    );
    assert_eq!(code.names, strings(&truth["names"]), "{what}: names");
    let numbers = [
        ("argcount", code.argcount),
        ("posonlyargcount", code.posonlyargcount),
        ("kwonlyargcount", code.kwonlyargcount),
        ("flags", code.flags),
        ("stacksize", code.stacksize),
    ];
    for (name, ours) in numbers {
        assert_eq!(
            u64::from(ours),
            truth[name].as_u64().unwrap(),
            "{what}: {name}"
        );
    }
    let consts = truth["consts"].as_array().unwrap();
    assert_eq!(
        code.consts.len(),
        consts.len(),
        "{what}: consts {:?}",
        code.consts
    );
    for (ours, theirs) in code.consts.iter().zip(consts) {
        let kind = theirs[0].as_str().unwrap();
        // The agent renders these types' reprs itself; others by type name.
        if ["str", "int", "bool", "NoneType", "code", "float", "tuple"].contains(&kind) {
            assert_eq!(ours, theirs[1].as_str().unwrap(), "{what}: const");
        } else {
            assert_eq!(ours, &format!("<{kind}>"), "{what}: const");
        }
    }
}

#[test]
fn a_paused_snapshot_matches_the_targets_own_stacks_on_every_interpreter() {
    for python in test_pythons("walker: paused snapshot vs sys._current_frames") {
        let label = python.label();
        let (fixture, truth) = start_fixture(&python, 60);
        let pid = fixture.child.id() as i32;
        let mut target = Target::attach(pid).unwrap_or_else(|e| panic!("{label}: attach: {e}"));
        let version = target.python_version();
        assert_eq!(
            (version.major, version.minor, version.patch),
            python.version,
            "{label}: version"
        );
        let mut samples = Vec::new();
        {
            let _pause = target.pause().expect("pause");
            target.sample_threads(&mut samples).expect("sample");
        }
        let before = target.read_calls();
        let names = target.thread_names().expect("thread names");
        let name_reads = target.read_calls() - before;
        eprintln!("   {label}: thread_names took {name_reads} reads");
        // Key lengths are compared in one batch before any key is read in
        // full, so the hundreds of sys.modules entries cost a few reads.
        assert!(
            name_reads < 200,
            "{label}: thread_names took {name_reads} reads"
        );
        let threads = truth["threads"].as_array().unwrap();
        assert_eq!(
            samples.len(),
            threads.len(),
            "{label}: thread count {samples:?}"
        );
        for truth in threads {
            let ident = truth["ident"].as_u64().unwrap();
            let sample = samples
                .iter()
                .find(|s| s.thread_id == ident)
                .unwrap_or_else(|| panic!("{label}: no sample of thread {ident}"));
            assert_thread_matches(&mut target, &label, truth, sample, &names);
            // Everyone sleeps in a lock wait: nobody holds the GIL or runs.
            assert!(
                !sample.holds_gil,
                "{label}: {} holds the GIL",
                truth["name"]
            );
            assert!(!sample.active, "{label}: {} is active", truth["name"]);
        }
        // Source files are read as the target sees them.
        let fixture_source = target
            .source_file(&program("known_stacks.py").display().to_string(), 1 << 20)
            .expect("fixture source");
        assert_eq!(
            fixture_source,
            std::fs::read(program("known_stacks.py")).unwrap(),
            "{label}: source text"
        );
        assert_eq!(target.source_file("<string>", 1 << 20), None);
        // Without pausing, the idle target reads the same stacks and none is
        // torn. (`active` is not compared: threads just released from the
        // ptrace stop are briefly runnable.)
        let mut running = Vec::new();
        target
            .sample_threads(&mut running)
            .expect("non-blocking sample");
        let stacks = |s: &[ThreadSample]| -> Vec<_> {
            s.iter()
                .map(|t| (t.thread_id, t.frames.clone(), t.torn, t.truncated))
                .collect()
        };
        assert_eq!(
            stacks(&running),
            stacks(&samples),
            "{label}: non-blocking sample of an idle target"
        );
        eprintln!("   {label}: {} threads match", samples.len());
    }
}

#[test]
fn py_spy_reads_the_same_names_files_and_lines() {
    for python in test_pythons("walker: truth vs py-spy") {
        let label = python.label();
        if python.free_threaded {
            // py-spy cannot attach to a free-threaded build (it looks for
            // the GIL's holder and fails); pydeep's own walk of it is
            // checked against the target's truth above.
            eprintln!("   {label}: skipped, py-spy does not read free-threaded builds");
            continue;
        }
        let (fixture, truth) = start_fixture(&python, 60);
        let pid = fixture.child.id() as i32;
        let mut spy = py_spy::PythonSpy::new(pid, &py_spy::Config::default())
            .unwrap_or_else(|e| panic!("{label}: py-spy attach: {e}"));
        let traces = spy.get_stack_traces().expect("py-spy stacks");
        for truth in truth["threads"].as_array().unwrap() {
            let ident = truth["ident"].as_u64().unwrap();
            let trace = traces
                .iter()
                .find(|t| t.thread_id == ident)
                .unwrap_or_else(|| panic!("{label}: py-spy lacks thread {ident}"));
            let theirs: Vec<(String, String, i32)> = trace
                .frames
                .iter()
                .map(|f| (f.name.clone(), f.filename.clone(), f.line))
                .collect();
            let ours: Vec<(String, String, i32)> = truth["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["function"].as_str().unwrap().to_string(),
                        f["filename"].as_str().unwrap().to_string(),
                        f["line"].as_i64().unwrap() as i32,
                    )
                })
                .collect();
            assert_eq!(theirs.len(), ours.len(), "{label} {}: depth", truth["name"]);
            for (t, o) in theirs.iter().zip(&ours) {
                assert!(
                    (t.0 == o.0 || t.0.ends_with(&format!(".{}", o.0)))
                        && same_file(&t.1, &o.1)
                        && t.2 == o.2,
                    "{label} {}: py-spy {t:?} vs truth {o:?}",
                    truth["name"]
                );
            }
        }
    }
}
