//! SIGHUP reloads the configuration without losing data (the open file
//! continues, the new rate is recorded, new rules select new processes, a
//! broken file is refused); the CPU budget lowers rates and records the
//! drop; SIGTERM finishes every file and exits 0.

mod daemon_support;

use std::time::Duration;

use daemon_support::{ends, tag, verifies, Daemon, Target};
use pydeep_format::proto::ProcessEventKind;
use pydeep_integration::test_pythons;

#[test]
fn sighup_reloads_rules_and_rates_without_losing_data() {
    let pythons = test_pythons("daemon SIGHUP");
    // The oldest and the newest interpreter found.
    for python in [pythons.first().unwrap(), pythons.last().unwrap()] {
        let label = python.label();
        let (first_tag, second_tag) = (tag("hup-a"), tag("hup-b"));
        let rule = |name: &str, tag: &str, rate: u32| {
            format!("[[target]]\nname = \"{name}\"\ncmdline = \"{tag}\"\nrate = {rate}\n")
        };
        let mut daemon = Daemon::start(&format!(
            "scan_interval = \"100ms\"\n{}",
            rule("a", &first_tag, 50)
        ));
        let first = Target::start(python, &first_tag, 0);
        let second = Target::start(python, &second_tag, 0);
        first.truth();
        second.truth();
        let (a, b) = (first.pid(), second.pid());
        daemon.wait_until("the first target recording", Duration::from_secs(60), |d| {
            d.target(a)
                .is_some_and(|t| t["samples"].as_u64() >= Some(20))
        });
        assert!(
            daemon.target(b).is_none(),
            "{label}: unselected target recorded"
        );
        let before = daemon.target(a).unwrap();

        daemon.rewrite_config(&format!(
            "scan_interval = \"100ms\"\n{}{}",
            rule("a", &first_tag, 200),
            rule("b", &second_tag, 100)
        ));
        daemon.signal(libc::SIGHUP);
        daemon.wait_until(
            "the new rate and the new rule",
            Duration::from_secs(60),
            |d| {
                d.target(a).is_some_and(|t| t["rate_hz"] == 200.0)
                    && d.target(b).is_some_and(|t| t["state"] == "recording")
            },
        );
        let after = daemon.target(a).unwrap();
        assert_eq!(after["current_file"], before["current_file"], "{label}");
        assert_eq!(after["files_finished"], 0, "{label}");

        // A broken file is refused; the running configuration stays.
        daemon.rewrite_config("scan_interval = [");
        daemon.signal(libc::SIGHUP);
        daemon.wait_until("the broken file refused", Duration::from_secs(60), |d| {
            d.log_text().contains("keeping the running configuration")
        });
        assert!(daemon.target(a).is_some() && daemon.target(b).is_some());
        let samples_seen = daemon.target(a).unwrap()["samples"].as_u64().unwrap();

        assert_eq!(daemon.terminate().code(), Some(0), "{label}");
        let files = daemon.files_of(a);
        assert_eq!(files.len(), 1, "{label}: {files:?}");
        verifies(&files[0]).unwrap();
        let file = ends(&files[0]);
        assert_eq!(file.footer.end_reason, "daemon stopped (SIGTERM)");
        assert!(file.footer.sample_count >= samples_seen, "{label}");
        let change = file
            .process_events
            .iter()
            .find(|e| e.kind() == ProcessEventKind::ProcessRateChanged)
            .unwrap_or_else(|| panic!("{label}: no rate change recorded"));
        assert_eq!(change.code, 200_000, "{label}: {change:?}");
        assert!(change.detail.starts_with("configuration"), "{change:?}");
        // Samples on both sides of the change: nothing was lost to the reload.
        assert!(file.first_sample_ns.unwrap() < change.time_ns);
        assert!(file.last_sample_ns.unwrap() > change.time_ns);
        for file in daemon.files_of(b) {
            verifies(&file).unwrap();
        }
    }
}

#[test]
fn over_its_cpu_budget_the_daemon_lowers_rates_and_records_the_drop() {
    let python = test_pythons("daemon CPU budget")
        .into_iter()
        .rev()
        .find(|p| p.at_least(3, 11))
        .unwrap();
    let tag = tag("budget");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\ncpu_budget_percent = 0.5\n\
         [[target]]\nname = \"budget\"\ncmdline = \"{tag}\"\nrate = 2000\n"
    ));
    let target = Target::start(&python, &tag, 3);
    target.truth();
    let pid = target.pid();
    daemon.wait_until("a rate cut", Duration::from_secs(60), |d| {
        d.target(pid)
            .is_some_and(|t| t["rate_hz"].as_f64().is_some_and(|r| r < 2000.0))
    });
    let status = daemon.status();
    assert!(status["daemon"]["rate_factor"].as_f64().unwrap() < 1.0);
    assert!(status["daemon"]["budget_cuts"].as_u64() >= Some(1));
    assert_eq!(daemon.terminate().code(), Some(0));
    let files = daemon.files_of(pid);
    let mut drops = Vec::new();
    for file in &files {
        verifies(file).unwrap();
        drops.extend(
            ends(file)
                .process_events
                .into_iter()
                .filter(|e| e.kind() == ProcessEventKind::ProcessRateChanged),
        );
    }
    let drop = drops.first().expect("a recorded rate change");
    assert!(drop.detail.starts_with("cpu budget"), "{drop:?}");
    assert!(drop.code < 2_000_000, "{drop:?}");
}
