//! `pydeep heap PID --since FILE` and `--growth`: growth of the object
//! counts per type, like objgraph's show_growth, against the truth of a
//! program in phases (tests/programs/snapshot_recording.py: phase 2 keeps
//! exactly 250 more Growth instances than phase 1, both measured with
//! gc.get_objects() in-process), on every interpreter found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pydeep_integration::{program, test_pythons, workspace_binary, Python};
use serde_json::Value;

const GROW: u64 = 250;

/// rt_sigtimedwait(2): 128 on x86-64, 137 on aarch64.
const SIGTIMEDWAIT: &[&str] = &["128", "137"];

struct Program {
    child: Child,
    prefix: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Program {
    fn start(python: &Python) -> Program {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("truth");
        let child = Command::new(&python.path)
            .arg(program("snapshot_recording.py"))
            .arg(&prefix)
            .args(["2", &GROW.to_string()])
            .spawn()
            .expect("start program");
        Program {
            child,
            prefix,
            _dir: dir,
        }
    }

    /// Waits until phase `k`'s truth is written and the program blocks in
    /// sigwait(); returns the truth.
    fn phase(&mut self, k: u32, label: &str) -> Value {
        let path = PathBuf::from(format!("{}.{k}.json", self.prefix.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{label}: program exited: {status}");
            }
            let syscall = std::fs::read_to_string(format!("/proc/{}/syscall", self.child.id()))
                .unwrap_or_default();
            let blocked = SIGTIMEDWAIT.contains(&syscall.split_whitespace().next().unwrap_or(""));
            if blocked {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    return serde_json::from_str(&text).expect("truth is JSON");
                }
            }
            assert!(Instant::now() < deadline, "{label}: phase {k} never came");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn next_phase(&self) {
        let status = Command::new("kill")
            .args(["-USR1", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

fn heap(pid: u32, args: &[&str], label: &str) -> Vec<Value> {
    let output = Command::new(workspace_binary("pydeep"))
        .args(["heap", &pid.to_string(), "--json", "--top", "0"])
        .args(args)
        .output()
        .expect("run pydeep heap");
    assert!(
        output.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn counts(value: &Value) -> BTreeMap<String, u64> {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn by_name(types: &Value, field: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for t in types.as_array().unwrap() {
        *out.entry(t["name"].as_str().unwrap().to_string())
            .or_default() += t[field].as_u64().unwrap();
    }
    out
}

fn save(dir: &Path, summary: &Value) -> PathBuf {
    let path = dir.join("before.json");
    std::fs::write(&path, serde_json::to_string(summary).unwrap()).unwrap();
    path
}

#[test]
fn heap_since_a_saved_count_shows_exactly_the_types_that_grew() {
    for python in test_pythons("heap --since / --growth") {
        let label = python.label();
        let mut program = Program::start(&python);
        let pid = program.child.id();
        let first = program.phase(1, &label);
        let before = heap(pid, &[], &label);
        assert_eq!(
            by_name(&before[0]["types"], "count"),
            counts(&first["counts"]),
            "{label}: phase 1 counts"
        );

        // The program is still: counts taken 50 ms apart show no growth.
        let still = heap(
            pid,
            &["--growth", "--interval", "50ms", "--count", "3"],
            &label,
        );
        assert_eq!(still.len(), 2, "{label}: one growth per step");
        for step in &still {
            assert_eq!(step["types"], Value::Array(vec![]), "{label}: {step}");
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let saved = save(dir.path(), &before[0]);
        program.next_phase();
        let second = program.phase(2, &label);
        let grown = heap(pid, &["--since", saved.to_str().unwrap()], &label);
        assert_eq!(grown.len(), 1, "{label}");
        let (was, now) = (counts(&first["counts"]), counts(&second["counts"]));
        let expected: BTreeMap<String, u64> = now
            .iter()
            .filter_map(|(name, &n)| {
                let w = was.get(name).copied().unwrap_or(0);
                (n > w).then(|| (name.clone(), n - w))
            })
            .collect();
        assert_eq!(by_name(&grown[0]["types"], "growth"), expected, "{label}");
        assert_eq!(expected["Growth"], GROW, "{label}");
        eprintln!("   {label}: growth {expected:?}");
    }
}
