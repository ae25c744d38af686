//! `pydeep daemon` finds Python processes started after it, on every
//! interpreter, records them with the stacks the programs report
//! themselves, skips a selected process that is not Python (logged once),
//! leaves a valid file when a target is killed, and on SIGTERM finishes
//! every file and exits 0.

mod daemon_support;

use std::process::Command;
use std::time::Duration;

use daemon_support::{ends, files, tag, verifies, Daemon, Target};
use pydeep_format::proto::ProcessEventKind;
use pydeep_integration::recording;
use pydeep_integration::test_pythons;

#[test]
fn processes_started_after_the_daemon_are_found_and_recorded_on_every_interpreter() {
    let pythons = test_pythons("daemon discovery");
    let tag = tag("discovery");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[[target]]\nname = \"disc\"\ncmdline = \"{tag}\"\nrate = 100\n"
    ));

    // Selected by the rule but not Python: skipped, and said so once.
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 600; : {tag}"))
        .spawn()
        .unwrap();
    let mut targets: Vec<Target> = pythons.iter().map(|p| Target::start(p, &tag, 1)).collect();
    let truths: Vec<_> = targets.iter().map(Target::truth).collect();
    for target in &targets {
        let pid = target.pid();
        daemon.wait_until(
            &format!("{} recorded with 50 samples", target.python.label()),
            Duration::from_secs(60),
            |d| {
                d.target(pid)
                    .is_some_and(|t| t["samples"].as_u64() >= Some(50))
            },
        );
        let status = daemon.target(pid).unwrap();
        assert_eq!(status["state"], "recording");
        // The version the daemon read, flagged as the interpreter flags
        // its build (sysconfig's Py_GIL_DISABLED).
        let (a, b, c) = target.python.version;
        let flag = if target.python.free_threaded {
            " (free-threaded, no GIL)"
        } else {
            ""
        };
        assert_eq!(status["python_version"], format!("{a}.{b}.{c}{flag}"));
    }
    let shell_pid = shell.id();
    daemon.wait_until("the shell skipped", Duration::from_secs(60), |d| {
        d.log_text()
            .lines()
            .any(|l| l.contains(&format!("pid={shell_pid}")) && l.contains("skipped"))
    });

    // A target killed mid-stream: its stream ends with a valid file.
    let killed = targets.remove(0);
    let killed_pid = killed.pid();
    let killed_label = killed.python.label();
    drop(killed);
    daemon.wait_until("the killed target finished", Duration::from_secs(60), |d| {
        d.finished(killed_pid).is_some()
    });
    let status = daemon.finished(killed_pid).unwrap();
    // The daemon's end reason says how the target ended, in record's
    // words ("target killed by SIGKILL", or vanished if reaped first).
    let reason = status["end_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("target "), "{killed_label}: {status}");
    let killed_files = daemon.files_of(killed_pid);
    assert!(!killed_files.is_empty(), "{killed_label}: no file");
    for file in &killed_files {
        verifies(file).unwrap();
    }
    let last = ends(killed_files.last().unwrap());
    assert_eq!(last.footer.end_reason, reason, "{killed_label}");
    // Killed by SIGKILL if the daemon saw the zombie, status unknown if
    // the test (its parent) had already reaped it.
    assert!(
        last.process_events.iter().any(|e| e.pid == killed_pid
            && (e.kind() == ProcessEventKind::ProcessVanished
                || (e.kind() == ProcessEventKind::ProcessKilledBySignal && e.code == 9))),
        "{killed_label}: {:?}",
        last.process_events
    );

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    let log = daemon.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(&format!("pid={shell_pid}")) && l.contains("skipped"))
            .count(),
        1,
        "the shell is logged once:\n{log}"
    );
    let _ = shell.kill();
    let _ = shell.wait();

    // After SIGTERM: no file left unfinished, every one valid, and each
    // target's stacks are those the program took of itself.
    assert!(
        files(&daemon.out)
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "pdr")),
        "{:?}",
        files(&daemon.out)
    );
    for (target, truth) in targets.iter().zip(&truths[1..]) {
        let label = target.python.label();
        let files = daemon.files_of(target.pid());
        assert!(!files.is_empty(), "{label}: no file");
        let mut samples = 0;
        let mut in_truth = 0;
        for file in &files {
            verifies(file).unwrap();
            let read = recording::read(file);
            samples += read.samples;
            let truth_stack: Vec<String> = truth["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            in_truth += read
                .stacks
                .iter()
                .filter(|(names, _)| *names == truth_stack)
                .map(|(_, count)| count)
                .sum::<u64>();
        }
        let last = ends(files.last().unwrap());
        assert_eq!(
            last.footer.end_reason, "daemon stopped (SIGTERM)",
            "{label}"
        );
        assert_eq!(last.header.mode, "daemon");
        assert_eq!(last.header.pid, target.pid());
        // Two threads in daemon_leaf most of the time: the main thread's
        // exact stack (as sys._getframe saw it) is a large share.
        assert!(
            in_truth * 4 >= samples,
            "{label}: {in_truth} of {samples} samples in {:?}",
            truth["stack"]
        );
    }
}
