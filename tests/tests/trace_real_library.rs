//! `pydeep trace --calls` on real third-party code, on every interpreter
//! found: pyparsing and jinja2 (pinned, pure Python, pip-installed into a
//! venv per interpreter) driven by `tests/programs/trace_real_library.py`.
//! The calls and returns traced per code object during one `work()` equal
//! the program's own `sys.setprofile` count of the same `work()` (taken
//! before and again after the window, and equal), every function of every
//! file, library, standard library and jinja2's generated template code
//! alike; the thread's events nest; after the window the program's profile
//! and trace functions (Python and C level), `sys.monitoring` tools and
//! eval-frame function are what they were, and `work()` computed the same
//! before, during and after it. Where pip cannot install the libraries (no
//! network) the interpreter is skipped with a message saying why.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use pydeep_format::proto::TraceEventKind;
use pydeep_integration::json_truth::call_counts;
use pydeep_integration::spawned::Spawned;
use pydeep_integration::traced::{read_trace, sigterm, wait_json};
use pydeep_integration::venv::venv_with;
use pydeep_integration::waits::wait_exit;
use pydeep_integration::{test_pythons, Fixture, Python};

/// Pure-Python wheels (py3-none-any) on 3.9-3.13; markupsafe, which jinja2
/// needs, has a wheel per version.
const PACKAGES: &[&str] = &["pyparsing==3.1.4", "jinja2==3.1.4", "markupsafe==3.0.2"];

#[test]
fn traced_calls_of_pyparsing_and_jinja2_match_the_programs_own_count() {
    for python in test_pythons("pydeep trace on pyparsing and jinja2") {
        let what = python.label();
        if python.free_threaded {
            // trace.rs checks the refusal (exit 6).
            eprintln!("   {what}: skipped, pydeep trace refuses free-threaded targets");
            continue;
        }
        match venv_with(&python, PACKAGES) {
            Ok(venv) => check(&python, &venv),
            Err(why) => eprintln!(
                "   {what}: skipped, {} not installable here: {why}",
                PACKAGES.join(" ")
            ),
        }
    }
}

/// Names and counts of `a` that differ from `b` ("key: a vs b"), sorted,
/// for messages.
fn differences(a: &HashMap<String, u64>, b: &HashMap<String, u64>) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} traced vs {} by the program",
                a.get(k).copied().unwrap_or(0),
                b.get(k).copied().unwrap_or(0)
            )
        })
        .collect()
}

fn check(python: &Python, venv: &Python) {
    let what = python.label();
    let mut fixture = Fixture::start(venv, "trace_real_library.py", &[]);
    let ready = fixture.wait_truth(|_, _| true);
    let dir: PathBuf = fixture.dir().to_path_buf();
    let recording = dir.join("real.pdr");
    let mut trace = Spawned::trace(fixture.pid(), &recording, &["--until-stopped"], &what);
    trace.wait_tracing();
    std::fs::write(dir.join("go"), "").expect("go");
    let round = wait_json(&dir.join("round.json"), &mut fixture, &what);
    sigterm(&trace.child);
    let status = wait_exit(&mut trace.child, &what);
    assert!(status.success(), "{what}: pydeep trace ended with {status}");
    std::fs::write(dir.join("end"), "").expect("end");
    let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
    let status = wait_exit(&mut fixture.child, &what);
    assert!(status.success(), "{what}: the program ended with {status}");

    // work() is deterministic: the same calls, the same result, before and
    // after the window, so the truth says what the window's work() called.
    let expected = call_counts(&ready);
    let again = call_counts(&last);
    assert!(
        expected.len() > 100,
        "{what}: the program counted {} functions: {ready}",
        expected.len()
    );
    assert_eq!(
        differences(&again, &expected),
        Vec::<String>::new(),
        "{what}: the program's own count after the window against before it"
    );
    assert_eq!(
        (&round["value"], &last["value"]),
        (&ready["value"], &ready["value"]),
        "{what}: work() during and after the window against before it"
    );

    // The window's work() runs through the specialised instructions that
    // push a Python frame inside the eval loop (past a PEP 523 hook:
    // notes/tracing.md), each version's.
    let inlined = |name: &str| ready["inlined"][name].as_u64().unwrap_or(0);
    let expected_inlined: &[&str] = match python.version {
        (3, 11, _) => &["BINARY_SUBSCR_GETITEM"],
        (3, 12, _) => &[
            "BINARY_SUBSCR_GETITEM",
            "FOR_ITER_GEN",
            "SEND_GEN",
            "LOAD_ATTR_PROPERTY",
        ],
        (3, 13, _) => &[
            "BINARY_SUBSCR_GETITEM",
            "FOR_ITER_GEN",
            "SEND_GEN",
            "LOAD_ATTR_PROPERTY",
            "CALL_ALLOC_AND_ENTER_INIT",
        ],
        _ => &[],
    };
    for name in expected_inlined {
        assert!(
            inlined(name) > 0,
            "{what}: no {name} among the libraries' instructions after the warm-up: {}",
            ready["inlined"]
        );
    }

    let traced = read_trace(&recording);
    assert_eq!(traced.lost, 0, "{what}: events lost");
    assert_eq!(
        traced.calls_by,
        python.trace_calls().recorded_name(),
        "{what}: the mechanism the recording names"
    );
    let native = round["thread"].as_u64().expect("thread");
    let window = (
        round["before"].as_u64().expect("before"),
        round["after"].as_u64().expect("after"),
    );
    assert_eq!(
        traced.unnested_returns(native),
        0,
        "{what}: the thread's events do not nest"
    );
    let calls = traced.per_code(TraceEventKind::TraceCall, native, window);
    assert_eq!(
        differences(&calls, &expected),
        Vec::<String>::new(),
        "{what} ({:?}): traced calls per function against the program's own count",
        python.trace_calls()
    );
    // work() is called and returns between the two readings, and so does
    // everything it calls (a generator returns at each yield).
    let returns = traced.per_code(TraceEventKind::TraceReturn, native, window);
    assert_eq!(
        differences(&returns, &expected),
        Vec::<String>::new(),
        "{what} ({:?}): traced returns per function against the program's own count of calls",
        python.trace_calls()
    );
    assert_eq!(
        traced.unwatched, 0,
        "{what}: functions the window reported CPython may have run past it"
    );
    assert_eq!(
        last["after"], last["before"],
        "{what}: the program's hooks after the window against before it"
    );
    eprintln!(
        "   {what} ({:?}): pyparsing {} and jinja2 {}: {} calls of {} functions traced, \
         equal to the program's own count, through specialised sites {}; hooks as before",
        python.trace_calls(),
        ready["pyparsing"],
        ready["jinja2"],
        expected.values().sum::<u64>(),
        expected.len(),
        ready["inlined"]
    );
}
