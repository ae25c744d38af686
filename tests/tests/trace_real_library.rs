//! `pydeep trace --calls` on real third-party code, on every interpreter
//! found: pyparsing and jinja2 (pinned, pure Python, pip-installed into a
//! venv per interpreter) driven by `tests/programs/trace_real_library.py`
//! (parsing, template compilation and rendering, async rendering on an
//! asyncio event loop).
//! One window per way of recording calls the version offers (the tracer's
//! own choice, then the others forced by `PYDEEP_TRACE_CALLS`: the
//! eval-frame hook on 3.9-3.13, sys.monitoring on 3.12+, the profile
//! function), each around one `work()` whose code was specialised again
//! just before (through the instructions each version inlines frames
//! with). Per window, the calls and returns traced per code object equal
//! the program's own count of the same `work()` by a C-level profile
//! function (`sys.setprofile` misses calls on 3.9/3.10: the fixture and
//! notes/tracing.md say why), taken before and again after the windows
//! and equal: every function of every file, library, standard library
//! and jinja2's generated template code alike; the thread's events nest; nothing is lost or reported unwatched.
//! After the windows the program's profile and trace functions (Python and
//! C level), `sys.monitoring` tools and eval-frame function are what they
//! were, and `work()` computed the same before, during and after them.
//! Where pip cannot install the libraries (no network) the interpreter is
//! skipped with a message saying why.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;

use pydeep_format::proto::TraceEventKind;
use pydeep_integration::json_truth::call_counts;
use pydeep_integration::spawned::Spawned;
use pydeep_integration::traced::{read_trace, sigterm, wait_json};
use pydeep_integration::venv::venv_with;
use pydeep_integration::waits::wait_exit;
use pydeep_integration::{test_pythons, workspace_binary, Fixture, Python, TraceCalls};

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
            // The venv's long path says nothing: from the package on.
            let short = k
                .rsplit_once("site-packages/")
                .map_or(k.as_str(), |(_, p)| p);
            format!(
                "{short}: {} traced vs {} by the program",
                a.get(k).copied().unwrap_or(0),
                b.get(k).copied().unwrap_or(0)
            )
        })
        .collect()
}

/// How the windows record calls on `python`, one window each: the
/// tracer's own choice first, then each other mechanism the version
/// offers, forced through `PYDEEP_TRACE_CALLS` (the eval-frame hook on
/// 3.9-3.13, sys.monitoring on 3.12+, the profile function everywhere).
fn mechanisms(python: &Python) -> Vec<(TraceCalls, bool)> {
    let chosen = python.trace_calls();
    let mut out = vec![(chosen, false)];
    let offered = [
        (
            TraceCalls::EvalFrame,
            python.at_least(3, 9) && !python.at_least(3, 14),
        ),
        (TraceCalls::Monitoring, python.at_least(3, 12)),
        (TraceCalls::Profile, true),
    ];
    for (calls, usable) in offered {
        if usable && calls != chosen {
            out.push((calls, true));
        }
    }
    out
}

/// The specialised instructions that push a Python frame inside the eval
/// loop (past a PEP 523 hook: notes/tracing.md) that the libraries' code
/// must hold before a window on this version.
fn inlined_forms(python: &Python) -> &'static [&'static str] {
    match python.version {
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
    }
}

fn check(python: &Python, venv: &Python) {
    let what = python.label();
    let mut fixture = Fixture::start(venv, "trace_real_library.py", &[]);
    let ready = fixture.wait_truth(|_, _| true);
    let dir: PathBuf = fixture.dir().to_path_buf();
    let expected = call_counts(&ready);
    assert!(
        expected.len() > 100,
        "{what}: the program counted {} functions: {ready}",
        expected.len()
    );
    let mut done = Vec::new();
    for (n, (calls_by, forced)) in mechanisms(python).into_iter().enumerate() {
        let n = n + 1;
        let what = format!(
            "{what}, window {n} ({calls_by:?}{})",
            if forced { ", forced" } else { "" }
        );
        // Specialised again after the window before (or the truth), and
        // through the forms each version inlines.
        std::fs::write(dir.join(format!("warm{n}")), "").expect("warm");
        let warmed = wait_json(&dir.join(format!("warmed{n}.json")), &mut fixture, &what);
        for name in inlined_forms(python) {
            assert!(
                warmed["inlined"][name].as_u64().unwrap_or(0) > 0,
                "{what}: no {name} among the libraries' instructions after the warm-up: {}",
                warmed["inlined"]
            );
        }
        let recording = dir.join(format!("real{n}.pdr"));
        let mut command = Command::new(workspace_binary("pydeep"));
        command
            .args(["trace", &fixture.pid().to_string(), "--until-stopped", "-o"])
            .arg(&recording);
        if forced {
            command.env("PYDEEP_TRACE_CALLS", calls_by.recorded_name());
        }
        let mut trace = Spawned::start(command, &what);
        trace.wait_tracing();
        std::fs::write(dir.join(format!("go{n}")), "").expect("go");
        let round = wait_json(&dir.join(format!("round{n}.json")), &mut fixture, &what);
        sigterm(&trace.child);
        let status = wait_exit(&mut trace.child, &what);
        assert!(status.success(), "{what}: pydeep trace ended with {status}");
        assert_eq!(
            round["value"], ready["value"],
            "{what}: work() during the window against before it"
        );

        let traced = read_trace(&recording);
        assert_eq!(traced.lost, 0, "{what}: events lost");
        assert_eq!(
            traced.calls_by,
            calls_by.recorded_name(),
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
            "{what}: traced calls per function against the program's own count"
        );
        // work() is called and returns between the two readings, and so
        // does everything it calls (a generator returns at each yield).
        let returns = traced.per_code(TraceEventKind::TraceReturn, native, window);
        assert_eq!(
            differences(&returns, &expected),
            Vec::<String>::new(),
            "{what}: traced returns per function against the program's own count of calls"
        );
        assert_eq!(
            traced.unwatched, 0,
            "{what}: functions the window reported CPython may have run past it"
        );
        done.push(format!("{calls_by:?} through {}", warmed["inlined"]));
    }

    std::fs::write(dir.join("end"), "").expect("end");
    let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
    let status = wait_exit(&mut fixture.child, &what);
    assert!(status.success(), "{what}: the program ended with {status}");
    assert_eq!(
        last["rounds"].as_u64(),
        Some(done.len() as u64),
        "{what}: {last}"
    );
    // work() is deterministic: the same calls, the same result, before and
    // after the windows, so the truth says what each window's work() called.
    assert_eq!(
        differences(&call_counts(&last), &expected),
        Vec::<String>::new(),
        "{what}: the program's own count after the windows against before them"
    );
    assert_eq!(
        last["value"], ready["value"],
        "{what}: work() after the windows against before them"
    );
    assert_eq!(
        last["after"], last["before"],
        "{what}: the program's hooks after the windows against before them"
    );
    eprintln!(
        "   {what}: pyparsing {} and jinja2 {}: {} calls of {} functions, traced equal to \
         the program's own count by {}; hooks as before",
        ready["pyparsing"],
        ready["jinja2"],
        expected.values().sum::<u64>(),
        expected.len(),
        done.join(", by ")
    );
}
