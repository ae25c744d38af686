//! However the target ends — a normal exit, an uncaught exception,
//! `os._exit`, SIGKILL, or an `exec` into a program that is not Python —
//! the recording is finalized and says how, under `pydeep record` (our
//! child: the exact wait status) and `pydeep attach` (not our child: the
//! exact status while it is a zombie its parent has not reaped yet; the
//! test is that parent), and `verify` / `info` show it. On every interpreter.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pydeep_format::proto::ProcessEventKind as Kind;
use pydeep_integration::recording::read;
use pydeep_integration::waits::{
    wait_exit as wait_bounded, wait_for_file as wait_for, wait_for_samples,
};
use pydeep_integration::{program, test_pythons, workspace_binary, Python};

/// One way to end: the program's arguments, the event the recording must
/// hold, the words `verify` must print, and `record`'s own exit code.
struct Way {
    how: &'static [&'static str],
    event: (Kind, i32),
    says: &'static str,
    record_exit: i32,
}

const WAYS: &[Way] = &[
    Way {
        how: &["exit", "0"],
        event: (Kind::ProcessExited, 0),
        says: "exited with status 0",
        record_exit: 0,
    },
    Way {
        how: &["exception"],
        event: (Kind::ProcessExited, 1),
        says: "exited with status 1",
        record_exit: 1,
    },
    Way {
        how: &["os_exit", "5"],
        event: (Kind::ProcessExited, 5),
        says: "exited with status 5",
        record_exit: 5,
    },
    Way {
        how: &["sigkill"],
        event: (Kind::ProcessKilledBySignal, 9),
        says: "killed by SIGKILL",
        record_exit: 128 + 9,
    },
];

fn pydeep(args: &[&str], file: &Path) -> Output {
    Command::new(workspace_binary("pydeep"))
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

/// The recording is complete, has samples of `work`, holds `event`, and
/// `verify` and `info` say `says`.
fn check(label: &str, output: &Path, event: (Kind, i32), says: &str) {
    let verify = pydeep(&["verify"], output);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{label}: {report}");
    assert!(report.contains(says), "{label}: verify says {report}");
    let info = pydeep(&["info"], output);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(says), "{label}: info says {info}");
    let recorded = read(output);
    assert!(
        recorded.events.contains(&event),
        "{label}: events {:?} lack {event:?}",
        recorded.events
    );
    assert!(
        recorded.samples_in("work") > 0,
        "{label}: no sample in work()"
    );
}

fn record(python: &Python, way: &Way, dir: &Path) {
    let label = format!("{} record {:?}", python.label(), way.how);
    let output = dir.join("record.pdr");
    let (ready, go) = (dir.join("ready"), dir.join("go"));
    let mut agent = Command::new(workspace_binary("pydeep"))
        .args(["record", "-q", "-r", "200", "-o"])
        .arg(&output)
        .arg("--")
        .arg(&python.path)
        .arg(program("ends_by.py"))
        .args([&ready, &go])
        .args(way.how)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ready, &mut agent, &label);
    wait_for(&output, &mut agent, &label);
    wait_for_samples(&output, &mut agent, &label);
    std::fs::write(&go, "").unwrap();
    let status = wait_bounded(&mut agent, &label);
    assert_eq!(status.code(), Some(way.record_exit), "{label}");
    check(&label, &output, way.event, way.says);
}

/// Starts `ends_by.py` ending the `way` way, attaches `pydeep attach` to it
/// writing `output`, and once samples are in the file tells the program to
/// end. Returns (target, agent).
fn attach_then_end(
    python: &Python,
    way: &Way,
    dir: &Path,
    output: &Path,
    label: &str,
) -> (std::process::Child, std::process::Child) {
    let (ready, go) = (dir.join("ready"), dir.join("go"));
    let mut target = Command::new(&python.path)
        .arg(program("ends_by.py"))
        .args([&ready, &go])
        .args(way.how)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ready, &mut target, label);
    let mut agent = Command::new(workspace_binary("pydeep"))
        .args(["attach", &target.id().to_string(), "-q", "-r", "200", "-o"])
        .arg(output)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(output, &mut agent, label);
    wait_for_samples(output, &mut agent, label);
    std::fs::write(&go, "").unwrap();
    (target, agent)
}

fn attach(python: &Python, way: &Way, dir: &Path) {
    let label = format!("{} attach {:?}", python.label(), way.how);
    let output = dir.join("attach.pdr");
    let (mut target, mut agent) = attach_then_end(python, way, dir, &output, &label);
    // The target stays a zombie (this test, its parent, reaps it only
    // after the agent is done), so its exact status is there to read.
    let status = wait_bounded(&mut agent, &label);
    assert_eq!(status.code(), Some(0), "{label}");
    check(&label, &output, way.event, way.says);
    wait_bounded(&mut target, &label);
}

#[test]
fn every_way_a_target_ends_is_recorded_by_record_and_by_attach() {
    for python in test_pythons("target endings") {
        for way in WAYS {
            record(&python, way, tempfile::tempdir().unwrap().path());
            attach(&python, way, tempfile::tempdir().unwrap().path());
        }
    }
}

#[test]
fn a_target_that_execs_into_a_non_python_program_is_recorded_as_execed() {
    for python in test_pythons("target exec") {
        // record: the exec is recorded, then the child's exit status
        // (sleep's 0) once the new program ends.
        let dir = tempfile::tempdir().unwrap();
        let way = Way {
            how: &["exec", "0.3"],
            event: (Kind::ProcessExeced, 0),
            says: "exec'd into /",
            record_exit: 0,
        };
        record(&python, &way, dir.path());
        let events = read(&dir.path().join("record.pdr")).events;
        let execed = events.iter().position(|e| e.0 == Kind::ProcessExeced);
        let exited = events.iter().position(|e| *e == (Kind::ProcessExited, 0));
        assert!(
            matches!((execed, exited), (Some(a), Some(b)) if a < b),
            "{}: events {events:?}",
            python.label()
        );

        // attach: the exec is recorded and the agent detaches from the
        // program that is no longer Python (sleep runs on).
        let dir = tempfile::tempdir().unwrap();
        let way = Way {
            how: &["exec", "30"],
            event: (Kind::ProcessExeced, 0),
            says: "exec'd into /",
            record_exit: 0,
        };
        let output = dir.path().join("attach.pdr");
        let label = format!("{} attach exec", python.label());
        let (mut target, mut agent) = attach_then_end(&python, &way, dir.path(), &output, &label);
        let status = wait_bounded(&mut agent, &label);
        target.kill().unwrap();
        target.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{label}");
        check(&label, &output, way.event, "/sleep");
        let events = read(&output).events;
        assert!(
            events.contains(&(Kind::ProcessDetached, 0)),
            "{label}: {events:?}"
        );
    }
}
