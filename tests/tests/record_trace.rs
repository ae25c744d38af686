//! `pydeep record --trace -- python app.py`: a trace window opened in the
//! program as soon as it is attached, sampled meanwhile, both in one
//! recording (one sink, one set of interned tables). Ground truth: the
//! program's own `sys.setprofile` counter of the same deterministic work.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, TraceClock};
use pydeep_integration::spawned::Spawned;
use pydeep_integration::traced::unwatched_identity;
use pydeep_integration::waits::{wait_exit, LIMIT};
use pydeep_integration::{program, test_pythons, workspace_binary, Python, TraceCalls};
use serde_json::Value;

/// Starts `pydeep record ARGS -o OUTPUT -- python record_trace.py DIR`.
fn start_record(python: &Python, output: &Path, dir: &Path, args: &[&str]) -> Spawned {
    let mut command = Command::new(workspace_binary("pydeep"));
    command
        .arg("record")
        .args(args)
        .arg("-o")
        .arg(output)
        .arg("--")
        .arg(&python.path)
        .arg(program("record_trace.py"))
        .arg(dir);
    Spawned::start(command, &python.label())
}

fn wait_file(path: &Path, record: &mut Spawned) -> Value {
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        if let Ok(Some(status)) = record.child.try_wait() {
            panic!(
                "{}: pydeep record ended ({status}) before {}",
                record.what,
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {}",
            record.what,
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

const WORKLOAD: [&str; 9] = [
    "work",
    "fib",
    "__init__",
    "area",
    "square",
    "countdown",
    "make_adder",
    "add",
    "fails",
];

#[test]
fn record_trace_traces_the_program_while_sampling_it_into_one_recording() {
    for python in test_pythons("pydeep record --trace") {
        check(&python);
    }
}

fn check(python: &Python) {
    let what = python.label();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("r.pdr");
    let mut record = start_record(
        python,
        &output,
        dir.path(),
        &["--trace", "--trace-duration", "8s", "-r", "200"],
    );
    if python.free_threaded {
        // Refused with the message of `pydeep trace`; the program is still
        // sampled and decides the exit code.
        record.wait_line("free-threaded");
        let ready = wait_file(&dir.path().join("ready"), &mut record);
        assert!(ready["pid"].as_i64().is_some());
        std::fs::write(dir.path().join("go"), "").expect("go");
        wait_file(&dir.path().join("round.json"), &mut record);
        std::fs::write(dir.path().join("end"), "").expect("end");
        let status = wait_exit(&mut record.child, &what);
        assert!(status.success(), "{what}: {status}");
        eprintln!("   {what}: refused (free-threaded), sampled");
        return;
    }
    record.wait_line("tracing process");
    let ready = wait_file(&dir.path().join("ready"), &mut record);
    // Every thread of the program has the hook before the work goes: the
    // worker started after the window opened is hooked by the tracer's
    // rescan, which pydeep says ("hooks on N threads").
    let threads = ready["threads"].as_u64().expect("threads");
    record.wait_hooked(threads);
    std::fs::write(dir.path().join("go"), "").expect("go");
    let round = wait_file(&dir.path().join("round.json"), &mut record);
    // The window ends by its duration, before the program's truth is taken.
    let traced_line = record.wait_line("pydeep: traced");
    std::fs::write(dir.path().join("end"), "").expect("end");
    let final_ = wait_file(&dir.path().join("final.json"), &mut record);
    let status = wait_exit(&mut record.child, &what);
    assert!(status.success(), "{what}: pydeep record exited {status}");
    assert!(
        traced_line.contains("(0 lost)"),
        "{what}: events lost: {traced_line}"
    );

    // The target's hooks after the window: none on any thread, as before.
    let hooks = final_["hooks"].as_array().expect("hooks");
    assert!(
        hooks
            .iter()
            .all(|h| h.as_array().expect("pair").iter().all(|b| b == false)),
        "{what}: hooks left after the window: {hooks:?}"
    );
    let truth: HashMap<String, u64> = final_["truth"]
        .as_object()
        .expect("truth")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect();
    assert_eq!(truth["fib"], 465, "{what}: the fixture's own truth");

    // One recording: samples and trace events, one set of tables.
    let verify = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(&output)
        .output()
        .expect("pydeep verify");
    assert!(
        verify.status.success(),
        "{what}: verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let mut recording = Recording::open(&output).expect("open");
    let mut clock = TraceClock::new(recording.header().start_clock_ns);
    let mut samples = 0u64;
    let mut events = Vec::new();
    let mut sampled_threads = std::collections::HashSet::new();
    let mut gaps = Vec::new();
    while let Some(event) = recording.next_event().expect("a complete recording") {
        match event {
            Event::Sample(sample) => {
                samples += 1;
                sampled_threads.insert(sample.thread);
            }
            Event::TraceEvents(batch) => {
                assert_eq!(batch.lost, 0, "{what}: lost events");
                events.extend(clock.decode(&batch));
            }
            Event::Gap(gap) => gaps.push(gap),
            _ => {}
        }
    }
    assert!(samples > 0, "{what}: no samples");
    // Opening the window stalls no tick: the tracer is in before pydeep
    // attaches (or, when it could not be, loaded on a helper thread while
    // the sampler ticks on). A step descheduled on a loaded machine may
    // still be named as a gap's cause: bounded loosely. (Gaps of other
    // causes, a loaded machine's, are not asserted.)
    let opening: Vec<_> = gaps
        .iter()
        .filter(|g| g.cause.starts_with("opening a trace window"))
        .collect();
    assert!(
        opening.iter().all(|g| g.to_ns - g.from_ns < 1_000_000_000),
        "{what}: gaps caused by opening the trace window: {opening:?}"
    );
    assert!(!events.is_empty(), "{what}: no trace events");
    let tables = recording.tables();
    let name_of = |frame: u64| pydeep_integration::recording::frame_name(tables, frame);
    // Per thread, the calls between the thread's own clock readings around
    // its work() equal the truth of one work().
    for (who, clocks) in round.as_object().expect("round") {
        let native = clocks["thread"].as_u64().expect("thread");
        let before = clocks["before"].as_u64().expect("before");
        let after = clocks["after"].as_u64().expect("after");
        let defs: Vec<u32> = tables
            .threads
            .iter()
            .filter(|(_, t)| t.native_id == native)
            .map(|(id, _)| *id)
            .collect();
        assert!(
            !defs.is_empty(),
            "{what}: thread {who} ({native}) not in the recording"
        );
        let thread = defs[0];
        let mut counts: HashMap<String, u64> = HashMap::new();
        for event in events.iter().filter(|e| {
            defs.contains(&e.thread)
                && e.kind == TraceEventKind::TraceCall
                && e.time_ns >= before
                && e.time_ns <= after
        }) {
            let (file, name) = name_of(event.frame);
            if file.ends_with("call_workload.py") && WORKLOAD.contains(&name.as_str()) {
                *counts.entry(name).or_default() += 1;
            }
        }
        assert_eq!(
            counts, truth,
            "{what}: {who}'s calls vs the program's truth"
        );
        if who == "main" {
            // Samples and trace events of the same thread share its
            // ThreadDef: one set of tables.
            assert!(
                defs.len() == 1 && sampled_threads.contains(&thread),
                "{what}: the main thread's samples and trace events have different threads"
            );
        }
    }
    // The tracer went in before the program's first line (at Py_RunMain,
    // the program stopped at its exec until then): its first call, and
    // before it the module's own code, are traced.
    let first_frame = events
        .iter()
        .any(|e| e.kind == TraceEventKind::TraceCall && name_of(e.frame).1 == "first_frame");
    let first_call = events
        .iter()
        .find(|e| e.kind == TraceEventKind::TraceCall)
        .map(|e| name_of(e.frame));
    assert!(
        first_frame,
        "{what}: the program's first call was not traced (first traced call: {first_call:?})"
    );
    eprintln!(
        "   {what}: {samples} samples, {} trace events; the program's first call traced, the first traced call {first_call:?}",
        events.len(),
    );
    check_chrome(&output, &what);
}

/// `pydeep-view chrome` keeps the traced calls of a sampled thread on a
/// track of their own: the samples' spans stay on the thread's own id.
fn check_chrome(recording: &Path, what: &str) {
    let json = recording.with_extension("json");
    let status = Command::new(workspace_binary("pydeep-view"))
        .arg("chrome")
        .arg(recording)
        .arg("-o")
        .arg(&json)
        .status()
        .expect("pydeep-view chrome");
    assert!(status.success(), "{what}: chrome {status}");
    let trace: Value = serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("JSON");
    let events = trace["traceEvents"].as_array().expect("events");
    let names: HashMap<u64, String> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                e["tid"].as_u64().expect("tid"),
                e["args"]["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let traced_tracks: Vec<u64> = names
        .iter()
        .filter(|(_, n)| n.ends_with("traced calls"))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        !traced_tracks.is_empty(),
        "{what}: no traced track: {names:?}"
    );
    // Every traced track is off the threads' own ids; the sampled threads'
    // own tracks keep their samples (threads never sampled, idle ones, have
    // only a traced track).
    assert!(
        traced_tracks.iter().all(|t| *t >= 1 << 30),
        "{what}: a traced track on a thread's own id: {names:?}"
    );
    assert!(
        traced_tracks.iter().any(|t| names
            .get(&(t - (1 << 30)))
            .is_some_and(|n| !n.ends_with("traced calls"))),
        "{what}: no traced track beside a sampled one: {names:?}"
    );
    let has_work = |tid: u64| {
        events.iter().any(|e| {
            e["tid"].as_u64() == Some(tid)
                && e["ph"] == "B"
                && e["name"].as_str().is_some_and(|n| n.contains("fib"))
        })
    };
    assert!(
        traced_tracks.iter().any(|t| has_work(*t)),
        "{what}: no traced fib slice"
    );
}

/// `record --trace`'s window (drained by the sampler, interned by the
/// recording's sink) names the functions CPython may have run past it as
/// `pydeep trace`'s does (`trace.rs`,
/// `calls_cpython_may_have_run_past_the_window_are_reported`, same
/// fixture): on 3.13 `make`, a `type()`-made class's `__init__`, on
/// 3.11.0-3.11.3 `pick`, its `__getitem__`, each as its own `__code__`
/// says (the fixture's round.json); none elsewhere. `pydeep record` warns
/// and says where the names are.
#[test]
fn record_trace_names_the_functions_cpython_may_have_run_past_its_window() {
    for python in test_pythons("pydeep record --trace, unwatched functions named") {
        if python.free_threaded {
            continue;
        }
        let what = python.label();
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("r.pdr");
        let mut command = Command::new(workspace_binary("pydeep"));
        command
            .args(["record", "--trace", "--trace-duration", "8s", "-r", "200"])
            .arg("-o")
            .arg(&output)
            .arg("--")
            .arg(&python.path)
            .arg(program("trace_unwatched_init.py"))
            .arg(dir.path().join("ready"));
        let mut record = Spawned::start(command, &what);
        record.wait_line("tracing process");
        wait_file(&dir.path().join("ready"), &mut record);
        std::fs::write(dir.path().join("go"), "").expect("go");
        let round = wait_file(&dir.path().join("round.json"), &mut record);
        record.wait_line("pydeep: traced");
        std::fs::write(dir.path().join("end"), "").expect("end");
        let status = wait_exit(&mut record.child, &what);
        assert!(status.success(), "{what}: pydeep record exited {status}");
        let said = record.all_lines().to_vec();

        // The function CPython runs inline there, past the hook, if any.
        let hook = python.trace_calls() == TraceCalls::EvalFrame;
        let inlined = match python.version {
            (3, 13, _) if hook => Some("make"),
            (3, 11, micro) if hook && micro < 4 => Some("pick"),
            _ => None,
        };
        let expected: Vec<(String, String, u32)> = inlined
            .map(|name| {
                let f = &round["functions"][name];
                (
                    f["qualname"].as_str().expect("qualname").to_owned(),
                    f["filename"].as_str().expect("filename").to_owned(),
                    u32::try_from(f["first_line"].as_u64().expect("first_line")).expect("a line"),
                )
            })
            .into_iter()
            .collect();
        let mut recording = Recording::open(&output).expect("open the recording");
        let (mut counted, mut frames) = (0u64, Vec::new());
        while let Some(event) = recording.next_event().expect("a complete recording") {
            if let Event::TraceEvents(batch) = event {
                counted += u64::from(batch.unwatched_functions);
                frames.extend(batch.unwatched_frame);
            }
        }
        let tables = recording.tables();
        let named: Vec<(String, String, u32)> = frames
            .iter()
            .map(|frame| unwatched_identity(tables, *frame))
            .collect();
        assert_eq!(
            (counted, &named),
            (expected.len() as u64, &expected),
            "{what}: unwatched functions counted and named in the recording"
        );
        let warned = said.iter().any(|l| {
            l.starts_with("pydeep: warning: 1 function ") && l.contains("pydeep-view top --trace")
        });
        assert_eq!(
            warned,
            inlined.is_some(),
            "{what}: pydeep record's warning: {said:?}"
        );
        eprintln!("   {what}: {counted} unwatched, named {named:?}");
    }
}
