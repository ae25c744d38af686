//! Values and files a careless or hostile user gives: every duration goes
//! through one parser with one range (1ms to 3650d), every rate is checked
//! (0.01 Hz to 1 MHz), a bad value is a usage error (exit 2) naming the
//! range, never a panic; a reloaded daemon configuration with such a value
//! is refused and the running one kept; input files are read with a size
//! limit (`heap --since /dev/zero` fails at once).

mod daemon_support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{tag, verifies, Daemon, Target};
use pydeep_integration::{test_pythons, workspace_binary};

fn pydeep(args: &[&str]) -> Output {
    Command::new(workspace_binary("pydeep"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Exit 2, the message names the range, no panic.
fn assert_usage_error(args: &[&str], range: &str) {
    let out = pydeep(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(range), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

const HUGE: [&str; 5] = [
    "99999999999999999999s",
    "1e20s",
    "10000000000000d",
    "5000000000000h",
    "3651d",
];

#[test]
fn every_duration_option_refuses_huge_and_zero_values_with_exit_2() {
    let me = std::process::id().to_string();
    for value in HUGE.iter().chain(&["0", "0s", "-1s", "nan", "infs"]) {
        let with = |option: &str| format!("{option}={value}");
        for args in [
            vec!["attach", &me, &with("--duration")],
            vec!["attach", &me, &with("--snapshot-every")],
            vec!["attach", &me, &with("--heap-every")],
            vec!["record", &with("--duration"), "--", "true"],
            vec!["record", &with("--snapshot-every"), "--", "true"],
            vec!["record", &with("--heap-every"), "--", "true"],
            vec!["heap", &me, &with("--interval")],
            vec!["ctl", &with("--timeout"), "status"],
        ] {
            assert_usage_error(&args, "1ms to 3650d");
        }
    }
}

#[test]
fn rates_out_of_range_are_refused_with_exit_2() {
    let me = std::process::id().to_string();
    for value in ["0", "-5", "nan", "inf", "1e-300", "1e300", "2000000"] {
        let rate = format!("--rate={value}");
        assert_usage_error(&["attach", &me, &rate], "0.01 to 1000000 Hz");
        assert_usage_error(&["record", &rate, "--", "true"], "0.01 to 1000000 Hz");
    }
}

#[test]
fn a_saved_heap_that_never_ends_fails_at_once() {
    let python = &test_pythons("heap --since /dev/zero")[0];
    let fixture = pydeep_integration::Fixture::start(python, "timed_work.py", &["30"]);
    let started = Instant::now();
    let out = pydeep(&["heap", &fixture.pid().to_string(), "--since", "/dev/zero"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("larger than"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_daemon_config_with_a_huge_duration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("scan_interval", "99999999999999999999s"),
        ("[rotation]\nmax_age", "1e20s"),
        ("[retention]\nmax_age", "10000000000000d"),
    ] {
        let config = dir.path().join("daemon.toml");
        std::fs::write(
            &config,
            format!(
                "output_dir = {:?}\nsocket = {:?}\n{key} = \"{value}\"\n",
                dir.path().join("out"),
                dir.path().join("s.sock")
            ),
        )
        .unwrap();
        let out = pydeep(&["daemon", "--config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains("1ms to 3650d"), "{key}: {stderr}");
        assert!(!stderr.contains("panicked"), "{key}: {stderr}");
    }
    let config = dir.path().join("zero.toml");
    let out = pydeep(&["daemon", "--config", "/dev/zero"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("larger than"), "{stderr}");
    drop(config);
}

#[test]
fn a_reloaded_config_with_a_huge_duration_is_refused_and_the_old_one_kept() {
    let pythons = test_pythons("daemon SIGHUP with a huge duration");
    for python in [pythons.first().unwrap(), pythons.last().unwrap()] {
        let label = python.label();
        let name = tag("huge");
        let rule = format!("[[target]]\nname = \"huge\"\ncmdline = \"{name}\"\nrate = 100\n");
        let mut daemon = Daemon::start(&format!("scan_interval = \"100ms\"\n{rule}"));
        let target = Target::start(python, &name, 0);
        target.truth();
        let pid = target.pid();
        daemon.wait_until("the target recording", Duration::from_secs(60), |d| {
            d.target(pid)
                .is_some_and(|t| t["samples"].as_u64() >= Some(10))
        });
        for (number, bad) in [
            "scan_interval = \"99999999999999999999s\"\n".to_string(),
            format!("{rule}snapshot_every = \"1e20s\"\n"),
            format!("scan_interval = \"100ms\"\n[rotation]\nmax_age = \"10000000000000d\"\n{rule}"),
            format!("scan_interval = \"100ms\"\n[retention]\nmax_age = \"5000000000000h\"\n{rule}"),
        ]
        .iter()
        .enumerate()
        {
            daemon.rewrite_config(bad);
            daemon.signal(libc::SIGHUP);
            daemon.wait_until("the bad file refused", Duration::from_secs(60), |d| {
                d.log_text()
                    .matches("keeping the running configuration")
                    .count()
                    > number
            });
        }
        let log = daemon.log_text();
        assert!(log.contains("1ms to 3650d"), "{label}: {log}");
        assert!(!log.contains("panicked"), "{label}: {log}");
        let status = daemon.target(pid).expect("still recorded");
        assert_eq!(status["state"], "recording", "{label}");
        assert_eq!(status["files_finished"], 0, "{label}");
        assert_eq!(daemon.terminate().code(), Some(0), "{label}");
        let files = daemon.files_of(pid);
        assert_eq!(files.len(), 1, "{label}: {files:?}");
        verifies(&files[0]).unwrap();
        assert!(
            !daemon_support::files(&daemon.out)
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".part")),
            "{label}: a .part file was left"
        );
    }
}
