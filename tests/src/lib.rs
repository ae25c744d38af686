//! Shared support for pydeep's integration tests: finding the CPython
//! interpreters on this machine and the pydeep binaries under test.
#![deny(missing_docs)]

pub mod blocking;
pub mod json_truth;
pub mod recording;
pub mod run;
pub mod spawned;
pub mod traced;
pub mod venv;
pub mod waits;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One CPython interpreter found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// Path of the interpreter executable.
    pub path: PathBuf,
    /// (major, minor, micro) as the interpreter reports it.
    pub version: (u32, u32, u32),
    /// A free-threaded build (`Py_GIL_DISABLED`, PEP 703: no GIL).
    pub free_threaded: bool,
}

impl Python {
    /// "3.11.7 (/usr/bin/python3.11)"-style label for test output; a
    /// free-threaded build is "3.13.5t (free-threaded, ...)".
    pub fn label(&self) -> String {
        let (a, b, c) = self.version;
        if self.free_threaded {
            format!("{a}.{b}.{c}t (free-threaded, {})", self.path.display())
        } else {
            format!("{a}.{b}.{c} ({})", self.path.display())
        }
    }

    /// True if this interpreter is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    /// How `pydeep trace` records Python calls on this interpreter
    /// (without `--c-calls`, which always uses the profile function): the
    /// tracer's own choice (`calls_by` in tracer/src/lib.rs, why in
    /// notes/tracing.md, "Cost"), repeated here so the tests can say what to
    /// expect (a program's own profile function refused or not, the
    /// interpreter's eval-frame function replaced during the window).
    pub fn trace_calls(&self) -> TraceCalls {
        match self.version {
            // 3.11.0-3.11.3 too: there the tracer keeps BINARY_SUBSCR_GETITEM
            // (which ignores PEP 523 before 3.11.4) from running; 3.12: the
            // hook gives back the C recursion its activations cost
            // (tracer/src/evalframe.rs, CRecursion); 3.13: with local
            // sys.monitoring events for the `__init__`s that
            // CALL_ALLOC_AND_ENTER_INIT enters past it.
            (3, 9..=13, _) => TraceCalls::EvalFrame,
            // 3.14+: untested, sys.monitoring.
            (3, minor, _) if minor >= 14 => TraceCalls::Monitoring,
            _ => TraceCalls::Profile,
        }
    }
}

/// How a trace window records Python calls ([`Python::trace_calls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceCalls {
    /// A C profile function on every thread: a program's own profile
    /// function makes the window refuse.
    Profile,
    /// pydeep's own `sys.monitoring` tool (3.12+).
    Monitoring,
    /// PEP 523's eval-frame hook, chained to the interpreter's function.
    EvalFrame,
}

impl TraceCalls {
    /// Its name in a recording (`TraceEventBatch.calls_by`) and in
    /// `PYDEEP_TRACE_CALLS`.
    pub fn recorded_name(self) -> &'static str {
        match self {
            TraceCalls::Profile => "profile",
            TraceCalls::Monitoring => "monitoring",
            TraceCalls::EvalFrame => "eval-frame",
        }
    }
}

/// Oldest CPython minor version pydeep supports.
pub const OLDEST_SUPPORTED: (u32, u32) = (3, 9);

/// Every supported interpreter on this machine (3.9 and newer), one per
/// distinct executable, sorted by version.
///
/// `PYDEEP_TEST_PYTHONS` (paths separated by `:`) overrides discovery;
/// otherwise `~/.pyenv/versions/*/bin/python`, `/usr/bin/python3.*` and the
/// interpreters `scripts/build-pythons` builds
/// (`${PYDEEP_PYTHONS_DIR:-~/.cache/pydeep/pythons}/*/bin/python3`: a
/// free-threaded 3.13 and a distribution-flagged one) are searched;
/// `PYDEEP_TEST_FREE_THREADED=0` leaves free-threaded builds out of that
/// search, `PYDEEP_TEST_BUILT_PYTHONS=0` every interpreter
/// `scripts/build-pythons` built (scripts/test runs those on a chosen set of
/// tests instead).
pub fn discover_pythons() -> Vec<Python> {
    let overridden = std::env::var("PYDEEP_TEST_PYTHONS").is_ok_and(|list| !list.trim().is_empty());
    let candidates: Vec<PathBuf> = match std::env::var("PYDEEP_TEST_PYTHONS") {
        Ok(list) if !list.trim().is_empty() => list.split(':').map(PathBuf::from).collect(),
        _ => default_candidates(),
    };
    let mut found: Vec<Python> = Vec::new();
    for path in candidates {
        let Some((version, free_threaded)) = query_version(&path) else {
            continue;
        };
        if (version.0, version.1) < OLDEST_SUPPORTED {
            continue;
        }
        if free_threaded
            && !overridden
            && std::env::var("PYDEEP_TEST_FREE_THREADED").as_deref() == Ok("0")
        {
            continue;
        }
        let canonical = std::fs::canonicalize(&path).unwrap_or(path.clone());
        if found
            .iter()
            .any(|p| std::fs::canonicalize(&p.path).ok().as_ref() == Some(&canonical))
        {
            continue;
        }
        found.push(Python {
            path,
            version,
            free_threaded,
        });
    }
    found.sort_by(|a, b| {
        (a.version, a.free_threaded)
            .cmp(&(b.version, b.free_threaded))
            .then(a.path.cmp(&b.path))
    });
    found
}

/// The interpreters to test against, after printing them as the test matrix.
///
/// Panics if none is 3.11 or newer: the suite must exercise the modern
/// frame layouts to mean anything.
pub fn test_pythons(capability: &str) -> Vec<Python> {
    let pythons = discover_pythons();
    eprintln!("== {capability}: interpreter matrix ==");
    for p in &pythons {
        eprintln!("   {}", p.label());
    }
    assert!(
        pythons.iter().any(|p| p.at_least(3, 11)),
        "no CPython 3.11+ interpreter found (set PYDEEP_TEST_PYTHONS=path[:path...]); found: {:?}",
        pythons.iter().map(Python::label).collect::<Vec<_>>()
    );
    pythons
}

/// CPython interpreters compiled to WebAssembly (Pyodide, run by Node through
/// `tests/wasm-python/python.mjs`), installed by `scripts/setup` under
/// `target/wasm-python/3.N/python`: the only 3.14 and 3.15 this machine can
/// run. pydeep cannot attach to them, so only tests that need an
/// interpreter's own view of its bytecode (`dis`, `co_positions`) use them.
pub fn wasm_pythons() -> Vec<Python> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/wasm-python");
    let mut found: Vec<Python> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("python"))
        .filter(|path| path.exists())
        .filter_map(|path| {
            query_version(&path).map(|(version, free_threaded)| Python {
                path,
                version,
                free_threaded,
            })
        })
        .collect();
    found.sort_by_key(|python| python.version);
    found
}

/// The native interpreters of [`test_pythons`] followed by the WebAssembly
/// ones of [`wasm_pythons`] newer than every native one, for capabilities
/// that only read an interpreter's bytecode. Prints the matrix and says so
/// when `scripts/setup` has not installed the WebAssembly interpreters.
pub fn bytecode_pythons(capability: &str) -> Vec<Python> {
    let mut pythons = test_pythons(capability);
    let newest_native = pythons.iter().map(|p| (p.version.0, p.version.1)).max();
    let wasm: Vec<Python> = wasm_pythons()
        .into_iter()
        .filter(|p| Some((p.version.0, p.version.1)) > newest_native)
        .collect();
    if wasm.is_empty() {
        eprintln!(
            "[{capability}] no WebAssembly CPython 3.14/3.15 found under target/wasm-python \
             (run scripts/setup); testing native interpreters only"
        );
    } else {
        eprintln!(
            "[{capability}] also on WebAssembly CPython: {}",
            wasm.iter()
                .map(Python::label)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    pythons.extend(wasm);
    pythons
}

fn default_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let versions = Path::new(&home).join(".pyenv/versions");
        if let Ok(entries) = std::fs::read_dir(&versions) {
            for entry in entries.flatten() {
                let exe = entry.path().join("bin/python");
                if exe.exists() {
                    out.push(exe);
                }
            }
        }
    }
    let built = match std::env::var_os("PYDEEP_PYTHONS_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/pydeep/pythons")),
    };
    // PYDEEP_TEST_BUILT_PYTHONS=0: scripts/test runs the whole suite without
    // them and a chosen set of tests on them (the whole suite has not passed
    // on them yet: see notes/cpython-frames.md).
    let built = built.filter(|_| std::env::var("PYDEEP_TEST_BUILT_PYTHONS").as_deref() != Ok("0"));
    if let Some(Ok(entries)) = built.map(std::fs::read_dir) {
        for entry in entries.flatten() {
            let exe = entry.path().join("bin/python3");
            if exe.exists() {
                out.push(exe);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/bin") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_versioned = name
                .strip_prefix("python3.")
                .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()));
            if is_versioned {
                out.push(entry.path());
            }
        }
    }
    out
}

fn query_version(path: &Path) -> Option<((u32, u32, u32), bool)> {
    let output = Command::new(path)
        .args([
            "-c",
            "import sys, sysconfig; print('%d.%d.%d' % sys.version_info[:3], \
             bool(sysconfig.get_config_var('Py_GIL_DISABLED')))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let (version, flag) = text.trim().split_once(' ')?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        (parts.next()??, parts.next()??, parts.next()??),
        flag == "True",
    ))
}

/// Path of a binary built from this workspace (`pydeep`, `pydeep-view`), in
/// the same target directory as the running test.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let candidate = profile_dir.join(name);
    assert!(
        candidate.exists(),
        "{} not built; run the suite with `cargo test --workspace`",
        candidate.display()
    );
    candidate
}

/// Path of a Python program under `tests/programs/`.
pub fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("programs")
        .join(name)
}

/// A Python fixture program that signals readiness by creating the file
/// passed as its first argument; killed (and its folder removed) on drop.
pub struct Fixture {
    /// The running interpreter.
    pub child: std::process::Child,
    /// The file the program creates when it has reached its known state.
    pub ready: PathBuf,
    /// "LABEL: NAME", for messages.
    what: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts `python tests/programs/NAME READY_FILE ARGS...`.
    pub fn start(python: &Python, name: &str, args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let child = Command::new(&python.path)
            .arg(program(name))
            .arg(&ready)
            .args(args)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {name}: {e}", python.label()));
        Fixture {
            child,
            ready,
            what: format!("{}: {name}", python.label()),
            dir,
        }
    }

    /// Starts the program like [`Fixture::start`] and waits until it has
    /// written its truth (JSON, in the ready file) and `settled(pid,
    /// &truth)` holds, e.g. until the thread the truth describes sleeps at
    /// its blocking point (see [`blocking`]). Panics if the program ends
    /// first, or after 60 s rather than hang.
    pub fn start_with_truth(
        python: &Python,
        name: &str,
        args: &[&str],
        settled: impl Fn(u32, &serde_json::Value) -> bool,
    ) -> (Fixture, serde_json::Value) {
        let mut fixture = Fixture::start(python, name, args);
        let truth = fixture.wait_truth(settled);
        (fixture, truth)
    }

    /// Waits until the ready file holds the program's truth as complete
    /// JSON and `settled(pid, &truth)` holds; returns the truth. Panics if
    /// the program ends first, or after 60 s rather than hang.
    pub fn wait_truth(
        &mut self,
        settled: impl Fn(u32, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let pid = self.child.id();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{}: fixture exited early: {status}", self.what);
            }
            let truth = std::fs::read(&self.ready)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            if let Some(truth) = truth {
                if settled(pid, &truth) {
                    return truth;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: fixture never wrote its truth and blocked",
                self.what
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The fixture's own temporary folder (removed on drop), for files a
    /// test writes next to it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The program's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the ready file exists; panics after 60 s rather than hang.
    pub fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never became ready",
                self.ready.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
