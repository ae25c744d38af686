//! A target in another mount namespace, as in a container: its interpreter,
//! its libpython and its program live at paths that exist only inside its
//! namespace (`unshare -m`, a private tmpfs over `/tmp`, the interpreter's
//! prefix bound to `/tmp/py` there and hidden at its own path). pydeep must
//! find everything through `/proc/PID/root` and `/proc/PID/map_files`:
//!
//! - `pydeep trace` injects its tracer and counts exactly the calls the
//!   program counted itself, under the file name the program sees;
//! - `pydeep attach` samples it and embeds the program's source, read from
//!   the namespace (the agent's own `/tmp` has no such file);
//! - the program runs on and exits 0 by itself.
//!
//! Needs the right to create a mount namespace (root, as CI runs); without
//! it the test says so and checks nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, TraceClock};
use pydeep_integration::spawned::Spawned;
use pydeep_integration::waits::{wait_exit, wait_for_file};
use pydeep_integration::{program, test_pythons, workspace_binary, Python};
use serde_json::Value;

/// The program's file as its own namespace sees it.
const APP: &str = "/tmp/app/app.py";

/// Sets up the namespace and runs the interpreter in it. `$1`: the
/// program to copy in; `$2`: the interpreter's prefix (hidden, bound to
/// /tmp/py), or empty to bind only `$3`, the executable (a system
/// interpreter whose prefix is `/usr`); `$4`: the executable's path under
/// the prefix; `$5`: the control folder.
const CONTAINER: &str = r#"set -e
mount -t tmpfs pydeep-container /tmp
mkdir -p /tmp/app /tmp/py/bin
cp "$1" /tmp/app/app.py
if [ -n "$2" ]; then
  mount --bind "$2" /tmp/py
  mount -t tmpfs pydeep-hidden "$2"
  exec env LD_LIBRARY_PATH=/tmp/py/lib /tmp/py/"$4" /tmp/app/app.py "$5"
fi
touch /tmp/py/bin/python
mount --bind "$3" /tmp/py/bin/python
exec env PYTHONHOME=/usr /tmp/py/bin/python /tmp/app/app.py "$5"
"#;

/// True if this process may create a mount namespace.
fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The interpreter's `sys.prefix`.
fn prefix_of(python: &Python) -> PathBuf {
    let out = Command::new(&python.path)
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .expect("run the interpreter");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The program, running in its own mount namespace.
struct Contained {
    child: Child,
    control: tempfile::TempDir,
    what: String,
}

impl Contained {
    fn start(python: &Python) -> Contained {
        // Outside /tmp: the namespace hides the host's /tmp.
        let control = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let prefix = prefix_of(python);
        let exe = std::fs::canonicalize(&python.path).expect("interpreter path");
        let (hidden, under) = match exe.strip_prefix(&prefix) {
            Ok(under) if prefix != Path::new("/usr") => (prefix.clone(), under.to_path_buf()),
            _ => (PathBuf::new(), PathBuf::new()),
        };
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                CONTAINER,
                "sh",
            ])
            .arg(program("container_app.py"))
            .arg(&hidden)
            .arg(&exe)
            .arg(&under)
            .arg(control.path())
            .spawn()
            .expect("start unshare");
        Contained {
            child,
            control,
            what: python.label(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.control.path().join(name)
    }

    fn wait_json(&mut self, name: &str) -> Value {
        let path = self.file(name);
        wait_for_file(&path, &mut self.child, &self.what);
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON")
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls of each (file, function) in a trace recording, and the times of
/// the calls of `leaf`.
fn traced_calls(path: &Path) -> (HashMap<(String, String), u64>, Vec<u64>, u64) {
    let mut recording = Recording::open(path).expect("open the trace");
    let mut clock = TraceClock::new(recording.header().start_clock_ns);
    let mut events = Vec::new();
    let mut lost = 0;
    while let Some(event) = recording.next_event().expect("a complete recording") {
        if let Event::TraceEvents(batch) = event {
            lost += batch.lost;
            events.extend(clock.decode(&batch));
        }
    }
    let tables = recording.tables();
    let mut counts = HashMap::new();
    let mut leaf_times = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.kind == TraceEventKind::TraceCall)
    {
        let Some(code) = tables
            .frames
            .get(&e.frame)
            .and_then(|f| tables.code_objects.get(&f.code))
        else {
            continue;
        };
        let key = (
            tables.string(code.filename).to_owned(),
            tables.string(code.name).to_owned(),
        );
        if key.1 == "leaf" {
            leaf_times.push(e.time_ns);
        }
        *counts.entry(key).or_default() += 1;
    }
    (counts, leaf_times, lost)
}

fn check(python: &Python) {
    let mut app = Contained::start(python);
    let what = app.what.clone();
    let seen = app.wait_json("ready");
    assert_eq!(seen["file"], APP, "{what}: the program's own path");
    assert!(
        seen["prefix"]
            .as_str()
            .is_some_and(|p| p.starts_with("/tmp/py") || p == "/usr"),
        "{what}: the interpreter runs from the namespace's paths: {seen}"
    );
    assert!(
        !Path::new(APP).exists(),
        "{what}: {APP} exists outside the namespace too: the test would prove nothing"
    );
    // The interpreter (unshare exec'd sh, which exec'd it) has unshare's pid.
    let pid = app.child.id();

    // Tracing: every call of leaf(), under the namespace's file name.
    let trace = app.file("trace.pdr");
    let mut tracer = Spawned::trace(pid as i32, &trace, &["--until-stopped"], &what);
    tracer.wait_tracing();
    std::fs::write(app.file("go"), "").expect("go");
    let done = app.wait_json("done.json");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(tracer.child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut tracer.child, &what);
    assert!(status.success(), "{what}: pydeep trace ended with {status}");
    let (counts, leaf_times, lost) = traced_calls(&trace);
    assert_eq!(lost, 0, "{what}: events lost");
    let leaf = counts
        .get(&(APP.to_owned(), "leaf".to_owned()))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        Some(leaf),
        done["calls"].as_u64(),
        "{what}: traced calls of leaf() against the program's own count; all calls: {counts:?}"
    );
    let (before, after) = (
        done["before"].as_u64().expect("before"),
        done["after"].as_u64().expect("after"),
    );
    assert!(
        leaf_times.iter().all(|t| (before..=after).contains(t)),
        "{what}: leaf() calls traced outside the program's clock readings around them"
    );

    // Sampling: the program spins in spin() now; its source comes from the
    // namespace.
    let samples = app.file("samples.pdr");
    let status = Command::new(workspace_binary("pydeep"))
        .args(["attach", &pid.to_string(), "-d", "1s", "-o"])
        .arg(&samples)
        .status()
        .expect("run pydeep attach");
    assert!(
        status.success(),
        "{what}: pydeep attach ended with {status}"
    );
    let mut recording = Recording::open(&samples).expect("open the samples");
    let mut in_spin = 0;
    let mut total = 0;
    while let Some(event) = recording.next_event().expect("a complete recording") {
        if let Event::Sample(sample) = event {
            total += 1;
            let names =
                pydeep_integration::recording::stack_names(recording.tables(), sample.stack);
            if names.iter().any(|n| n == "spin") {
                in_spin += 1;
            }
        }
    }
    assert!(
        total > 0 && in_spin * 2 >= total,
        "{what}: {in_spin} of {total} samples in spin()"
    );
    let tables = recording.tables();
    let spin = tables
        .code_objects
        .values()
        .find(|c| tables.string(c.name) == "spin" && tables.string(c.filename) == APP)
        .unwrap_or_else(|| panic!("{what}: no code object spin() of {APP}"));
    let source = tables
        .source_text(spin.source_file)
        .unwrap_or_else(|| panic!("{what}: no source embedded for spin()"));
    assert!(
        source.contains("def spin():") && source.contains("total += twig(i)"),
        "{what}: spin()'s embedded source: {source:?}"
    );

    std::fs::write(app.file("end"), "").expect("end");
    let status = wait_exit(&mut app.child, &what);
    assert!(status.success(), "{what}: the program ended with {status}");
    eprintln!(
        "   {what}: in its own mount namespace: {leaf} calls traced as counted, {in_spin} of {total} samples in spin(), source from the namespace"
    );
}

#[test]
fn a_target_in_its_own_mount_namespace_is_traced_sampled_and_its_source_read() {
    if !can_unshare() {
        eprintln!("SKIPPED: no right to create a mount namespace here (unshare -m failed; CI runs as root)");
        return;
    }
    for python in test_pythons("a target in another mount namespace") {
        if python.free_threaded {
            eprintln!(
                "   {}: skipped (pydeep trace refuses free-threaded builds)",
                python.label()
            );
            continue;
        }
        check(&python);
    }
}
