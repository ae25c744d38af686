//! Rotation and retention: every finished file of a stream verifies, the
//! files' samples add up to what the daemon counted, they follow each
//! other in time without overlap, and retention deletes the oldest files
//! first while the byte limit holds.

mod daemon_support;

use std::path::PathBuf;
use std::time::Duration;

use daemon_support::{ends, tag, verifies, Daemon, Target};
use pydeep_integration::recording;
use pydeep_integration::test_pythons;
use serde_json::json;

#[test]
fn rotated_files_are_valid_and_their_samples_add_up_to_the_whole_on_every_interpreter() {
    let pythons = test_pythons("daemon rotation");
    let tag = tag("rotation");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[rotation]\nmax_age = \"1s\"\n\
         [[target]]\nname = \"rot\"\ncmdline = \"{tag}\"\nrate = 100\n"
    ));
    let targets: Vec<Target> = pythons.iter().map(|p| Target::start(p, &tag, 0)).collect();
    for target in &targets {
        target.truth();
        let pid = target.pid();
        daemon.wait_until(
            &format!("{}: three rotations", target.python.label()),
            Duration::from_secs(120),
            |d| {
                d.target(pid)
                    .is_some_and(|t| t["files_finished"].as_u64() >= Some(3))
            },
        );
    }
    for target in &targets {
        let label = target.python.label();
        let pid = target.pid();
        // `ctl stop` answers once the stream is finished, with its counters.
        let reply = daemon.request(&json!({"command": "stop", "pid": pid}));
        assert_eq!(reply["ok"], true, "{label}: {reply}");
        let counted = reply["stopped"]["samples"].as_u64().unwrap();
        let files = daemon.files_of(pid);
        assert!(files.len() >= 4, "{label}: {files:?}");
        assert_eq!(
            reply["stopped"]["files_finished"].as_u64(),
            Some(files.len() as u64),
            "{label}"
        );
        let mut footer_total = 0;
        let mut read_total = 0;
        let mut previous_end: Option<u64> = None;
        let mut working = false;
        for (index, file) in files.iter().enumerate() {
            verifies(file).unwrap_or_else(|e| panic!("{label}: {e}"));
            let read = recording::read(file);
            let ends = ends(file);
            assert_eq!(read.footer_samples, Some(read.samples), "{label}: {file:?}");
            footer_total += ends.footer.sample_count;
            read_total += read.samples;
            let last = index + 1 == files.len();
            // The stream's last file may be empty: the stop can come within
            // a tick of a rotation (seen on a loaded machine). Every rotated
            // file spans max_age and must hold samples.
            assert!(
                read.samples > 0 || last,
                "{label}: {file:?} is empty (file {index} of {})",
                files.len()
            );
            let reason = &ends.footer.end_reason;
            if !last {
                assert_eq!(reason, "rotated (age)", "{label}: {file:?}");
            } else {
                assert_eq!(reason, "stopped by `pydeep ctl stop`", "{label}");
            }
            // Each file starts after the previous one's last sample.
            if let (Some(end), Some(first)) = (previous_end, ends.first_sample_ns) {
                assert!(first > end, "{label}: {file:?} overlaps its predecessor");
            }
            previous_end = ends.last_sample_ns.or(previous_end);
            // The target's files may begin with its start-up (the daemon
            // records from discovery; on a loaded machine a free-threaded
            // 3.13.5t spent two whole files, 1 s each, importing), and the
            // last may hold only a few samples; between, once the work has
            // begun (it never ends), every file holds some of it.
            let in_leaf = read.samples_in("daemon_leaf");
            assert!(
                in_leaf > 0 || !working || last,
                "{label}: {file:?}: {} samples ({} torn), none in daemon_leaf: {:?}",
                read.samples,
                read.torn,
                read.stacks.iter().take(5).collect::<Vec<_>>()
            );
            working |= in_leaf > 0;
        }
        assert!(working, "{label}: no file holds daemon_leaf");
        assert_eq!(
            footer_total, counted,
            "{label}: files vs the daemon's count"
        );
        assert_eq!(
            read_total, counted,
            "{label}: samples read vs the daemon's count"
        );
    }
    assert_eq!(daemon.terminate().code(), Some(0));
}

#[test]
fn files_rotate_by_size() {
    let python = test_pythons("daemon size rotation")
        .into_iter()
        .rev()
        .find(|p| p.at_least(3, 11))
        .unwrap();
    let tag = tag("size");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[rotation]\nmax_bytes = \"4KiB\"\nmax_age = \"1h\"\n\
         [[target]]\nname = \"size\"\ncmdline = \"{tag}\"\nrate = 500\nembed_source = false\n"
    ));
    let target = Target::start(&python, &tag, 3);
    target.truth();
    let pid = target.pid();
    daemon.wait_until("three size rotations", Duration::from_secs(120), |d| {
        d.target(pid)
            .is_some_and(|t| t["files_finished"].as_u64() >= Some(3))
    });
    let reply = daemon.request(&json!({"command": "stop", "pid": pid}));
    assert_eq!(reply["ok"], true, "{reply}");
    let files = daemon.files_of(pid);
    for file in &files[..files.len() - 1] {
        verifies(file).unwrap();
        let size = std::fs::metadata(file).unwrap().len();
        assert_eq!(ends(file).footer.end_reason, "rotated (size)");
        // Rotation happens at the first chunk boundary past the limit.
        assert!(size >= 4096, "{file:?}: {size} bytes");
    }
    verifies(files.last().unwrap()).unwrap();
}

#[test]
fn retention_deletes_the_oldest_files_first() {
    let python = test_pythons("daemon retention")
        .into_iter()
        .rev()
        .find(|p| p.at_least(3, 11))
        .unwrap();
    let tag = tag("retention");
    let limit = 60_000u64;
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[rotation]\nmax_age = \"300ms\"\n\
         [retention]\nmax_total_bytes = {limit}\n\
         [[target]]\nname = \"ret\"\ncmdline = \"{tag}\"\nrate = 200\n"
    ));
    let target = Target::start(&python, &tag, 1);
    target.truth();
    let pid = target.pid();
    daemon.wait_until("three deletions", Duration::from_secs(120), |d| {
        d.status()["daemon"]["deleted_files"].as_u64() >= Some(3)
    });
    let reply = daemon.request(&json!({"command": "stop", "pid": pid}));
    assert_eq!(reply["ok"], true, "{reply}");
    let log = daemon.log_text();
    let deleted: Vec<PathBuf> = log
        .lines()
        .filter(|l| l.contains("retention: deleted"))
        .filter_map(|l| l.split("file=").nth(1))
        .map(|rest| PathBuf::from(rest.split_whitespace().next().unwrap()))
        .collect();
    assert!(deleted.len() >= 3, "{log}");
    let kept = daemon.files_of(pid);
    assert!(!kept.is_empty());
    // Names sort by start time: everything deleted is older than everything kept.
    let newest_deleted = deleted.iter().max().unwrap();
    let oldest_kept = kept.iter().min().unwrap();
    assert!(
        newest_deleted < oldest_kept,
        "deleted {newest_deleted:?} but kept the older {oldest_kept:?}"
    );
    for file in &kept {
        verifies(file).unwrap();
        assert!(!deleted.contains(file));
    }
    let total: u64 = kept
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // The last file was finished after the last sweep: at most it is over.
    let last = std::fs::metadata(kept.last().unwrap()).unwrap().len();
    assert!(
        total <= limit + last,
        "{total} bytes kept, limit {limit} (+ the last file's {last})"
    );
    assert_eq!(daemon.terminate().code(), Some(0));
}
