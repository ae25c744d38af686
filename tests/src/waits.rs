//! Bounded waits for the reliability tests: each ends with a message after
//! 60 s instead of hanging, and fails early if the process it waits on ends.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use pydeep_format::{Event, Recording};

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
