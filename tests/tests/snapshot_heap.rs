//! Ground truth for `pydeep heap`: a fixture counts its GC-tracked objects
//! by type with gc.get_objects() (collector disabled, measurement leaving
//! nothing tracked behind) and blocks; pydeep's walk of the GC generation
//! lists must find exactly the same counts per type, on every interpreter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};

use pydeep_integration::{program, test_pythons, workspace_binary, Python};
use serde_json::Value;

struct Fixture {
    child: Child,
    truth: BTreeMap<String, u64>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pause(2) is 34 on x86-64 (glibc may use rt_sigsuspend, 130); aarch64
/// has only rt_sigsuspend (133).
fn paused(pid: u32) -> bool {
    let calls: &[&str] = if cfg!(target_arch = "x86_64") {
        &["34", "130"]
    } else {
        &["133"]
    };
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|text| {
        text.split_whitespace()
            .next()
            .is_some_and(|n| calls.contains(&n))
    })
}

fn start(python: &Python) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth_path: PathBuf = dir.path().join("truth.json");
    let mut child = Command::new(&python.path)
        .arg(program("snapshot_heap.py"))
        .arg(&truth_path)
        .spawn()
        .expect("start fixture");
    let pid = child.id();
    for _ in 0..6000 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{}: fixture exited early: {status}", python.label());
        }
        if truth_path.exists() && paused(pid) {
            let text = std::fs::read_to_string(&truth_path).expect("read truth");
            let truth = serde_json::from_str(&text).expect("truth is JSON");
            return Fixture {
                child,
                truth,
                _dir: dir,
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{}: fixture never blocked", python.label());
}

#[test]
fn heap_counts_every_gc_tracked_object_by_type_exactly_as_gc_get_objects_does() {
    for python in test_pythons("snapshot heap") {
        let label = python.label();
        let fixture = start(&python);
        let output = Command::new(workspace_binary("pydeep"))
            .args([
                "heap",
                &fixture.child.id().to_string(),
                "--json",
                "--top",
                "0",
            ])
            .output()
            .expect("run pydeep heap");
        assert!(
            output.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(summary["truncated"], false, "{label}");
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for entry in summary["types"].as_array().unwrap() {
            *counts
                .entry(entry["name"].as_str().unwrap().to_string())
                .or_default() += entry["count"].as_u64().unwrap();
        }
        assert_eq!(counts, fixture.truth, "{label}: counts per type");
        assert_eq!(counts["Marker"], 5000, "{label}");
        assert_eq!(
            summary["objects"].as_u64().unwrap(),
            fixture.truth.values().sum::<u64>(),
            "{label}"
        );
        let seconds = summary["seconds"].as_f64().unwrap();
        eprintln!(
            "   {label}: {} objects in {:.2} ms, {:.0} objects/s, {} reads",
            summary["objects"],
            seconds * 1e3,
            summary["objects"].as_f64().unwrap() / seconds,
            summary["read_calls"]
        );
    }
}
