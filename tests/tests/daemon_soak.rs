//! Soak: 5 targets at 100 Hz for at least 10 minutes (`PYDEEP_LONG_TESTS=1`;
//! `PYDEEP_SOAK_SECONDS` to change the length). The daemon's resident
//! memory must stay flat after warm-up; the run prints its RSS over time,
//! the CPU of each target's thread, the rotations, and checks every file.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::{ends, tag, verifies, Daemon, Target};
use pydeep_integration::test_pythons;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn five_targets_for_ten_minutes_keep_the_daemon_memory_flat() {
    if std::env::var("PYDEEP_LONG_TESTS").as_deref() != Ok("1") {
        eprintln!("soak skipped: set PYDEEP_LONG_TESTS=1 (scripts/test does)");
        return;
    }
    let seconds: u64 = std::env::var("PYDEEP_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let pythons = test_pythons("daemon soak");
    let tag = tag("soak");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"1s\"\ncpu_budget_percent = 100\n[rotation]\nmax_age = \"1m\"\n\
         [[target]]\nname = \"soak\"\ncmdline = \"{tag}\"\nrate = 100\n"
    ));
    // Five targets over the interpreters found, newest first.
    let targets: Vec<Target> = (0..5)
        .map(|i| Target::start(&pythons[pythons.len() - 1 - i % pythons.len()], &tag, 1))
        .collect();
    for target in &targets {
        target.truth();
        let pid = target.pid();
        daemon.wait_until("every target recording", Duration::from_secs(60), |d| {
            d.target(pid).is_some_and(|t| t["state"] == "recording")
        });
    }
    let daemon_pid = daemon.child.id();
    let started = Instant::now();
    let mut series: Vec<(u64, u64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        series.push((started.elapsed().as_secs(), rss_kib(daemon_pid)));
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_secs(10));
    }
    series.push((started.elapsed().as_secs(), rss_kib(daemon_pid)));
    let status = daemon.status();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("== soak: daemon RSS (KiB) every 10 s ==");
    for (at, rss) in &series {
        eprintln!("   {at:>5} s  {rss:>8}");
    }
    eprintln!("== soak: per target ==");
    for t in status["targets"].as_array().unwrap() {
        eprintln!(
            "   pid {} python {}: {} samples, {} missed ticks, {} files, thread cpu {:.2} s = {:.2}% of a core, rate {} Hz",
            t["pid"],
            t["python_version"],
            t["samples"],
            t["missed_ticks"],
            t["files_finished"],
            t["cpu_seconds"].as_f64().unwrap(),
            100.0 * t["cpu_seconds"].as_f64().unwrap() / elapsed,
            t["rate_hz"],
        );
    }
    eprintln!(
        "   daemon cpu {:.2} s over {elapsed:.0} s ({:.2}% of a core)",
        status["daemon"]["cpu_seconds"].as_f64().unwrap(),
        100.0 * status["daemon"]["cpu_seconds"].as_f64().unwrap() / elapsed
    );
    // Flat: from the first minute on (code objects read, buffers grown),
    // the RSS grows by less than 8 MiB and 25 %.
    let baseline = series
        .iter()
        .find(|(at, _)| *at >= 60)
        .map(|&(_, rss)| rss)
        .unwrap_or(series[0].1);
    let peak_after = series
        .iter()
        .filter(|(at, _)| *at >= 60)
        .map(|&(_, rss)| rss)
        .max()
        .unwrap_or(baseline);
    let last = series.last().unwrap().1;
    eprintln!("   RSS: at start {} KiB, at 1 min {baseline} KiB, peak after {peak_after} KiB, end {last} KiB", series[0].1);
    assert!(
        peak_after <= baseline + 8 * 1024 && peak_after * 4 <= baseline * 5,
        "daemon RSS grew from {baseline} KiB to {peak_after} KiB: {series:?}"
    );
    assert_eq!(daemon.terminate().code(), Some(0));
    for target in &targets {
        let files = daemon.files_of(target.pid());
        assert!(files.len() as u64 >= seconds / 60, "{files:?}");
        let (mut samples, mut ticks) = (0, 0);
        for file in &files {
            verifies(file).unwrap();
            let ends = ends(file);
            samples += ends.footer.sample_count;
            ticks += ends.sample_weights;
        }
        // At 100 Hz over the run, allowing a loaded machine half its ticks
        // (the ticks its samples stand for: where reads take over a third
        // of a tick the schedule samples strata of a few ticks).
        assert!(
            ticks as f64 >= 0.5 * 100.0 * elapsed.min(seconds as f64),
            "pid {}: {samples} samples standing for {ticks} ticks",
            target.pid()
        );
    }
}
