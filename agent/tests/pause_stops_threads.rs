//! `Target::pause` against ground truth: threads of the target add 1 to
//! their own counter in a tight loop (tests/programs/pause_counters.py);
//! while paused no counter moves and the kernel reports every thread in
//! tracing stop, after the release every counter moves again and no thread
//! is left traced. Threads that end, and targets that die, during a pause
//! neither fail the pause nor hang it.

use std::time::{Duration, Instant};

use pydeep::process::pause::{list_tasks, stopped_thread_was_running, syscall_was_running};
use pydeep::{PauseGuard, ReadError, Target};
use pydeep_integration::{test_pythons, Fixture, Python};

/// The counters' address and length, from the fixture's truth.
struct Counters {
    address: u64,
    slots: usize,
}

impl Counters {
    fn read(&self, target: &Target) -> Vec<u64> {
        let mut bytes = vec![0u8; self.slots * 8];
        target
            .memory()
            .read(self.address, &mut bytes)
            .expect("read the counters");
        bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

fn start(python: &Python, mode: &str, count: usize) -> (Fixture, Counters) {
    let (fixture, truth) = Fixture::start_with_truth(
        python,
        "pause_counters.py",
        &[mode, &count.to_string()],
        |_, _| true,
    );
    let counters = Counters {
        address: truth["address"].as_u64().expect("address"),
        slots: truth["slots"].as_u64().expect("slots") as usize,
    };
    (fixture, counters)
}

/// The state letter of each thread of `pid` (`t`: stopped by a tracer),
/// and its tracer's pid, from /proc.
fn thread_states(pid: i32) -> Vec<(i32, u8, i32)> {
    list_tasks(pid)
        .into_iter()
        .filter_map(|tid| {
            let stat = std::fs::read(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let close = stat.iter().rposition(|&b| b == b')')?;
            let state = *stat.get(close + 2)?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
            let tracer = status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))?
                .trim()
                .parse()
                .ok()?;
            Some((tid, state, tracer))
        })
        .collect()
}

/// Checks a paused target against the kernel and its counters: every
/// thread stopped by us, the counters still across 5 ms, and each
/// thread's activity as ptrace tells it equal to /proc's answer.
fn check_paused(label: &str, target: &Target, guard: &PauseGuard, counters: &Counters) -> Vec<u64> {
    let pid = target.pid();
    let states = thread_states(pid);
    // TracerPid names the tracing thread.
    let me = unsafe { libc::gettid() };
    assert_eq!(
        guard.stopped_threads(),
        states.len(),
        "{label}: threads stopped vs threads of the process {states:?}"
    );
    for (tid, state, tracer) in &states {
        assert_eq!(
            (*state, *tracer),
            (b't', me),
            "{label}: thread {tid} not in tracing stop by us"
        );
        // The call each thread was stopped in: ptrace's registers and the
        // kernel's /proc/PID/task/TID/syscall must agree.
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
            .expect("syscall file");
        let number: i64 = syscall
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{label}: syscall file of a stopped thread: {syscall}"));
        if let Some(running) = stopped_thread_was_running(*tid) {
            assert_eq!(
                running,
                syscall_was_running(number),
                "{label}: thread {tid} in call {number}"
            );
        }
    }
    let before = counters.read(target);
    std::thread::sleep(Duration::from_millis(5));
    let after = counters.read(target);
    assert_eq!(before, after, "{label}: counters moved while paused");
    before
}

/// Waits until every counter has moved past `paused` (each thread runs
/// again); panics after 60 s rather than hang.
fn wait_all_move(label: &str, target: &Target, counters: &Counters, paused: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = counters.read(target);
        if now.iter().zip(paused).all(|(n, p)| n > p) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: counters still after release: {paused:?} -> {now:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn assert_nothing_traced(label: &str, pid: i32) {
    for (tid, state, tracer) in thread_states(pid) {
        assert!(
            state != b't' && tracer == 0,
            "{label}: thread {tid} left in state {} traced by {tracer}",
            state as char
        );
    }
}

fn stops_every_thread(python: &Python, spinners: usize) {
    let label = format!("{} with {spinners} spinning threads", python.label());
    let (fixture, counters) = start(python, "spin", spinners);
    let target = Target::attach(fixture.pid()).expect("attach");
    for _ in 0..5 {
        let guard = target.pause().expect("pause");
        let paused = check_paused(&label, &target, &guard, &counters);
        let stopped = guard.release();
        assert!(stopped > Duration::ZERO, "{label}: no pause time measured");
        assert_nothing_traced(&label, fixture.pid());
        wait_all_move(&label, &target, &counters, &paused);
    }
}

#[test]
fn a_paused_single_threaded_target_stands_still_and_runs_again_after() {
    for python in test_pythons("pause: one thread stops and resumes") {
        stops_every_thread(&python, 0);
    }
}

#[test]
fn a_paused_target_with_fifty_threads_stands_still_and_runs_again_after() {
    for python in test_pythons("pause: 51 threads stop and resume") {
        stops_every_thread(&python, 50);
    }
}

#[test]
fn threads_ending_during_pauses_are_skipped_and_nothing_is_left_stopped() {
    for python in test_pythons("pause: threads ending while it pauses") {
        let label = python.label();
        let (fixture, counters) = start(&python, "churn", 2000);
        let target = Target::attach(fixture.pid()).expect("attach");
        let mut started = 0;
        // Until at least 50 threads have started and ended while pausing.
        for round in 0.. {
            let guard = target
                .pause()
                .unwrap_or_else(|e| panic!("{label} round {round}: {e}"));
            let paused = check_paused(&label, &target, &guard, &counters);
            guard.release();
            if round == 0 {
                started = paused[0];
            } else if paused[0] >= started + 50 && round >= 20 {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_nothing_traced(&label, fixture.pid());
        let paused = counters.read(&target);
        wait_all_move(&label, &target, &counters, &paused);
    }
}

#[test]
fn a_target_killed_while_paused_is_let_go_and_its_parent_gets_its_status() {
    use std::os::unix::process::ExitStatusExt;
    for python in test_pythons("pause: target killed while paused") {
        let label = python.label();
        let (mut fixture, _counters) = start(&python, "spin", 3);
        let target = Target::attach(fixture.pid()).expect("attach");
        let guard = target.pause().expect("pause");
        fixture.child.kill().expect("kill");
        guard.release();
        // The pause took nothing meant for the parent (us, here).
        let status = fixture.child.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "{label}: {status:?}");
        match target.pause() {
            Err(ReadError::TargetExited { .. }) => {}
            Err(other) => panic!("{label}: pausing a dead target: {other}"),
            Ok(_) => panic!("{label}: paused a dead target"),
        }
    }
}

#[test]
fn a_target_ending_itself_from_a_thread_during_pauses_neither_hangs_nor_fails() {
    use std::os::unix::process::ExitStatusExt;
    for python in test_pythons("pause: target exits from a thread while pausing") {
        let label = python.label();
        let (mut fixture, _counters) = start(&python, "exit", 3);
        let target = Target::attach(fixture.pid()).expect("attach");
        std::fs::write(fixture.ready.with_extension("exit"), b"").expect("exit file");
        // Pause over and over while the process ends: each pause either
        // succeeds or says the target exited.
        let status = loop {
            match target.pause() {
                Ok(guard) => {
                    guard.release();
                }
                Err(ReadError::TargetExited { .. }) => {}
                Err(other) => panic!("{label}: {other}"),
            }
            if let Some(status) = fixture.child.try_wait().expect("try_wait") {
                break status;
            }
        };
        assert_eq!(
            status.code(),
            Some(3),
            "{label}: {status:?} {:?}",
            status.signal()
        );
    }
}
