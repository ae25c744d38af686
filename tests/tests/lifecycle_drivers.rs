//! `pydeep attach` and the daemon run one sampling loop
//! (agent/src/recording/sampler.rs) through thin drivers, so the same lifecycle
//! scenarios record the same process events through both: an exit with a
//! status, SIGKILL, an exec into a program that is not Python, an exec
//! into Python (attached again: the daemon used to stop there), the agent
//! stopped by SIGTERM while the target runs; with a secret-looking
//! argument masked and snapshots taken on a schedule in every recording.
//! (`record` adds our child's exact status: reliability_endings.rs;
//! `--subprocesses` is `record`'s and `attach`'s only: subprocesses.rs.)
//!
//! One interpreter: what is tested is the loop, not a layout.

mod daemon_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use daemon_support::{tag, Daemon};
use pydeep_format::proto::ProcessEventKind as Kind;
use pydeep_format::{Event, Recording};
use pydeep_integration::waits::{wait_exit, wait_for_file, wait_for_samples};
use pydeep_integration::{program, test_pythons, workspace_binary, Python};

/// One scenario: the target's program and arguments, and what ends it.
struct Scenario {
    name: &'static str,
    /// `ends_by.py`'s way to end, or `None` for `exec_into_python.py`.
    ends_by: Option<&'static [&'static str]>,
    /// The agent is stopped by SIGTERM (the target left running).
    agent_stopped: bool,
    /// The events (kind, code) the recording of the target holds, in order.
    events: &'static [(Kind, i32)],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "exit 3",
        ends_by: Some(&["exit", "3"]),
        agent_stopped: false,
        events: &[(Kind::ProcessAttached, 0), (Kind::ProcessExited, 3)],
    },
    Scenario {
        name: "sigkill",
        ends_by: Some(&["sigkill"]),
        agent_stopped: false,
        events: &[(Kind::ProcessAttached, 0), (Kind::ProcessKilledBySignal, 9)],
    },
    Scenario {
        name: "exec into sleep",
        ends_by: Some(&["exec", "10"]),
        agent_stopped: false,
        events: &[
            (Kind::ProcessAttached, 0),
            (Kind::ProcessExeced, 0),
            (Kind::ProcessDetached, 0),
        ],
    },
    Scenario {
        name: "exec into python",
        ends_by: None,
        agent_stopped: false,
        events: &[
            (Kind::ProcessAttached, 0),
            (Kind::ProcessExeced, 0),
            (Kind::ProcessAttached, 0),
            (Kind::ProcessExited, 0),
        ],
    },
    Scenario {
        name: "agent stopped",
        ends_by: Some(&["exit", "0"]),
        agent_stopped: true,
        events: &[(Kind::ProcessAttached, 0), (Kind::ProcessDetached, 0)],
    },
];

const SECRET: &str = "--password=hunter2-lifecycle";

/// What a recording of one scenario held.
#[derive(Debug, Default)]
struct Held {
    events: Vec<(Kind, i32)>,
    snapshots: usize,
    samples: usize,
}

fn held(files: &[PathBuf], pid: u32, label: &str) -> Held {
    let mut held = Held::default();
    for file in files {
        let (code, report) = pydeep_integration::run::verify(file);
        assert_eq!(code, Some(0), "{label}: {report}");
        let mut recording = Recording::open(file).unwrap();
        while let Some(event) = recording.next_event().unwrap() {
            match event {
                Event::Process(event) if event.pid == pid => {
                    let argv = event.argv.join(" ");
                    assert!(!argv.contains("hunter2"), "{label}: argv {argv:?}");
                    assert!(
                        !event.detail.contains("hunter2"),
                        "{label}: detail {:?}",
                        event.detail
                    );
                    held.events.push((event.kind(), event.code));
                }
                Event::Snapshot(_) => held.snapshots += 1,
                Event::Sample(_) => held.samples += 1,
                _ => {}
            }
        }
    }
    held
}

/// Starts the scenario's target tagged with `tag`; `ready` is made once it
/// works (ends_by.py), `go` ends it.
fn start(python: &Python, scenario: &Scenario, dir: &Path, tag: &str) -> Child {
    let mut command = Command::new(&python.path);
    match scenario.ends_by {
        Some(how) => {
            command
                .arg(program("ends_by.py"))
                .args([dir.join("ready"), dir.join("go")])
                .args(how);
        }
        None => {
            // Long enough to be found and attached before the exec; the
            // marker file stands for "ready".
            std::fs::write(dir.join("ready"), "").unwrap();
            command
                .arg(program("exec_into_python.py"))
                .args(["first", "3", "2"]);
        }
    }
    command
        .arg(tag)
        .arg(SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn through_attach(python: &Python, scenario: &Scenario) -> Held {
    let label = format!("{} attach {}", python.label(), scenario.name);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("attach.pdr");
    let mut target = start(python, scenario, dir.path(), &tag("lifecycle-attach"));
    wait_for_file(&dir.path().join("ready"), &mut target, &label);
    let mut agent = Command::new(workspace_binary("pydeep"))
        .args(["attach", &target.id().to_string(), "-q", "-r", "200"])
        .args(["--snapshot-every", "300ms", "-o"])
        .arg(&output)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&output, &mut agent, &label);
    wait_for_samples(&output, &mut agent, &label);
    std::thread::sleep(Duration::from_millis(700));
    if scenario.agent_stopped {
        unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    } else {
        std::fs::write(dir.path().join("go"), "").unwrap();
    }
    // The target stays a zombie until the agent is done (this test is its
    // parent), so its exact status is there to read.
    let status = wait_exit(&mut agent, &label);
    assert!(status.code().is_some(), "{label}: {status:?}");
    std::fs::write(dir.path().join("go"), "").unwrap();
    let pid = target.id();
    let _ = target.kill();
    wait_exit(&mut target, &label);
    held(&[output], pid, &label)
}

fn through_daemon(python: &Python, scenario: &Scenario) -> Held {
    let label = format!("{} daemon {}", python.label(), scenario.name);
    let dir = tempfile::tempdir().unwrap();
    let tag = tag("lifecycle-daemon");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[[target]]\nname = \"life\"\ncmdline = \"{tag}\"\nrate = 200\nsnapshot_every = \"300ms\"\n"
    ));
    let mut target = start(python, scenario, dir.path(), &tag);
    wait_for_file(&dir.path().join("ready"), &mut target, &label);
    let pid = target.id();
    daemon.wait_until("recording", Duration::from_secs(60), |d| {
        d.target(pid)
            .is_some_and(|t| t["samples"].as_u64() > Some(10))
    });
    std::thread::sleep(Duration::from_millis(700));
    if scenario.agent_stopped {
        daemon.terminate();
    } else {
        std::fs::write(dir.path().join("go"), "").unwrap();
        daemon.wait_until("the target finished", Duration::from_secs(60), |d| {
            d.finished(pid).is_some()
        });
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    let _ = target.kill();
    wait_exit(&mut target, &label);
    let files = daemon.files_of(pid);
    assert!(!files.is_empty(), "{label}: no file");
    held(&files, pid, &label)
}

#[test]
fn attach_and_the_daemon_record_the_same_events_of_each_ending() {
    let python = test_pythons("lifecycle drivers")
        .into_iter()
        .rfind(|p| p.at_least(3, 11))
        .unwrap();
    for scenario in SCENARIOS {
        let attach = through_attach(&python, scenario);
        let daemon = through_daemon(&python, scenario);
        let label = format!("{} {}", python.label(), scenario.name);
        println!("{label}: attach {attach:?}\n{label}: daemon {daemon:?}");
        assert_eq!(attach.events, scenario.events, "{label}: attach");
        assert_eq!(daemon.events, scenario.events, "{label}: daemon");
        for (driver, held) in [("attach", &attach), ("daemon", &daemon)] {
            assert!(held.samples > 0, "{label}: {driver}: no sample");
            assert!(held.snapshots > 0, "{label}: {driver}: no snapshot");
        }
    }
}
