//! With `--subprocesses`, a target that forks (the fork goes on running
//! Python) and starts and SIGKILLs 50 short-lived Python children: the
//! agent neither crashes nor stops, the fork and every child are recorded
//! under their own pids with samples in their own work function, and each
//! child's end is recorded honestly (killed by SIGKILL, or "status unknown"
//! when its parent reaped it first). On every interpreter.
//!
//! No timing is guessed: the test reads the recording as it is flushed and
//! tells the program to kill a child only once that child's samples are in
//! the file (tests/programs/churn_children.py waits for that word).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pydeep_format::proto::ProcessEventKind as Kind;
use pydeep_format::{Event, Recording};
use pydeep_integration::{program, test_pythons, workspace_binary, Python};

const CHILDREN: usize = 50;

/// Process events (kind, code) by pid.
type Events = HashMap<u32, Vec<(Kind, i32)>>;

/// Pids with samples in `function`, and process events by pid, as far as
/// the recording at `path` is readable now.
fn recorded(path: &Path, function: &str) -> (HashSet<u32>, Events) {
    let mut sampled = HashSet::new();
    let mut events = Events::new();
    let Ok(mut recording) = Recording::open(path) else {
        return (sampled, events);
    };
    while let Ok(Some(event)) = recording.next_event() {
        match event {
            Event::Sample(sample) => {
                let tables = recording.tables();
                let pid = tables.threads[&sample.thread].pid;
                if sampled.contains(&pid) {
                    continue;
                }
                let hit = tables.stack_frames(sample.stack).iter().any(|frame| {
                    let code = tables.frames[frame].code;
                    tables.string(tables.code_objects[&code].name) == function
                });
                if hit {
                    sampled.insert(pid);
                }
            }
            Event::Process(process) => events
                .entry(process.pid)
                .or_default()
                .push((process.kind(), process.code)),
            _ => {}
        }
    }
    (sampled, events)
}

fn pids(dir: &Path, prefix: &str) -> HashSet<u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)?.parse().ok()
        })
        .collect()
}

/// Kills (SIGKILL) every process churn_children.py said it started, so a
/// failing test leaves nothing running.
struct KillAll<'a>(&'a Path);

impl Drop for KillAll<'_> {
    fn drop(&mut self) {
        for prefix in ["child-", "fork-", "main-"] {
            for pid in pids(self.0, prefix) {
                // SAFETY: kill(2) on pids this test's program wrote down.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

fn children(python: &Python) {
    let label = python.label();
    let dir = tempfile::tempdir().unwrap();
    let (pid_dir, control) = (dir.path().join("pids"), dir.path().join("control"));
    std::fs::create_dir(&pid_dir).unwrap();
    std::fs::create_dir(&control).unwrap();
    let _cleanup = KillAll(&pid_dir);
    let output = dir.path().join("children.pdr");
    let mut agent = Command::new(workspace_binary("pydeep"))
        .args(["record", "--subprocesses", "-r", "200", "-q", "-o"])
        .arg(&output)
        .arg("--")
        .arg(&python.path)
        .arg(program("churn_children.py"))
        .args([&pid_dir, &control])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("{label}: not done after 180 s");
        }
        let (short, _) = recorded(&output, "short_lived");
        for pid in pids(&pid_dir, "child-") {
            if short.contains(&pid) {
                let _ = std::fs::write(control.join(format!("kill-{pid}")), "");
            }
        }
        let (forked, _) = recorded(&output, "forked_child_work");
        for pid in pids(&pid_dir, "fork-") {
            if forked.contains(&pid) {
                let _ = std::fs::write(control.join(format!("stop-{pid}")), "");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "{label}: pydeep record: {status}");
    let verify = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let children = pids(&pid_dir, "child-");
    let forks = pids(&pid_dir, "fork-");
    assert_eq!((children.len(), forks.len()), (CHILDREN, 1), "{label}");
    let (short, events) = recorded(&output, "short_lived");
    let (forked, _) = recorded(&output, "forked_child_work");
    assert!(
        children.is_subset(&short),
        "{label}: children without samples"
    );
    assert!(forks.is_subset(&forked), "{label}: the fork has no samples");
    let mut killed = 0;
    for pid in &children {
        let ends = &events[pid];
        assert!(
            ends.iter().any(|e| e.0 == Kind::ProcessSpawned),
            "{label}: {pid}: {ends:?}"
        );
        let end = ends.last().unwrap();
        assert!(
            *end == (Kind::ProcessKilledBySignal, 9) || end.0 == Kind::ProcessVanished,
            "{label}: child {pid} ended as {end:?}"
        );
        killed += usize::from(end.0 == Kind::ProcessKilledBySignal);
    }
    eprintln!(
        "{label}: {} children and the fork recorded; {killed} seen killed by SIGKILL, {} already reaped (status unknown)",
        children.len(),
        children.len() - killed
    );
}

#[test]
fn a_forking_target_and_fifty_killed_children_are_all_recorded() {
    for python in test_pythons("fork and 50 short-lived children") {
        children(&python);
    }
}
