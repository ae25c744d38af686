//! Ground truth for `pydeep dump --locals --globals --json`: a fixture
//! thread stopped inside a closure three levels deep writes, in-process,
//! id(), type, sys.getsizeof(), the reference count and repr() of each of
//! its variables, the cells of its closure, its lines and its module
//! globals; the dump of the paused process must match exactly, on every
//! interpreter found.

use std::path::PathBuf;
use std::process::{Child, Command};

use pydeep_integration::{program, test_pythons, workspace_binary, Python};
use serde_json::Value;

struct Fixture {
    child: Child,
    truth: Value,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the fixture and waits until its scene thread has written the
/// truth and sleeps in the kernel (futex) at its blocking point.
fn start(python: &Python) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth_path: PathBuf = dir.path().join("truth.json");
    let mut child = Command::new(&python.path)
        .arg(program("snapshot_scopes.py"))
        .arg(&truth_path)
        .spawn()
        .expect("start fixture");
    let pid = child.id();
    for _ in 0..6000 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{}: fixture exited early: {status}", python.label());
        }
        if truth_path.exists() {
            let text = std::fs::read_to_string(&truth_path).expect("read truth");
            let truth: Value = serde_json::from_str(&text).expect("truth is JSON");
            let tid = truth["thread"]["native_id"].as_u64().expect("native id");
            if sleeping_in_futex(pid, tid) {
                return Fixture {
                    child,
                    truth,
                    _dir: dir,
                };
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{}: fixture never blocked", python.label());
}

/// futex(2) is system call 202 on x86-64 and 98 on aarch64.
fn sleeping_in_futex(pid: u32, tid: u64) -> bool {
    let futex = if cfg!(target_arch = "x86_64") {
        "202"
    } else {
        "98"
    };
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .is_ok_and(|text| text.split_whitespace().next() == Some(futex))
}

fn dump(pid: u32) -> Value {
    let output = Command::new(workspace_binary("pydeep"))
        .args(["dump", &pid.to_string(), "--locals", "--globals", "--json"])
        .output()
        .expect("run pydeep dump");
    assert!(
        output.status.success(),
        "pydeep dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("dump is JSON")
}

fn frame<'a>(thread: &'a Value, qualname_end: &str) -> &'a Value {
    thread["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["qualname"].as_str().unwrap().ends_with(qualname_end))
        .unwrap_or_else(|| panic!("no frame {qualname_end} in {thread:#}"))
}

fn variable<'a>(frame: &'a Value, name: &str, cell: bool) -> &'a Value {
    frame["locals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| {
            v["name"] == name && (!cell || matches!(v["binding"].as_str(), Some("cell" | "free")))
        })
        .unwrap_or_else(|| panic!("no variable {name} (cell {cell}) in {:#}", frame["locals"]))
}

/// Objects the fixture created itself: nothing else refers to them, so
/// their reference counts are exact and stable.
const UNIQUE: &[&str] = &[
    "level1",
    "level2",
    "s_ascii",
    "s_latin1",
    "s_ucs2",
    "s_ucs4",
    "big",
    "negative",
    "medium",
    "flt",
    "cpx",
    "bys",
    "tup",
    "lst",
    "dct",
    "st",
    "fst",
    "empty_set",
    "plain",
    "child",
    "slotted",
    "slot_child",
    "cycle",
];

const INSTANCES: &[&str] = &["plain", "child", "slotted", "slot_child"];

fn check(python: &Python) {
    let fixture = start(python);
    let truth = &fixture.truth;
    let label = python.label();
    let dump = dump(fixture.child.id());
    assert!(dump["pause_seconds"].as_f64().unwrap() > 0.0, "{label}");
    let scene = dump["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "scene")
        .unwrap_or_else(|| panic!("{label}: no scene thread in {dump:#}"));
    assert_eq!(scene["native_id"], truth["thread"]["native_id"], "{label}");
    assert_eq!(scene["active"], false, "{label}: the scene thread sleeps");

    let inner = frame(scene, "inner");
    let middle = frame(scene, "middle");
    let outer = frame(scene, "outer");
    let frames = &truth["frames"];
    assert_eq!(
        inner["line"], frames["inner"]["line"],
        "{label}: inner line"
    );
    assert_eq!(
        middle["line"], frames["middle"]["line"],
        "{label}: middle line"
    );
    assert_eq!(
        outer["line"], frames["outer"]["line"],
        "{label}: outer line"
    );

    // Every variable of inner: identity, type, size, refcount, repr.
    let variables = frames["inner"]["variables"].as_object().unwrap();
    assert!(variables.len() >= 30);
    for (name, expected) in variables {
        let var = variable(inner, name, false);
        let value = &var["value"];
        let what = format!("{label}: inner variable {name}: {value:#}");
        assert_eq!(value["address"], expected["id"], "{what}");
        assert_eq!(value["type"], expected["type"], "{what}");
        assert_eq!(value["size"], expected["size"], "{what}");
        if UNIQUE.contains(&name.as_str()) {
            assert_eq!(value["refcount"], expected["refcount"], "{what}");
            assert_eq!(value["immortal"], false, "{what}");
        }
        if INSTANCES.contains(&name.as_str()) {
            let attributes: serde_json::Map<String, Value> = value["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["name"].as_str().unwrap().to_string(),
                        a["value"]["repr"].clone(),
                    )
                })
                .collect();
            assert_eq!(Value::Object(attributes), expected["attributes"], "{what}");
        } else if name != "function" {
            assert_eq!(value["repr"], expected["repr"], "{what}");
        }
        let argument = name == "r";
        assert_eq!(var["argument"], argument, "{what}");
    }
    // Unbound locals are reported as such.
    assert_eq!(variable(inner, "frame", false)["value"], Value::Null);

    // The closure, three levels deep: the same cells in every frame.
    let closure = frames["middle"]["inner_closure"].as_object().unwrap();
    for (name, cell) in closure {
        let free = variable(inner, name, true);
        assert_eq!(free["binding"], "free", "{label}: {name}");
        assert_eq!(
            free["cell"], cell["cell"],
            "{label}: cell of {name} in inner"
        );
        assert_eq!(
            free["value"]["address"], cell["contents"],
            "{label}: contents of {name}"
        );
    }
    let owner = |name: &str| {
        if name == "level1" || name == "p" {
            outer
        } else {
            middle
        }
    };
    for name in ["level1", "level2", "p", "q"] {
        let var = variable(owner(name), name, true);
        assert_eq!(var["binding"], "cell", "{label}: {name}");
        assert_eq!(var["cell"], closure[name]["cell"], "{label}: cell {name}");
    }
    let passed = variable(middle, "level1", true);
    assert_eq!(
        passed["binding"], "free",
        "{label}: level1 passes through middle"
    );
    assert_eq!(passed["cell"], closure["level1"]["cell"], "{label}");

    // Module globals, builtins left out.
    let globals = inner["globals"].as_array().unwrap();
    assert!(
        globals.iter().all(|g| g["name"] != "__builtins__"),
        "{label}"
    );
    for (name, expected) in truth["globals"].as_object().unwrap() {
        let global = globals
            .iter()
            .find(|g| g["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{label}: no global {name}"));
        assert_eq!(global["binding"], "global");
        assert_eq!(
            global["value"]["address"], expected["id"],
            "{label}: {name}"
        );
        assert_eq!(global["value"]["type"], expected["type"], "{label}: {name}");
    }
}

#[test]
fn dump_reports_every_variable_of_a_closure_three_levels_deep_exactly_as_python_sees_it() {
    for python in test_pythons("snapshot dump --locals --globals") {
        check(&python);
    }
}
