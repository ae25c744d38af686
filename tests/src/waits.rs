//! Bounded waits for the reliability tests: each ends with a message after
//! 60 s instead of hanging, and fails early if the process it waits on ends.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use pydeep_format::{Event, Recording};

/// A Python program (`python -c BUSY READY`) that writes the file named by
/// its first argument, then keeps one thread busy forever.
pub const BUSY: &str =
    "import sys\nopen(sys.argv[1], 'w').close()\nwhile True:\n    sum(range(1000))\n";

/// The longest any of these waits.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Waits until `path` exists; panics if `process` ended first.
pub fn wait_for_file(path: &Path, process: &mut Child, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        if let Ok(Some(status)) = process.try_wait() {
            panic!(
                "{what}: ended ({status}) before {} appeared",
                path.display()
            );
        }
        assert!(Instant::now() < deadline, "{what}: no {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the recording at `path` holds a flushed sample (the writer
/// flushes at least once a second), so the target is known to have been
/// sampled; panics if `process` ended first.
pub fn wait_for_samples(path: &Path, process: &mut Child, what: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(mut recording) = Recording::open(path) {
            while let Ok(Some(event)) = recording.next_event() {
                if matches!(event, Event::Sample(_)) {
                    return;
                }
            }
        }
        if let Ok(Some(status)) = process.try_wait() {
            panic!("{what}: ended ({status}) before a sample was flushed");
        }
        assert!(Instant::now() < deadline, "{what}: no sample after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit; kills it and panics after 60 s.
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a finished process ended and the most memory it held.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Peak resident set size in KiB (`ru_maxrss` from wait4).
    pub max_rss_kib: u64,
    /// Wall time it ran.
    pub elapsed: Duration,
}

/// Runs `command` to its end with its output captured, measuring its peak
/// RSS through wait4's rusage; kills it and panics after 60 s, so a hang
/// fails the test instead of stalling it.
pub fn run_measured(command: &mut std::process::Command, what: &str) -> Finished {
    run_measured_within(command, what, LIMIT)
}

/// [`run_measured`] for commands meant to run long: killed and failed
/// after `limit` instead of 60 s.
// The child is reaped by libc::wait4 (for its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
pub fn run_measured_within(
    command: &mut std::process::Command,
    what: &str,
    limit: Duration,
) -> Finished {
    use std::io::Read;
    use std::process::Stdio;
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let deadline = started + limit;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: wait4 writes into the status and rusage we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break (status, usage);
        }
        assert!(done == 0, "{what}: wait4 failed");
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        max_rss_kib: usage.ru_maxrss as u64,
        elapsed: started.elapsed(),
    }
}

/// Starts `python tests/programs/NAME` with its stdout piped and waits for
/// the line "ready" it prints once running (panics on anything else).
pub fn start_until_ready(python: &crate::Python, name: &str) -> Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(&python.path)
        .arg(crate::program(name))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: cannot start {name}: {e}", python.label()));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "{}: {name}", python.label());
    child
}
