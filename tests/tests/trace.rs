//! `pydeep trace` against the target's own truth, on every interpreter
//! found: per-function call counts equal a `sys.setprofile` counter's, every
//! thread's events nest, times are monotonic and lie within the target's own
//! clock readings around the work, and after the window the target's
//! `sys.getprofile()` / `sys.gettrace()` are what they were, its `settrace`
//! function kept working, it runs on and ends by itself, and a second window
//! right after works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, TraceEvent};
use pydeep_integration::json_truth::call_counts;
use pydeep_integration::spawned::Spawned;
use pydeep_integration::traced::{read_trace, sigterm, wait_json, Traced};
use pydeep_integration::waits::{wait_exit, wait_for_file};
use pydeep_integration::{test_pythons, workspace_binary, Fixture, Python, TraceCalls};
use serde_json::Value;

fn check(python: &Python) {
    let what = python.label();
    let mut fixture = Fixture::start(python, "trace_calls.py", &[]);
    let truth = fixture.wait_truth(|_, _| true);
    let dir: PathBuf = fixture.dir().to_path_buf();
    let pid = fixture.pid();

    // Window 1: open until SIGTERM; one round of work inside it.
    let first = dir.join("first.pdr");
    let mut trace = Spawned::trace(pid, &first, &["--until-stopped"], &what);
    trace.wait_tracing();
    std::fs::write(dir.join("go1"), "").expect("go1");
    let round = wait_json(&dir.join("round1.json"), &mut fixture, &what);
    sigterm(&trace.child);
    let status = wait_exit(&mut trace.child, &what);
    assert!(status.success(), "{what}: pydeep trace ended with {status}");
    // The interpreter's eval-frame function during the window: pydeep's
    // hook where calls go through it, CPython's own elsewhere.
    assert_eq!(
        round["eval_frame_is_default"].as_bool(),
        Some(python.trace_calls() != TraceCalls::EvalFrame),
        "{what}: the eval-frame function during the window ({:?} expected): {round}",
        python.trace_calls()
    );

    let traced = read_trace(&first);
    assert_eq!(traced.lost, 0, "{what}: events lost at a low call rate");
    // The recording says which clock stamped the events (the TSC where
    // the kernel calls it invariant); the checks below hold for both.
    assert!(
        ["TSC", "CLOCK_MONOTONIC"].contains(&traced.clock.as_str()),
        "{what}: the recording names no event clock: {:?}",
        traced.clock
    );
    eprintln!("   {what}: event times from {}", traced.clock);
    // ... and how the tracer recorded the calls: its choice for this
    // version, which the tests' own expectation repeats.
    assert_eq!(
        traced.calls_by,
        python.trace_calls().recorded_name(),
        "{what}: the mechanism the recording names"
    );
    // Times never go backwards in the stream (the GIL orders the events).
    assert!(
        traced
            .events
            .windows(2)
            .all(|w| w[0].time_ns <= w[1].time_ns),
        "{what}: trace times go backwards"
    );
    let expected = call_counts(&truth);
    let fixture_file = |file: &str| file.ends_with("call_workload.py");
    for clock in round["threads"].as_array().expect("threads") {
        let native = clock["thread"].as_u64().expect("thread");
        let (before, after) = (
            clock["before"].as_u64().expect("before"),
            clock["after"].as_u64().expect("after"),
        );
        let thread_events: Vec<&TraceEvent> = traced
            .events
            .iter()
            .filter(|e| traced.native.get(&e.thread) == Some(&native))
            .collect();
        assert!(
            !thread_events.is_empty(),
            "{what}: no events of thread {native}"
        );
        // Every return matches the call on top of the thread's stack.
        assert_eq!(
            traced.unnested_returns(native),
            0,
            "{what}: thread {native}'s events do not nest"
        );
        // Call counts of the workload equal the truth, and every workload
        // event lies within the thread's own clock readings around it.
        let mut counts: HashMap<String, u64> = HashMap::new();
        for e in &thread_events {
            let Some((file, name)) = traced.names.get(&e.frame) else {
                continue;
            };
            if !fixture_file(file) || !expected.contains_key(name) {
                continue;
            }
            assert!(
                (before..=after).contains(&e.time_ns),
                "{what}: {name} event at {} outside the thread's work [{before}, {after}]",
                e.time_ns
            );
            if e.kind == TraceEventKind::TraceCall {
                *counts.entry(name.clone()).or_default() += 1;
            }
        }
        assert_eq!(counts, expected, "{what}: thread {native}'s call counts");
    }
    eprintln!(
        "   {what}: {} events, call counts equal the in-process truth on {} threads",
        traced.events.len(),
        round["threads"].as_array().map_or(0, Vec::len)
    );

    // The viewer's exact table counts what the threads ran: fib's row
    // holds both threads' calls.
    let table = Command::new(workspace_binary("pydeep-view"))
        .args(["top", "--trace", "--limit", "0"])
        .arg(&first)
        .output()
        .expect("run pydeep-view top --trace");
    assert!(
        table.status.success(),
        "{what}: pydeep-view top --trace failed"
    );
    let table = String::from_utf8_lossy(&table.stdout);
    let fib_calls = table
        .lines()
        .find(|l| l.contains(" fib (") && l.contains("call_workload.py"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(
        fib_calls,
        Some(2 * expected["fib"]),
        "{what}: top --trace's fib row:\n{table}"
    );
    assert!(
        table.lines().next().is_some_and(|l| l.ends_with(&format!(
            "calls recorded by {}",
            python.trace_calls().recorded_name()
        ))),
        "{what}: top --trace names no mechanism:\n{table}"
    );

    check_chrome(
        &traced,
        &first,
        round["threads"].as_array().expect("threads"),
        &expected,
        &what,
    );
    check_flamegraph(&traced, &first, &what);

    // A recording without line events (calls only, as every recording
    // before --lines): `lines --trace` says so instead of an empty gutter.
    let no_lines = Command::new(workspace_binary("pydeep-view"))
        .args(["lines", "--trace"])
        .arg(&first)
        .arg("--source")
        .arg(pydeep_integration::program("trace_calls.py"))
        .output()
        .expect("run pydeep-view lines --trace");
    assert!(
        !no_lines.status.success()
            && String::from_utf8_lossy(&no_lines.stderr).contains("no line event"),
        "{what}: lines --trace on a calls-only recording: {}",
        String::from_utf8_lossy(&no_lines.stderr)
    );

    // --lines on a target whose main thread has a trace function (the
    // fixture's sys.settrace): refused, exit 20, nothing installed; the
    // program's trace function keeps working (checked at the end).
    let refused = Command::new(workspace_binary("pydeep"))
        .args(["trace", &pid.to_string(), "--lines", "-d", "1s", "-o"])
        .arg(dir.join("lines-refused.pdr"))
        .output()
        .expect("run pydeep trace --lines");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(20), "{what}: {stderr}");
    assert!(stderr.contains("trace function"), "{what}: {stderr}");
    assert!(
        !dir.join("lines-refused.pdr").exists(),
        "{what}: a refused trace left a recording"
    );

    // --opcodes on the same target: before 3.12 it needs the trace
    // function too (refused, exit 20, as --lines); 3.12+ counts through a
    // sys.monitoring tool of its own and leaves the program's settrace
    // function alone (checked at the end).
    let opcodes = Command::new(workspace_binary("pydeep"))
        .args([
            "trace",
            &pid.to_string(),
            "--functions",
            ":fib$",
            "--opcodes",
        ])
        .args(["-d", "1s", "-o"])
        .arg(dir.join("opcodes.pdr"))
        .output()
        .expect("run pydeep trace --opcodes");
    let stderr = String::from_utf8_lossy(&opcodes.stderr);
    if python.at_least(3, 12) {
        assert!(opcodes.status.success(), "{what}: --opcodes: {stderr}");
    } else {
        assert_eq!(
            opcodes.status.code(),
            Some(20),
            "{what}: --opcodes: {stderr}"
        );
        assert!(stderr.contains("--opcodes"), "{what}: {stderr}");
    }

    // Window 2, right after, through its duration this time.
    let second = dir.join("second.pdr");
    let mut again = Spawned::trace(pid, &second, &["-d", "1s"], &what);
    let status = wait_exit(&mut again.child, &what);
    assert!(
        status.success(),
        "{what}: the second trace ended with {status}"
    );
    assert!(
        !read_trace(&second).events.is_empty(),
        "{what}: the second trace saw no event"
    );

    // The target as it was: no profile function, its trace function still
    // installed and called throughout, and it ends by itself.
    std::fs::write(dir.join("end"), "").expect("end");
    let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
    assert_eq!(
        last["profile_after"], last["profile_before"],
        "{what}: {last}"
    );
    assert_eq!(
        last["c_profile_after"], last["c_profile_before"],
        "{what}: a C-level profile function left behind: {last}"
    );
    assert_eq!(
        last["eval_frame_after"], last["eval_frame_before"],
        "{what}: the interpreter's eval-frame function is not what it was: {last}"
    );
    assert_eq!(
        last["trace_kept"], true,
        "{what}: sys.settrace lost: {last}"
    );
    // 3.12+: pydeep's sys.monitoring tool (the window's calls) is gone,
    // its id free and its events off again.
    assert_eq!(
        last["tools_after"], last["tools_before"],
        "{what}: a sys.monitoring tool left behind: {last}"
    );
    assert_eq!(
        last["marker_calls"].as_u64(),
        last["rounds"].as_u64().map(|r| r + 2),
        "{what}: the settrace function missed calls: {last}"
    );
    let status = wait_exit(&mut fixture.child, &what);
    assert!(status.success(), "{what}: the target ended with {status}");
}

/// One call as a slice: (start, end) in ns after the header's clock start.
type Slice = (u64, u64);

/// The calls of `thread` (native id) as the events give them: each call
/// with its matching return, calls left open ending at the window's end.
fn expected_slices(traced: &Traced, native: u64) -> Vec<(u64, Slice)> {
    let mut stack: Vec<(u64, u64)> = Vec::new();
    let mut slices = Vec::new();
    let mut last = 0;
    for e in traced
        .events
        .iter()
        .filter(|e| traced.native.get(&e.thread) == Some(&native))
    {
        last = last.max(e.time_ns);
        match e.kind {
            TraceEventKind::TraceCall => stack.push((e.frame, e.time_ns)),
            TraceEventKind::TraceReturn if stack.last().map(|s| s.0) == Some(e.frame) => {
                let (frame, start) = stack.pop().expect("a call");
                slices.push((frame, (start, e.time_ns)));
            }
            _ => {}
        }
    }
    let end = traced.window_end_ns.max(last);
    slices.extend(
        stack
            .into_iter()
            .map(|(frame, start)| (frame, (start, end))),
    );
    let relative = |t: u64| t - traced.start_clock_ns;
    let mut slices: Vec<(u64, Slice)> = slices
        .into_iter()
        .map(|(frame, (a, b))| (frame, (relative(a), relative(b))))
        .collect();
    slices.sort_by_key(|(_, slice)| *slice);
    slices
}

/// Chrome's microseconds (three decimals) back to nanoseconds.
fn chrome_ns(ts: &Value) -> u64 {
    (ts.as_f64().expect("ts") * 1000.0).round() as u64
}

/// `pydeep-view chrome` draws every traced call of each thread as a slice
/// on the thread's track: slices nest (every end closes the innermost open
/// slice), start and end at the call's and return's recorded times, and
/// the workload's functions appear as often as the target called them.
fn check_chrome(
    traced: &Traced,
    recording: &Path,
    threads: &[Value],
    expected: &HashMap<String, u64>,
    what: &str,
) {
    let output = recording.with_extension("json");
    let status = Command::new(workspace_binary("pydeep-view"))
        .arg("chrome")
        .arg(recording)
        .arg("-o")
        .arg(&output)
        .status()
        .expect("run pydeep-view chrome");
    assert!(status.success(), "{what}: pydeep-view chrome failed");
    let json: Value =
        serde_json::from_slice(&std::fs::read(&output).expect("read")).expect("Chrome JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents");
    for thread in threads {
        let native = thread["thread"].as_u64().expect("thread");
        // Slices of this thread's track, matched B to E as a stack.
        let mut open: Vec<(String, u64)> = Vec::new();
        let mut slices: Vec<(String, Slice)> = Vec::new();
        for e in events.iter().filter(|e| e["tid"].as_u64() == Some(native)) {
            match e["ph"].as_str() {
                Some("B") => open.push((
                    e["name"].as_str().expect("name").to_owned(),
                    chrome_ns(&e["ts"]),
                )),
                Some("E") => {
                    let (name, start) = open
                        .pop()
                        .unwrap_or_else(|| panic!("{what}: an end without a begin on {native}"));
                    let end = chrome_ns(&e["ts"]);
                    assert!(start <= end, "{what}: a slice ends before it starts");
                    slices.push((name, (start, end)));
                }
                _ => {}
            }
        }
        assert!(open.is_empty(), "{what}: slices left open on {native}");
        // The same calls with the same times as the recorded events.
        let recorded = expected_slices(traced, native);
        let mut drawn: Vec<Slice> = slices.iter().map(|(_, s)| *s).collect();
        drawn.sort_unstable();
        let recorded_times: Vec<Slice> = recorded.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            drawn.len(),
            recorded_times.len(),
            "{what}: thread {native}: slices drawn against calls recorded"
        );
        assert_eq!(
            drawn, recorded_times,
            "{what}: thread {native}: slice times differ from the recorded call and return times"
        );
        // The workload's calls, by function, equal the in-process truth.
        let mut counts: HashMap<String, u64> = HashMap::new();
        for (name, _) in &slices {
            let Some((qualname, place)) = name.split_once(" (") else {
                continue;
            };
            let function = qualname.rsplit('.').next().unwrap_or(qualname);
            if place.contains("call_workload.py") && expected.contains_key(function) {
                *counts.entry(function.to_owned()).or_default() += 1;
            }
        }
        assert_eq!(
            &counts, expected,
            "{what}: thread {native}: slices per function in the Chrome trace"
        );
    }
    eprintln!(
        "   {what}: chrome draws every traced call as a nested slice with its recorded times"
    );
}

/// `pydeep-view flamegraph --trace` draws traced time: work() is a root
/// call of both threads, so its frame is as wide as its two calls' recorded
/// durations together, in nanoseconds.
fn check_flamegraph(traced: &Traced, recording: &Path, what: &str) {
    let output = recording.with_extension("svg");
    let status = Command::new(workspace_binary("pydeep-view"))
        .args(["flamegraph", "--trace"])
        .arg(recording)
        .arg("-o")
        .arg(&output)
        .status()
        .expect("run pydeep-view flamegraph --trace");
    assert!(
        status.success(),
        "{what}: pydeep-view flamegraph --trace failed"
    );
    let svg = std::fs::read_to_string(&output).expect("read the SVG");
    let mut work_ns = 0;
    for piece in svg.split("<title>").skip(1) {
        let title = &piece[..piece.find("</title>").expect("a title's end")];
        if title.starts_with("work (") && title.contains("call_workload.py") {
            let (_, rest) = title.rsplit_once(" (").expect("a count");
            let count: String = rest
                .split(' ')
                .next()
                .unwrap_or("")
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            work_ns += count.parse::<u64>().expect("a count");
        }
    }
    let mut recorded = 0;
    for &native in traced.native.values() {
        for (frame, (start, end)) in expected_slices(traced, native) {
            if traced
                .names
                .get(&frame)
                .is_some_and(|(file, name)| file.ends_with("call_workload.py") && name == "work")
            {
                recorded += end - start;
            }
        }
    }
    assert!(recorded > 0, "{what}: no work() call recorded");
    assert_eq!(
        work_ns, recorded,
        "{what}: flamegraph --trace's work() frame against the recorded durations"
    );
}

#[test]
fn traced_calls_match_the_targets_own_truth_and_the_target_is_left_as_it_was() {
    for python in test_pythons("pydeep trace") {
        if python.free_threaded {
            refuses_free_threaded(&python);
        } else {
            check(&python);
        }
    }
}

/// A free-threaded target is refused before anything is loaded into it
/// (the tracer's ring has one writer at a time, which only the GIL
/// guarantees): exit 6, the reason said, the target left running.
fn refuses_free_threaded(python: &Python) {
    let what = python.label();
    let dir = tempfile::tempdir().expect("tempdir");
    let idle = "import sys, time\nopen(sys.argv[1], 'w').close()\ntime.sleep(600)\n";
    let (mut child, ready) = start_program(python, idle, dir.path(), "idle");
    wait_for_file(&ready, &mut child, &what);
    let output = Command::new(workspace_binary("pydeep"))
        .args(["trace", &child.id().to_string(), "-o"])
        .arg(dir.path().join("ft.pdr"))
        .output()
        .expect("run pydeep trace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let alive = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(output.status.code(), Some(6), "{what}: {stderr}");
    assert!(stderr.contains("free-threaded"), "{what}: {stderr}");
    assert!(alive, "{what}: the refused target died");
    assert!(
        !dir.path().join("ft.pdr").exists(),
        "{what}: a refused trace left a recording"
    );
    eprintln!("   {what}: refused (free-threaded), exit 6");
}

/// `python -c PROGRAM READY`: writes READY (`DIR/NAME.ready`) then does what
/// PROGRAM says. Each program gets its own ready file, which must not exist
/// yet: a ready file left by an earlier program (the refusal test once used
/// one name for its idle and its profiled program) makes the wait return at
/// once, and pydeep then runs against an interpreter still starting up,
/// before the program did what makes it ready (on the built 3.13.5, whose
/// `-c` start-up imports linecache, `trace` hooked the start-up's imports
/// before `sys.setprofile` ran, and exited 0 instead of 20).
fn start_program(python: &Python, program: &str, dir: &Path, name: &str) -> (Child, PathBuf) {
    let ready = dir.join(format!("{name}.ready"));
    assert!(
        !ready.exists(),
        "{}: a stale ready file would not wait for the program",
        ready.display()
    );
    let child = Command::new(&python.path)
        .args(["-c", program])
        .arg(&ready)
        .spawn()
        .expect("start python");
    (child, ready)
}

/// One `pydeep trace -d 1s` window over `python -c PROGRAM`
/// ([`start_program`], its files `NAME.*` in a folder of its own): the
/// window opens once the program is ready and must exit 0; then the
/// program is told to end (a file `end` beside its ready file) and must end
/// by itself, with success (`the_program` names it in that message).
/// Returns what the window traced.
fn one_window(python: &Python, program: &str, name: &str, what: &str, the_program: &str) -> Traced {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, ready) = start_program(python, program, dir.path(), name);
    wait_for_file(&ready, &mut child, what);
    let recording = dir.path().join(format!("{name}.pdr"));
    let output = Command::new(workspace_binary("pydeep"))
        .args(["trace", &child.id().to_string(), "-d", "1s", "-o"])
        .arg(&recording)
        .output()
        .expect("run pydeep trace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{what}: {stderr}");
    std::fs::write(dir.path().join("end"), "").expect("end");
    let status = wait_exit(&mut child, what);
    assert!(
        status.success(),
        "{what}: {the_program} ended with {status} after a window"
    );
    read_trace(&recording)
}

#[test]
fn an_idle_target_gets_exit_19_and_one_with_a_profiler_exit_20_with_the_profile_path_both_left_running(
) {
    // The newest interpreter pydeep trace loads into: a free-threaded one
    // is refused before either case (see refuses_free_threaded).
    let pythons = test_pythons("pydeep trace refusals");
    let Some(python) = pythons.iter().rev().find(|p| !p.free_threaded) else {
        eprintln!("   skipped: no interpreter with a GIL in this matrix");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pydeep = workspace_binary("pydeep");

    let idle = "import sys, time\nopen(sys.argv[1], 'w').close()\ntime.sleep(600)\n";
    let (mut child, ready) = start_program(python, idle, dir.path(), "idle");
    wait_for_file(&ready, &mut child, "idle target");
    let output = Command::new(&pydeep)
        .args([
            "trace",
            &child.id().to_string(),
            "--start-timeout",
            "1s",
            "-o",
        ])
        .arg(dir.path().join("idle.pdr"))
        .output()
        .expect("run pydeep trace");
    assert_eq!(
        output.status.code(),
        Some(19),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the idle target died"
    );
    let _ = child.kill();
    let _ = child.wait();

    // A program with its own profile function: refused where pydeep's
    // calls come from a C profile function (one per thread: 3.11 before
    // 3.11.4, see Python::trace_calls); traced beside it where they come
    // from a hook of the interpreter (pydeep's sys.monitoring tool on
    // 3.13, the eval-frame hook on 3.9-3.12). The newest interpreter of
    // each kind found.
    let profiled = "import sys, time\ndef f():\n    return sum(range(100))\nsys.setprofile(lambda *a: None)\nopen(sys.argv[1], 'w').close()\nwhile True:\n    f()\n    time.sleep(0.001)\n";
    let by_profile = |p: &&Python| p.trace_calls() == TraceCalls::Profile;
    let older = pythons
        .iter()
        .rev()
        .find(|p| !p.free_threaded && by_profile(p));
    let newer = pythons
        .iter()
        .rev()
        .find(|p| !p.free_threaded && !by_profile(p));
    for (index, python) in [older, newer].into_iter().flatten().enumerate() {
        let what = python.label();
        let name = format!("profiled{index}");
        let (mut child, ready) = start_program(python, profiled, dir.path(), &name);
        wait_for_file(&ready, &mut child, "profiled target");
        let recording = dir.path().join(format!("{name}.pdr"));
        let output = Command::new(&pydeep)
            .args(["trace", &child.id().to_string(), "-d", "1s", "-o"])
            .arg(&recording)
            .output()
            .expect("run pydeep trace");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !by_profile(&python) {
            assert_eq!(output.status.code(), Some(0), "{what}: {stderr}");
            let traced = read_trace(&recording);
            let calls = traced.calls_of("f");
            assert!(
                calls > 0,
                "{what}: no call of f() traced beside the program's profile function"
            );
            eprintln!(
                "   {what}: traced beside the program's profile function ({calls} calls of f)"
            );
        } else {
            assert_eq!(output.status.code(), Some(20), "{what}: {stderr}");
            assert!(stderr.contains("profile function"), "{what}: {stderr}");
            eprintln!("   {what}: refused (exit 20) with the program's profile function");
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "{what}: the profiled target died"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The program's own `sys.setprofile` during a window (the race the
/// refusal test once lost: a profile function set after the tracer's
/// check): before 3.12 it replaces the tracer's hook on its thread and is
/// left alone; on 3.12+ (pydeep's own `sys.monitoring` tool) both run.
/// The window ends cleanly, the thread's calls before it are traced, and
/// afterwards the program's function is still installed and called once
/// per call, on every interpreter with a GIL.
#[test]
fn a_profile_function_the_program_sets_during_the_window_replaces_ours_and_is_left_alone() {
    let program = r#"
import json, os, sys, time
ready = sys.argv[1]
folder = os.path.dirname(ready)
calls = 0
def mine(frame, event, arg):
    global calls
    if event == "call" and frame.f_code.co_name == "step":
        calls += 1
def step():
    return sum(range(10))
def until(name):
    while not os.path.exists(os.path.join(folder, name)):
        if not os.path.isdir(folder):
            sys.exit(3)  # the test is gone: do not spin forever
        step()
        time.sleep(0.001)
open(ready, "w").close()
until("set")
step()  # hooked: the test says "set" only once the hooks are in
sys.setprofile(mine)
open(os.path.join(folder, "was_set"), "w").close()
until("end")
before = calls
step()
step()
result = {"kept": sys.getprofile() is mine, "calls_after_window": calls - before}
sys.setprofile(None)
with open(os.path.join(folder, "final.tmp"), "w") as f:
    json.dump(result, f)
os.rename(os.path.join(folder, "final.tmp"), os.path.join(folder, "final.json"))
"#;
    for python in test_pythons("pydeep trace, a profile function set during the window") {
        if python.free_threaded {
            continue;
        }
        let what = python.label();
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, ready) = start_program(&python, program, dir.path(), "replaced");
        wait_for_file(&ready, &mut child, &what);
        let output = dir.path().join("replaced.pdr");
        let mut trace = Spawned::trace(child.id() as i32, &output, &["--until-stopped"], &what);
        trace.wait_tracing();
        std::fs::write(dir.path().join("set"), "").expect("set");
        wait_for_file(&dir.path().join("was_set"), &mut child, &what);
        sigterm(&trace.child);
        let status = wait_exit(&mut trace.child, &what);
        assert!(status.success(), "{what}: pydeep trace ended with {status}");
        let traced = read_trace(&output);
        let steps = traced.calls_of("step");
        assert!(
            steps > 0,
            "{what}: no call of step() traced before the program set its profile function"
        );
        std::fs::write(dir.path().join("end"), "").expect("end");
        let final_json = dir.path().join("final.json");
        wait_for_file(&final_json, &mut child, &what);
        let last: Value =
            serde_json::from_slice(&std::fs::read(&final_json).expect("read")).expect("JSON");
        assert_eq!(
            last["kept"], true,
            "{what}: the program's profile function was removed: {last}"
        );
        assert_eq!(
            last["calls_after_window"].as_u64(),
            Some(2),
            "{what}: the program's profile function missed calls after the window: {last}"
        );
        let status = wait_exit(&mut child, &what);
        assert!(status.success(), "{what}: the target ended with {status}");
        eprintln!("   {what}: the program's own profile function replaced the hook and was left alone ({steps} step() calls traced before)");
    }
}

/// Every way CPython enters a Python frame, with the program's
/// instructions specialised before the window (`trace_entries.py`:
/// `__getitem__`, a property, `__getattribute__`, keyword and `*args`
/// calls, generators through `for`, `yield from`, `send`, `throw`,
/// coroutines, exceptions, and `__init__` every way 3.13's
/// CALL_ALLOC_AND_ENTER_INIT takes it: specialised before the window,
/// inherited, `super().__init__()`, a class defined during the window, one
/// made by `type()`, an `__init__` that raises): the calls traced during one
/// `work()` equal the program's own `sys.setprofile` count, per function,
/// and every call has its return, on every interpreter with a GIL. This is
/// what 3.11.0-3.11.3's `__getitem__` versions (tracer/src/getitem.rs) are
/// for: a class whose `__getitem__` was specialised before the window (Box),
/// and one made during it (Late); after the window the program computes
/// what it computed before, its subscriptions specialise again, and on 3.11
/// `Box.__getitem__` has its version back, but not `Reset.__getitem__`,
/// whose defaults the program set during the window (CPython reset its
/// version then). On 3.13 it checks the `__init__` handling
/// (`evalframe.rs`). On 3.12+ the window leaves no `sys.monitoring` tool id
/// taken and no local event on the program's `__init__` code objects.
#[test]
fn every_way_into_a_python_frame_is_traced() {
    for python in test_pythons("pydeep trace, every way into a Python frame") {
        if python.free_threaded {
            continue;
        }
        check_entries(&python, false);
    }
}

/// The same with a program that is a `sys.monitoring` user itself (3.12+;
/// tool 1, coverage.py's id, with local PY_START events on some functions,
/// `__init__`s among them): pydeep's counts still equal the truth (a code
/// object another tool instruments is still recorded), the program's tool
/// counts what it counts without a window, during and after it, and keeps
/// its id.
#[test]
fn a_program_using_sys_monitoring_keeps_it_and_is_traced() {
    for python in test_pythons("pydeep trace, a program using sys.monitoring") {
        if python.free_threaded || !python.at_least(3, 12) {
            continue;
        }
        check_entries(&python, true);
    }
}

fn check_entries(python: &Python, monitor: bool) {
    let what = python.label();
    let args: &[&str] = if monitor { &["monitor"] } else { &[] };
    let mut fixture = Fixture::start(python, "trace_entries.py", args);
    let truth = fixture.wait_truth(|_, _| true);
    let dir: PathBuf = fixture.dir().to_path_buf();
    let recording = dir.join("entries.pdr");
    let mut trace = Spawned::trace(fixture.pid(), &recording, &["--until-stopped"], &what);
    trace.wait_tracing();
    std::fs::write(dir.join("go"), "").expect("go");
    let round = wait_json(&dir.join("round1.json"), &mut fixture, &what);
    sigterm(&trace.child);
    let status = wait_exit(&mut trace.child, &what);
    assert!(status.success(), "{what}: pydeep trace ended with {status}");
    let expected = call_counts(&truth);
    let traced = read_trace(&recording);
    assert_eq!(traced.lost, 0, "{what}: events lost at a low call rate");
    // Every `__init__` and `__getitem__` of the fixture is one pydeep's
    // rules see, so the window reports none it may have missed.
    assert_eq!(
        (traced.unwatched, traced.unwatched_named.len()),
        (0, 0),
        "{what}: functions the window reported CPython may have run past it"
    );
    let (before, after) = (
        round["before"].as_u64().expect("before"),
        round["after"].as_u64().expect("after"),
    );
    let native = round["thread"].as_u64().expect("thread");
    let window = (before, after);
    let counts = traced.calls_per_function(native, window, "trace_entries.py", |_| true);
    assert_eq!(
        counts,
        expected,
        "{what}: traced calls per function ({:?}) against the program's own count",
        python.trace_calls()
    );
    // work() is called and returns between the two readings, and so does
    // everything it calls.
    let returns = traced.per_function(
        TraceEventKind::TraceReturn,
        native,
        window,
        "trace_entries.py",
        |_| true,
    );
    assert_eq!(
        returns,
        expected,
        "{what}: traced returns per function ({:?}) against the program's own count of calls",
        python.trace_calls()
    );
    if python.at_least(3, 13) && python.trace_calls() == TraceCalls::EvalFrame {
        // PY_START | PY_RESUME | PY_RETURN | PY_YIELD, set by the hook on a
        // class body's return and on an `__init__`'s first call through it.
        let local = &round["pydeep_local_events"];
        assert_eq!(
            (
                local["class_body"].as_u64(),
                local["type_before_call"].as_u64(),
                local["type_after_call"].as_u64()
            ),
            (Some(15), Some(0), Some(15)),
            "{what}: pydeep's local events on fresh __init__ code objects: {local}"
        );
    }
    if monitor {
        assert_eq!(
            round["monitor"], truth["monitor_truth"],
            "{what}: the program's own sys.monitoring tool during the window"
        );
    }
    std::fs::write(dir.join("after"), "").expect("after");
    let later = wait_json(&dir.join("round2.json"), &mut fixture, &what);
    assert_eq!(
        (&round["value"], &later["value"]),
        (&truth["value"], &truth["value"]),
        "{what}: work() during and after the window against before it"
    );
    assert_eq!(
        later["version"], truth["version"],
        "{what}: Box.__getitem__'s func_version after the window against before it"
    );
    assert_eq!(
        later["specialised"], truth["specialised"],
        "{what}: the specialised subscriptions of subscribe() and of the sites of the \
         __getitem__ functions made during work(), after the window against before it"
    );
    // Reset.__getitem__'s defaults were set during the window: CPython
    // reset its version, and it keeps whatever it got since (3.11).
    if python.version.1 == 11 {
        assert_ne!(
            later["reset_version"], truth["reset_version"],
            "{what}: Reset.__getitem__ got its version from before the window back"
        );
    }
    assert_eq!(
        later["reset_value"], 4950,
        "{what}: Reset()[i] after the window"
    );
    std::fs::write(dir.join("end"), "").expect("end");
    let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
    let status = wait_exit(&mut fixture.child, &what);
    assert!(status.success(), "{what}: the target ended with {status}");
    if python.at_least(3, 12) {
        let tools: Vec<Value> = (0..6)
            .map(|i| match (i, monitor) {
                (1, true) => Value::from("fixture"),
                _ => Value::Null,
            })
            .collect();
        assert_eq!(
            last["tools"],
            Value::from(tools),
            "{what}: sys.monitoring tool ids after the window: {last}"
        );
        assert_eq!(
            last["left"].as_u64(),
            Some(0),
            "{what}: local events left on __init__ code objects after the window: {last}"
        );
    }
    if monitor {
        assert_eq!(
            last["monitor_after"], truth["monitor_truth"],
            "{what}: the program's own sys.monitoring tool after the window"
        );
    }
    eprintln!(
        "   {what}: every way into a frame traced ({:?}{}): {} functions equal the truth; \
         Box.__getitem__'s version {} before and after, {} during the window; \
         specialised subscriptions before and after {}",
        python.trace_calls(),
        if monitor {
            ", beside the program's sys.monitoring tool"
        } else {
            ""
        },
        expected.len(),
        truth["version"],
        round["version"],
        truth["specialised"]
    );
}

/// A program that raised its recursion limit and recurses deep during a
/// window: 3.11+ run such a recursion inlined, without the C stack, and the
/// eval-frame hook makes it a C recursion again (measured: SIGSEGV on
/// 3.11.7 20,000 deep, and 3.12.1 16,000 deep; RecursionError past ~5,000
/// deep on 3.13.0, which counts 2 C recursion units per call through the
/// hook), so above a limit per version (`eval_frame_recursion_limit`:
/// 10,000 on 3.11, 5,000 on 3.12, 4,000 on 3.13) the tracer keeps the
/// previous mechanism. Under it, on 3.12, the hook gives back the C
/// recursion count each call through it costs: without that, 900 deep
/// under the default limit raised RecursionError. The
/// program survives the window, its recursion intact, and the window traced
/// its calls; a lone C recursion (`repr` of a list nested 100,000 deep)
/// still raises RecursionError in it, as untraced. 3.9/3.10 recurse in C
/// whatever the mechanism (the profile function crashed 3.10.13 at 20,000
/// too): not run there.
#[test]
fn a_deep_recursion_allowed_by_a_raised_limit_survives_a_window() {
    // (limit, depth): past 3.11's C stack under the hook (8 MB main thread:
    // 20,000 crashed it), within the hook's limit on 3.11 and 3.12 (near
    // 3.12's), past 3.12's C recursion limit (1,500) counted twice per
    // call, and past 3.13's (10,000 units, 2 per call through the hook:
    // 6,000 deep raised RecursionError on 3.13.0) while within the
    // program's own.
    for (limit, depth) in [
        (30_000, 20_000),
        (8_000, 7_000),
        (5_000, 4_500),
        (3_000, 2_500),
        (1_000, 900),
    ] {
        let program = format!(
            r#"
import os, sys, time
sys.setrecursionlimit({limit})
def down(n):
    return 0 if n == 0 else 1 + down(n - 1)
nested = []
for _ in range(100_000):
    nested = [nested]
def c_recursion_stopped():
    try:
        repr(nested)
    except RecursionError:
        return True
    return False
ready = sys.argv[1]
folder = os.path.dirname(ready)
open(ready, "w").close()
rounds = 0
while not os.path.exists(os.path.join(folder, "end")):
    assert down({depth}) == {depth}
    assert {limit} > 10_000 or c_recursion_stopped()
    rounds += 1
    time.sleep(0.001)
print("rounds", rounds, flush=True)
"#
        );
        for python in test_pythons("pydeep trace, a deep recursion under a raised limit") {
            if python.free_threaded || !python.at_least(3, 11) {
                continue;
            }
            let what = format!("{} (limit {limit}, depth {depth})", python.label());
            let traced = one_window(
                &python,
                &program,
                "deep",
                &what,
                "the deeply recursing program",
            );
            let downs = traced.calls_of("down");
            assert!(downs > 0, "{what}: no call of down() traced");
            eprintln!(
                "   {what}: survived a window ({downs} calls of down traced, by {})",
                traced.calls_by
            );
        }
    }
}

/// A target that already loaded a library from `/proc/self/fd/N` and
/// closed N (as a pydeep of an earlier tracer layout does): the tracer's
/// memfd gets N again, and glibc's `dlopen` of the same path would hand
/// back the library already loaded under that name (before the fix:
/// "the tracer was loaded but is not in the target's maps"). The window
/// opens, traces, and the other library is still the program's.
#[test]
fn a_target_that_loaded_a_library_from_a_closed_memfd_is_traced() {
    let program = r#"
import ctypes, ctypes.util, os, sys, time
name = ctypes.util.find_library("z") or "libz.so.1"
dirs = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib")
path = next(os.path.join(d, name) for d in dirs if os.path.exists(os.path.join(d, name)))
fd = os.memfd_create("not-pydeep", 0)
with open(path, "rb") as f:
    os.write(fd, f.read())
lib = ctypes.CDLL(f"/proc/self/fd/{fd}")
lib.zlibVersion.restype = ctypes.c_char_p
os.close(fd)
def beat():
    return lib.zlibVersion()
ready = sys.argv[1]
folder = os.path.dirname(ready)
open(ready, "w").close()
while not os.path.exists(os.path.join(folder, "end")):
    beat()
    time.sleep(0.001)
print("zlib", lib.zlibVersion().decode(), flush=True)
"#;
    for python in test_pythons("pydeep trace, a library already loaded from a closed memfd") {
        if python.free_threaded {
            continue;
        }
        let what = python.label();
        let beats = one_window(&python, program, "memfd", &what, "the program").calls_of("beat");
        assert!(beats > 0, "{what}: no call of beat() traced");
        eprintln!("   {what}: traced ({beats} calls of beat)");
    }
}

/// A thread with a small stack (`threading.stack_size(256 * 1024)`)
/// recursing near the program's default limit during a window: fine
/// untraced on 3.11+ (Python calls take no C stack), it crashed under the
/// eval-frame hook (3.12.1: 600 deep; 3.11.7: 900), so a program that set a
/// thread stack size below 1 KiB per level of its limit keeps the previous
/// mechanism (`evalframe::thread_stacks_too_small`). The program survives
/// the window and its calls are traced. 3.9/3.10 recurse in C whatever the
/// mechanism: not run there.
#[test]
fn a_thread_with_a_small_stack_recursing_near_its_limit_survives_a_window() {
    let program = r#"
import os, sys, threading, time
threading.stack_size(256 * 1024)
def down(n):
    return 0 if n == 0 else 1 + down(n - 1)
ready = sys.argv[1]
folder = os.path.dirname(ready)
def work():
    while not os.path.exists(os.path.join(folder, "end")):
        assert down(900) == 900
        time.sleep(0.001)
worker = threading.Thread(target=work)
worker.start()
open(ready, "w").close()
worker.join()
"#;
    for python in test_pythons("pydeep trace, a small thread stack") {
        if python.free_threaded || !python.at_least(3, 11) {
            continue;
        }
        let what = python.label();
        let downs = one_window(
            &python,
            program,
            "small",
            &what,
            "the program whose thread has a small stack",
        )
        .calls_of("down");
        assert!(downs > 0, "{what}: no call of down() traced");
        eprintln!(
            "   {what}: a 256 KiB thread 900 deep survived a window ({downs} calls of down traced)"
        );
    }
}

/// A program with its own PEP 523 eval-frame function (CPython's test
/// module's recorder, `_testinternalcapi.set_eval_frame_record`, where the
/// interpreter has it: 3.11+ builds with test modules). During a window
/// pydeep's counts equal the truth and the program's function still sees
/// every frame (pydeep's hook, where used, chains to it); after it, the
/// program's function is the interpreter's again and still called.
#[test]
fn a_program_with_its_own_eval_frame_function_keeps_it() {
    for python in test_pythons("pydeep trace, a program's own eval-frame function") {
        if python.free_threaded {
            continue;
        }
        let what = python.label();
        let mut fixture = Fixture::start(&python, "trace_eval_frame.py", &[]);
        let truth = fixture.wait_truth(|_, _| true);
        if let Some(why) = truth["unavailable"].as_str() {
            eprintln!("   {what}: skipped, no eval-frame function to install ({why})");
            std::fs::write(fixture.dir().join("end"), "").expect("end");
            let _ = wait_exit(&mut fixture.child, &what);
            continue;
        }
        assert_eq!(truth["own_is_default"], false, "{what}: {truth}");
        let dir: PathBuf = fixture.dir().to_path_buf();
        let recording = dir.join("own.pdr");
        let mut trace = Spawned::trace(fixture.pid(), &recording, &["--until-stopped"], &what);
        trace.wait_tracing();
        std::fs::write(dir.join("go"), "").expect("go");
        let round = wait_json(&dir.join("round1.json"), &mut fixture, &what);
        sigterm(&trace.child);
        let status = wait_exit(&mut trace.child, &what);
        assert!(status.success(), "{what}: pydeep trace ended with {status}");
        // During the window the interpreter's function is pydeep's where
        // calls go through the eval-frame hook (in front of the program's,
        // which it calls: the counts below), the program's elsewhere.
        assert_eq!(
            round["own_installed_during"].as_bool(),
            Some(python.trace_calls() != TraceCalls::EvalFrame),
            "{what}: the interpreter's eval-frame function during the window: {round}"
        );
        let expected = call_counts(&truth);
        // The program's own function saw each call during the window: the
        // truth, except a generator's (3.11+ evaluate its frame once more
        // to make the generator) and __init__ (3.13's
        // CALL_ALLOC_AND_ENTER_INIT enters it without the eval function).
        for (name, count) in &expected {
            if name == "countdown" || name == "__init__" {
                continue;
            }
            assert_eq!(
                round["recorded"][name].as_u64(),
                Some(*count),
                "{what}: the program's eval-frame function saw {name} {} times: {round}",
                round["recorded"][name]
            );
        }
        let traced = read_trace(&recording);
        assert_eq!(traced.lost, 0, "{what}: events lost at a low call rate");
        let (before, after) = (
            round["before"].as_u64().expect("before"),
            round["after"].as_u64().expect("after"),
        );
        let native = round["thread"].as_u64().expect("thread");
        let counts =
            traced.calls_per_function(native, (before, after), "call_workload.py", |name| {
                expected.contains_key(name)
            });
        assert_eq!(counts, expected, "{what}: traced call counts");
        std::fs::write(dir.join("end"), "").expect("end");
        let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
        assert_eq!(
            last["own_kept"], true,
            "{what}: the program's eval-frame function is gone after the window: {last}"
        );
        assert_eq!(
            last["fib_recorded_after"].as_u64(),
            expected.get("fib").copied(),
            "{what}: the program's eval-frame function missed calls after the window: {last}"
        );
        let status = wait_exit(&mut fixture.child, &what);
        assert!(status.success(), "{what}: the target ended with {status}");
        eprintln!(
            "   {what}: traced ({:?}) beside the program's own eval-frame function, which is kept",
            python.trace_calls()
        );
    }
}

/// The regex of the `--functions` test: `spin`, `Acc.add` and the
/// generator `evens` of trace_lines.py (`Acc.` optional: before 3.11 a code
/// object's qualified name is its plain name).
const SELECTED_FUNCTIONS: &str = r"trace_lines\.py:(Acc\.)?(spin|add|evens)$";

/// `--functions` and `--lines` against the target's own truth, on every
/// interpreter with a GIL: per window, on each of two threads, calls of
/// the selected functions equal a `sys.setprofile` counter's, line events
/// per (function, line) equal a `sys.settrace` counter's, no event of any
/// other code is recorded (with `--functions`), every event lies within
/// the thread's own clock readings around the work; `pydeep-view lines
/// --trace` shows the same per-line counts. A window whose agent is
/// SIGKILLed ends by itself: every thread's C-level `c_profilefunc` and
/// `c_tracefunc` (read by the fixture through ctypes: `sys.gettrace()`
/// cannot see a hook installed without an object) are clear again, and the
/// next window works. Afterwards the target's `sys.getprofile()` /
/// `sys.gettrace()` and C-level hooks are what they were and its own
/// profile and trace functions count what they counted before.
#[test]
fn traced_functions_and_lines_match_the_targets_own_truth() {
    for python in test_pythons("pydeep trace --functions, --lines") {
        if python.free_threaded {
            continue;
        }
        check_functions_and_lines(&python);
    }
}

fn check_functions_and_lines(python: &Python) {
    let what = python.label();
    let mut fixture = Fixture::start(python, "trace_lines.py", &[]);
    let truth = fixture.wait_truth(|_, _| true);
    let dir: PathBuf = fixture.dir().to_path_buf();
    let pid = fixture.pid();
    let to_map = |value: &Value| -> HashMap<String, u64> {
        value
            .as_object()
            .expect("a truth object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
            .collect()
    };
    let calls = to_map(&truth["calls"]);
    let lines = to_map(&truth["lines"]);
    let windows: [(&str, Vec<&str>, bool, bool); 3] = [
        (
            "functions",
            vec!["--functions", SELECTED_FUNCTIONS],
            true,
            false,
        ),
        (
            "functions+lines",
            vec!["--lines", "--functions", SELECTED_FUNCTIONS],
            true,
            true,
        ),
        ("lines", vec!["--lines"], false, true),
    ];
    for (round, (name, args, selective, with_lines)) in windows.iter().enumerate() {
        let round = round + 1;
        let output = dir.join(format!("{name}.pdr"));
        let mut trace_args = vec!["--until-stopped"];
        trace_args.extend(args.iter().copied());
        let mut trace = Spawned::trace(pid, &output, &trace_args, &what);
        trace.wait_tracing();
        std::fs::write(dir.join(format!("go{round}")), "").expect("go");
        let result = wait_json(&dir.join(format!("round{round}.json")), &mut fixture, &what);
        sigterm(&trace.child);
        let status = wait_exit(&mut trace.child, &what);
        assert!(
            status.success(),
            "{what}: {name}: pydeep trace ended with {status}"
        );
        let traced = read_trace(&output);
        assert_eq!(traced.lost, 0, "{what}: {name}: events lost");
        let ours = |frame: u64| {
            traced.names.get(&frame).filter(|(file, function)| {
                file.ends_with("trace_lines.py") && calls.contains_key(function.as_str())
            })
        };
        if *selective {
            let others: Vec<&(String, String)> = traced
                .events
                .iter()
                .filter(|e| ours(e.frame).is_none())
                .filter_map(|e| traced.names.get(&e.frame))
                .collect();
            assert!(
                others.is_empty(),
                "{what}: {name}: events of code --functions did not select: {:?}",
                &others[..others.len().min(5)]
            );
        }
        let line_kind = traced
            .events
            .iter()
            .any(|e| e.kind == TraceEventKind::TraceLine);
        assert_eq!(
            line_kind, *with_lines,
            "{what}: {name}: line events recorded: {line_kind}"
        );
        for clock in result["threads"].as_array().expect("threads") {
            let native = clock["thread"].as_u64().expect("thread");
            let (before, after) = (
                clock["before"].as_u64().expect("before"),
                clock["after"].as_u64().expect("after"),
            );
            let mut got_calls: HashMap<String, u64> = HashMap::new();
            let mut got_lines: HashMap<String, u64> = HashMap::new();
            for e in traced
                .events
                .iter()
                .filter(|e| traced.native.get(&e.thread) == Some(&native))
            {
                let Some((_, function)) = ours(e.frame) else {
                    continue;
                };
                assert!(
                    (before..=after).contains(&e.time_ns),
                    "{what}: {name}: a {function} event at {} outside the thread's work [{before}, {after}]",
                    e.time_ns
                );
                match e.kind {
                    TraceEventKind::TraceCall => {
                        *got_calls.entry(function.clone()).or_default() += 1
                    }
                    TraceEventKind::TraceLine => {
                        let line = traced.lines.get(&e.frame).copied().unwrap_or(0);
                        *got_lines.entry(format!("{function}:{line}")).or_default() += 1
                    }
                    _ => {}
                }
            }
            assert_eq!(
                got_calls, calls,
                "{what}: {name}: thread {native}'s calls of the selected functions"
            );
            if *with_lines {
                assert_eq!(
                    got_lines, lines,
                    "{what}: {name}: thread {native}'s line events of the selected functions"
                );
            }
        }
        if *with_lines && *selective {
            check_lines_view(&output, &lines, &what);
        }
        if *selective {
            // top --trace reads a selective recording with line events in
            // it: the selected functions only, with both threads' calls.
            let table = Command::new(workspace_binary("pydeep-view"))
                .args(["top", "--trace", "--limit", "0"])
                .arg(&output)
                .output()
                .expect("run pydeep-view top --trace");
            assert!(table.status.success(), "{what}: {name}: top --trace failed");
            let table = String::from_utf8_lossy(&table.stdout);
            let spin_calls = table
                .lines()
                .find(|l| l.contains(" spin (") && l.contains("trace_lines.py"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            assert_eq!(
                spin_calls,
                Some(2 * calls["spin"]),
                "{what}: {name}: top --trace's spin row:\n{table}"
            );
            assert!(
                !table.contains(" noise (") && !table.contains(" work ("),
                "{what}: {name}: top --trace shows code --functions did not select:\n{table}"
            );
        }
        eprintln!(
            "   {what}: {name}: {} events; calls{} of the selected functions equal the target's own counters on both threads",
            traced.events.len(),
            if *with_lines { " and lines" } else { "" }
        );
    }
    // The agent killed (SIGKILL) in a --lines window: the tracer's
    // watchdog sees no heartbeat and removes both hooks from every thread
    // by itself; the fixture reads its threads' c_profilefunc and
    // c_tracefunc until they are clear (at most 60 s, never timed here).
    let killed = dir.join("killed.pdr");
    let mut trace = Spawned::trace(
        pid,
        &killed,
        &[
            "--until-stopped",
            "--lines",
            "--functions",
            SELECTED_FUNCTIONS,
        ],
        &what,
    );
    trace.wait_tracing();
    trace.child.kill().expect("SIGKILL pydeep trace");
    let _ = trace.child.wait();
    std::fs::write(dir.join("gone"), "").expect("gone");
    let gone = wait_json(&dir.join("gone.json"), &mut fixture, &what);
    let all_clear = |hooks: &Value| {
        hooks
            .as_array()
            .expect("hooks")
            .iter()
            .all(|h| h == &serde_json::json!([false, false]))
    };
    assert!(
        !all_clear(&gone["at_first"]),
        "{what}: no C hook seen while the killed agent's window was open: {gone}"
    );
    assert!(
        all_clear(&gone["c_hooks"]),
        "{what}: the hooks outlived the killed agent: {gone}"
    );
    // And a window right after works.
    let after = dir.join("after-kill.pdr");
    let again = Command::new(workspace_binary("pydeep"))
        .args(["trace", &pid.to_string(), "--lines", "-d", "1s", "-o"])
        .arg(&after)
        .output()
        .expect("run pydeep trace");
    assert!(
        again.status.success(),
        "{what}: the window after a killed agent: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    eprintln!(
        "   {what}: agent SIGKILLed: every hook gone after {:.1} s; the next window works",
        gone["waited_s"].as_f64().unwrap_or(0.0)
    );

    std::fs::write(dir.join("end"), "").expect("end");
    let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
    assert_eq!(last["hooks_after"], last["hooks_before"], "{what}: {last}");
    assert_eq!(
        last["c_hooks_after"], last["c_hooks_before"],
        "{what}: C-level profile/trace functions left behind: {last}"
    );
    assert_eq!(
        last["truth_again"], true,
        "{what}: the target's own setprofile/settrace counted differently after the windows: {last}"
    );
    let status = wait_exit(&mut fixture.child, &what);
    assert!(status.success(), "{what}: the target ended with {status}");
}

/// `pydeep-view lines --trace RECORDING SOURCE`: each line of the source
/// with its exact hits; the selected functions' lines show twice the
/// truth (two threads ran work() once each).
fn check_lines_view(recording: &Path, lines: &HashMap<String, u64>, what: &str) {
    let source = pydeep_integration::program("trace_lines.py");
    let output = Command::new(workspace_binary("pydeep-view"))
        .args(["lines", "--trace"])
        .arg(recording)
        .arg("--source")
        .arg(&source)
        .output()
        .expect("run pydeep-view lines --trace");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{what}: pydeep-view lines --trace failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected: HashMap<u32, u64> = HashMap::new();
    for (key, count) in lines {
        let line: u32 = key
            .rsplit(':')
            .next()
            .and_then(|l| l.parse().ok())
            .expect("a line");
        *expected.entry(line).or_default() += 2 * count;
    }
    for row in text.lines() {
        let Some((gutter, _)) = row.split_once(" | ") else {
            continue;
        };
        let fields: Vec<&str> = gutter.split_whitespace().collect();
        let Some(number) = fields.last().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let hits = fields
            .first()
            .filter(|_| fields.len() > 1)
            .and_then(|h| h.parse::<u64>().ok())
            .unwrap_or(0);
        assert_eq!(
            hits,
            expected.get(&number).copied().unwrap_or(0),
            "{what}: lines --trace, line {number}:\n{text}"
        );
    }
}

#[test]
fn opcode_counts_match_the_targets_own_count_per_instruction() {
    for python in test_pythons("pydeep trace --opcodes") {
        if !python.free_threaded {
            check_opcodes(&python);
        }
    }
}

/// `--opcodes --functions :loop$` on `tests/programs/trace_opcodes.py`,
/// twice in a row: per instruction offset of `loop`, the counts equal the
/// fixture's own (f_trace_opcodes on 3.9-3.11, sys.monitoring INSTRUCTION
/// on 3.12+) for one `loop(0)` (the call that selects the code object) and
/// `calls` × `loop(n)`. On 3.12+ the tracer instruments the code object
/// ~10 ms after that first call, so the instructions `loop(0)` ran may or
/// may not be counted: there each count lies between the runs' and the
/// runs' plus `loop(0)`'s, and every instruction `loop(0)` did not run
/// (the loop body) is exact. After both windows every hook is as before.
fn check_opcodes(python: &Python) {
    let what = format!("{} --opcodes", python.label());
    let mut fixture = Fixture::start(python, "trace_opcodes.py", &[]);
    let ready = fixture.wait_truth(|_, _| true);
    let dir: PathBuf = fixture.dir().to_path_buf();
    let pid = fixture.pid();
    let truth = &ready["truth"];
    let per_offset = |counts: &Value| -> HashMap<u32, u64> {
        counts
            .as_object()
            .expect("counts")
            .iter()
            .map(|(k, v)| (k.parse().expect("offset"), v.as_u64().expect("count")))
            .collect()
    };
    let (warm, run) = (per_offset(&truth["warm"]), per_offset(&truth["run"]));
    let (n, calls) = (
        truth["n"].as_u64().expect("n"),
        truth["calls"].as_u64().expect("calls"),
    );
    let monitoring = ready["monitoring"].as_bool().expect("monitoring");
    for window in 1..=2 {
        let output = dir.join(format!("opcodes{window}.pdr"));
        let mut trace = Spawned::trace(
            pid,
            &output,
            &["--until-stopped", "--functions", ":loop$", "--opcodes"],
            &what,
        );
        trace.wait_tracing();
        std::fs::write(dir.join(format!("go{window}")), "").expect("go");
        let round = wait_json(
            &dir.join(format!("round{window}.json")),
            &mut fixture,
            &what,
        );
        if monitoring {
            assert_eq!(round["instrumented"], true, "{what}: never instrumented");
        }
        sigterm(&trace.child);
        let status = wait_exit(&mut trace.child, &what);
        assert!(status.success(), "{what}: pydeep trace ended with {status}");

        let (counts, lost) = read_counts(&output);
        assert_eq!(lost, 0, "{what}: window {window}: executions not counted");
        let names: Vec<&String> = counts.keys().map(|(name, _)| name).collect();
        assert!(
            names.iter().all(|name| *name == "loop"),
            "{what}: counts of code --functions did not select: {names:?}"
        );
        let counted: HashMap<u32, u64> = counts
            .iter()
            .map(|((_, offset), count)| (*offset, *count))
            .collect();
        let mut offsets: Vec<u32> = run.keys().chain(warm.keys()).copied().collect();
        offsets.sort_unstable();
        offsets.dedup();
        for offset in &offsets {
            let runs = calls * run.get(offset).copied().unwrap_or(0);
            let first = warm.get(offset).copied().unwrap_or(0);
            let got = counted.get(offset).copied().unwrap_or(0);
            if monitoring && first > 0 {
                assert!(
                    (runs..=runs + first).contains(&got),
                    "{what}: window {window}: offset {offset}: {got} not in [{runs}, {}]",
                    runs + first
                );
            } else {
                assert_eq!(
                    got,
                    runs + first,
                    "{what}: window {window}: offset {offset}: counted against the fixture's own"
                );
            }
        }
        assert!(
            counted.keys().all(|offset| offsets.contains(offset)),
            "{what}: window {window}: counts at offsets the fixture never ran: {counted:?}"
        );
        let body = counted.values().filter(|&&c| c == calls * n).count();
        assert!(
            body >= 3,
            "{what}: window {window}: no loop body counted {calls}x{n}: {counted:?}"
        );
        // pydeep-view bytecode shows them in its "executed" column.
        let listing = Command::new(workspace_binary("pydeep-view"))
            .args(["bytecode", "--function", "loop"])
            .arg(&output)
            .output()
            .expect("run pydeep-view bytecode");
        let listing = String::from_utf8_lossy(&listing.stdout);
        let shown = listing
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(&(calls * n).to_string()))
            .count();
        assert!(
            listing.contains("executed") && shown == body,
            "{what}: bytecode's executed column shows {shown} rows at {}, not {body}:\n{listing}",
            calls * n
        );
        eprintln!(
            "   {what}: window {window}: {} instructions counted equal to the fixture's ({body} in the loop body at {}x{n})",
            counted.len(),
            calls
        );
    }
    std::fs::write(dir.join("end"), "").expect("end");
    let last = wait_json(&dir.join("final.json"), &mut fixture, &what);
    assert_eq!(
        last["after"], last["before"],
        "{what}: hooks not as they were"
    );
    let status = wait_exit(&mut fixture.child, &what);
    assert!(status.success(), "{what}: the target ended with {status}");
}

/// The opcode counts of a recording by (function name, instruction
/// offset), and the executions the tracer could not count.
fn read_counts(path: &Path) -> (HashMap<(String, u32), u64>, u64) {
    let mut recording = Recording::open(path).expect("open the trace recording");
    let mut columns = Vec::new();
    let mut lost = 0;
    while let Some(event) = recording.next_event().expect("a complete recording") {
        if let Event::TraceEvents(batch) = event {
            lost += batch.counts_lost;
            assert!(
                batch
                    .count_kind
                    .iter()
                    .all(|&k| k == TraceEventKind::TraceOpcode as i32),
                "count kinds other than TRACE_OPCODE"
            );
            columns.extend(
                batch
                    .count_frame
                    .iter()
                    .copied()
                    .zip(batch.count.iter().copied()),
            );
        }
    }
    let tables = recording.tables();
    let mut counts = HashMap::new();
    for (frame, count) in columns {
        let def = tables.frames.get(&frame).expect("a defined frame");
        let name = tables
            .code_objects
            .get(&def.code)
            .map(|c| tables.string(c.name).to_owned())
            .unwrap_or_default();
        *counts.entry((name, def.instruction_offset)).or_default() += count;
    }
    (counts, lost)
}

/// A window says when CPython may have run calls past it: under the
/// eval-frame hook, on 3.13, a class made during the window by `type()`
/// whose `__init__` is a function not named `__init__` (`make`) is called
/// 500 times at one site (fixture `trace_unwatched_init.py`), which
/// CALL_ALLOC_AND_ENTER_INIT runs inline; on 3.11.0-3.11.3 the same for a
/// `__getitem__` named `pick` and BINARY_SUBSCR_GETITEM. The recording
/// counts one unwatched function and names it (qualified name, file, first
/// line: what the function's own `__code__` says), and `pydeep trace` and
/// `pydeep-view top --trace` warn with that name. Everything else (the
/// other function there, every other version or mechanism) is traced in
/// full, against the functions' own counts, and nothing is reported.
#[test]
fn calls_cpython_may_have_run_past_the_window_are_reported() {
    for python in test_pythons("pydeep trace, unwatched functions reported") {
        if python.free_threaded {
            continue;
        }
        let what = python.label();
        let mut fixture = Fixture::start(&python, "trace_unwatched_init.py", &[]);
        fixture.wait_truth(|_, _| true);
        let dir: PathBuf = fixture.dir().to_path_buf();
        let recording = dir.join("unwatched.pdr");
        let mut trace = Spawned::trace(fixture.pid(), &recording, &["--until-stopped"], &what);
        trace.wait_tracing();
        std::fs::write(dir.join("go"), "").expect("go");
        let round = wait_json(&dir.join("round.json"), &mut fixture, &what);
        sigterm(&trace.child);
        let status = wait_exit(&mut trace.child, &what);
        assert!(status.success(), "{what}: pydeep trace ended with {status}");
        let said: Vec<String> = trace.all_lines().to_vec();
        std::fs::write(dir.join("end"), "").expect("end");
        let status = wait_exit(&mut fixture.child, &what);
        assert!(status.success(), "{what}: the target ended with {status}");
        let truth = |key: &str| round[key].as_u64().expect("a count");
        assert_eq!(
            (truth("calls"), truth("picks")),
            (500, 500),
            "{what}: the fixture's own counts of make() and pick()"
        );
        let traced = read_trace(&recording);
        let window = (truth("before"), truth("after"));
        let counts =
            traced.calls_per_function(truth("thread"), window, "trace_unwatched_init.py", |n| {
                n == "make" || n == "pick"
            });
        let seen = |name: &str| counts.get(name).copied().unwrap_or(0);
        let view = Command::new(workspace_binary("pydeep-view"))
            .args(["top", "--trace", "--limit", "0"])
            .arg(&recording)
            .output()
            .expect("run pydeep-view top --trace");
        let text = String::from_utf8_lossy(&view.stdout).into_owned();
        assert!(
            view.status.success(),
            "{what}: pydeep-view top --trace: {text}"
        );
        let warned = text.lines().any(|l| l.starts_with("warning: 1 function "));
        let hook = python.trace_calls() == TraceCalls::EvalFrame;
        // The function CPython runs inline there, if any.
        let inlined = match python.version {
            (3, 13, _) if hook => Some("make"),
            (3, 11, micro) if hook && micro < 4 => Some("pick"),
            _ => None,
        };
        for name in ["make", "pick"] {
            if Some(name) != inlined {
                assert_eq!(
                    seen(name),
                    500,
                    "{what} ({:?}): traced calls of {name}()",
                    python.trace_calls()
                );
            }
        }
        assert_eq!(
            (traced.unwatched, warned),
            (u64::from(inlined.is_some()), inlined.is_some()),
            "{what} ({:?}): unwatched functions in the recording and the view's warning \
             (make() {} and pick() {} of 500 calls traced):\n{text}",
            python.trace_calls(),
            seen("make"),
            seen("pick")
        );
        // The names: the recording's, `pydeep trace`'s and the view's
        // lists are the function's own identity, and empty elsewhere.
        let identity = |name: &str| {
            let f = &round["functions"][name];
            (
                f["qualname"].as_str().expect("qualname").to_owned(),
                f["filename"].as_str().expect("filename").to_owned(),
                u32::try_from(f["first_line"].as_u64().expect("first_line")).expect("a line"),
            )
        };
        let expected: Vec<(String, String, u32)> = inlined.map(identity).into_iter().collect();
        assert_eq!(
            traced.unwatched_named,
            expected,
            "{what} ({:?}): unwatched functions named in the recording",
            python.trace_calls()
        );
        let listed = |lines: &mut dyn Iterator<Item = &str>| -> Vec<String> {
            lines
                .filter_map(|l| l.strip_prefix("  unwatched: "))
                .map(str::to_owned)
                .collect()
        };
        let expected: Vec<String> = expected
            .iter()
            .map(|(name, file, line)| format!("{name} ({file}:{line})"))
            .collect();
        assert_eq!(
            listed(&mut text.lines()),
            expected,
            "{what}: the functions pydeep-view top --trace names:\n{text}"
        );
        assert_eq!(
            listed(&mut said.iter().map(String::as_str)),
            expected,
            "{what}: the functions pydeep trace names: {said:?}"
        );
        eprintln!(
            "   {what} ({:?}): make() {} and pick() {} of 500 calls traced, {} unwatched reported: {:?}",
            python.trace_calls(),
            seen("make"),
            seen("pick"),
            traced.unwatched,
            traced.unwatched_named
        );
    }
}
