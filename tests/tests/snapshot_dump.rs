//! Ground truth for `pydeep dump --locals --globals --json`: a fixture
//! thread stopped inside a closure three levels deep writes, in-process,
//! id(), type, sys.getsizeof(), the reference count and repr() of each of
//! its variables, the cells of its closure, its lines and its module
//! globals; the dump of the paused process must match exactly, on every
//! interpreter found.

use pydeep_integration::blocking::{scene_thread_in, FUTEX};
use pydeep_integration::run::pydeep_json;
use pydeep_integration::{test_pythons, Fixture, Python};
use serde_json::Value;

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
/// Classes, one of them made by a metaclass of its own.
const CLASSES: &[&str] = &["klass", "model_class"];

fn check(python: &Python) {
    // The scene thread writes the truth, then sleeps in the kernel
    // (futex) at its blocking point.
    let (fixture, truth) =
        Fixture::start_with_truth(python, "snapshot_scopes.py", &[], |pid, truth| {
            scene_thread_in(pid, truth, FUTEX)
        });
    let truth = &truth;
    let label = python.label();
    let pid = fixture.pid().to_string();
    let dump = pydeep_json(["dump", &pid, "--locals", "--globals", "--json"]);
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
        } else if CLASSES.contains(&name.as_str()) {
            // repr gives <class '__main__.Model'>; pydeep names the class
            // by its own name (not its metaclass's): <class 'Model'>.
            let repr = expected["repr"].as_str().unwrap();
            let own = repr.trim_end_matches("'>").rsplit('.').next().unwrap();
            assert_eq!(value["repr"], format!("<class '{own}'>"), "{what}");
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

    check_globals_listed_once(&dump, &label);

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

/// Each module's globals are listed once in a dump: on the first frame of
/// that module (threads in order, innermost first); every later frame of
/// the module lists none and names that frame in `globals_listed_at`.
fn check_globals_listed_once(dump: &Value, label: &str) {
    let mut listed_at: std::collections::HashMap<&str, u64> = Default::default();
    let mut shared = 0;
    for thread in dump["threads"].as_array().unwrap() {
        for frame in thread["frames"].as_array().unwrap() {
            let file = frame["file"].as_str().unwrap();
            let address = frame["frame_address"].as_u64().unwrap();
            match listed_at.get(file) {
                None => {
                    assert!(
                        frame["globals"].is_array() && frame["globals_listed_at"].is_null(),
                        "{label}: the first frame of {file} lists its globals: {frame:#}"
                    );
                    listed_at.insert(file, address);
                }
                Some(&first) => {
                    assert!(
                        frame["globals"].is_null(),
                        "{label}: {file}'s globals listed again: {frame:#}"
                    );
                    assert_eq!(
                        frame["globals_listed_at"].as_u64(),
                        Some(first),
                        "{label}: {file}'s later frame names where they are"
                    );
                    shared += 1;
                }
            }
        }
    }
    assert!(shared > 0, "{label}: no module ran in two frames: {dump:#}");
}

#[test]
fn dump_reports_every_variable_of_a_closure_three_levels_deep_exactly_as_python_sees_it() {
    for python in test_pythons("snapshot dump --locals --globals") {
        check(&python);
    }
}

/// The int a one-item list renders as (`[1000123]`).
fn list_item(value: &Value, what: &str) -> i64 {
    let repr = value["repr"].as_str().unwrap_or_default();
    repr.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{what}: not a one-int list: {value:#}"))
}

/// One dump of snapshot_consistency.py's pair thread: `n` of the spinning
/// frame and the lists' items as every frame shows them must be those of
/// one moment. Returns `n`.
fn check_one_moment(dump: &Value, truth: &Value, label: &str) -> i64 {
    let pair = dump["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["native_id"] == truth["native_id"])
        .unwrap_or_else(|| panic!("{label}: no pair thread in {dump:#}"));
    let frames = pair["frames"].as_array().unwrap();
    let spin = &frames[0];
    assert_eq!(spin["name"], "spin", "{label}: innermost frame");
    let descents: Vec<&Value> = frames.iter().filter(|f| f["name"] == "descend").collect();
    assert_eq!(
        descents.len() as u64,
        truth["depth"].as_u64().unwrap(),
        "{label}: every descend frame"
    );
    let n: i64 = variable(spin, "n", false)["value"]["repr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{label}: n is an int: {spin:#}"));
    let first = &variable(spin, "first", false)["value"];
    let second = &variable(spin, "second", false)["value"];
    let (a, b) = (list_item(first, label), list_item(second, label));
    // n += 1; first[0] = n; second[0] = n: at any one instant
    // second <= first <= n and second >= n - 1.
    assert!(
        b <= a && a <= n && n - b <= 1,
        "{label}: n={n} first={a} second={b} cannot be one moment"
    );
    for (level, frame) in descents.iter().rev().enumerate() {
        let what = format!("{label}: descend frame {}", level + 1);
        assert_eq!(
            variable(frame, "level", false)["value"]["repr"],
            (level + 1).to_string(),
            "{what}"
        );
        for (name, seen) in [("first", first), ("second", second)] {
            let value = &variable(frame, name, false)["value"];
            assert_eq!(value["address"], seen["address"], "{what}: {name}");
            assert_eq!(value["repr"], seen["repr"], "{what}: {name}");
        }
    }
    n
}

#[test]
fn dump_shows_the_variables_of_every_frame_as_they_were_at_one_moment() {
    for python in test_pythons("snapshot dump --locals at one moment") {
        let label = python.label();
        let (fixture, truth) =
            Fixture::start_with_truth(&python, "snapshot_consistency.py", &["300"], |_, _| true);
        let pid = fixture.pid().to_string();
        // Dumps until the target was seen at ten different moments (it
        // runs between dumps); each must be one moment.
        let mut moments = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let dump = pydeep_json(["dump", &pid, "--locals", "--json"]);
            moments.insert(check_one_moment(&dump, &truth, &label));
            if moments.len() >= 10 {
                break;
            }
        }
        assert!(
            moments.len() >= 2,
            "{label}: the pair thread never ran between dumps: {moments:?}"
        );
    }
}
