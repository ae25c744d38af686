//! Ground truth for builtin objects in `pydeep objects` (issue 16 item 1):
//! subclasses of builtin containers (`Counter`, a list, tuple and set
//! subclass, a namedtuple) are read through their base's layout plus their
//! `__dict__`, and `deque`, `OrderedDict`, `defaultdict`, `frozenset`,
//! `bytearray`, `memoryview`, `range`, `slice`, `functools.partial`, bound
//! methods, builtin functions, `property`, `staticmethod`/`classmethod`,
//! `types.SimpleNamespace` and weak references natively, builtin iterators
//! (`iter`, `enumerate`, `zip`, `map`, `itertools`) and frames (running
//! and finished) sized as Python sizes them (their references are not
//! read yet); a class with a
//! metaclass is named by its own name. Each object's type, `sys.getsizeof`,
//! rendering and references are checked against what the fixture reports
//! in-process (`repr`, `gc.get_referents`, its fields) on every interpreter.

use pydeep_integration::blocking::{process_in, PAUSE};
use pydeep_integration::run::succeeds;
use pydeep_integration::{test_pythons, Fixture, Python};
use serde_json::Value;

/// The fixture, paused at its known moment, and what it says of itself.
fn start(python: &Python) -> (Fixture, Value) {
    Fixture::start_with_truth(python, "snapshot_builtins.py", &[], |pid, _| {
        process_in(pid, PAUSE)
    })
}

#[test]
fn builtin_objects_and_container_subclasses_show_their_contents_sizes_and_references() {
    for python in test_pythons("snapshot builtins") {
        let label = python.label();
        let (fixture, truth) = start(&python);
        let pid = fixture.child.id().to_string();
        let graph: Value = serde_json::from_slice(&succeeds(
            "pydeep",
            [
                "objects",
                pid.as_str(),
                "--root",
                "module:__main__:root",
                "--depth",
                "2",
                "--max-objects",
                "2000",
                "--format",
                "json",
            ],
        ))
        .expect("JSON");
        let nodes = graph["nodes"].as_array().unwrap();
        let edges = graph["edges"].as_array().unwrap();
        let mut checked = 0;
        for (name, expected) in truth["objects"].as_object().unwrap() {
            let node = nodes
                .iter()
                .find(|n| n["address"] == expected["id"])
                .unwrap_or_else(|| panic!("{label}: {name} not in the graph"));
            assert_eq!(node["type"], expected["type"], "{label}: type of {name}");
            assert_eq!(node["size"], expected["size"], "{label}: size of {name}");
            let repr = node["repr"].as_str().unwrap();
            let wanted = expected["repr"].as_str().unwrap();
            assert!(
                repr.starts_with(wanted),
                "{label}: {name} rendered {repr:?}, expected {wanted:?}"
            );
            let from = &expected["id"];
            for edge in expected["edges"].as_array().unwrap() {
                assert!(
                    edges
                        .iter()
                        .any(|e| e["from"] == *from && e["to"] == edge[0] && e["label"] == edge[1]),
                    "{label}: {name} lacks the edge {edge}; it has {:?}",
                    edges
                        .iter()
                        .filter(|e| e["from"] == *from)
                        .map(|e| (e["to"].clone(), e["label"].clone()))
                        .collect::<Vec<_>>()
                );
            }
            for referent in expected["referents"].as_array().unwrap() {
                assert!(
                    edges
                        .iter()
                        .any(|e| e["from"] == *from && e["to"] == *referent),
                    "{label}: {name} lacks an edge to its referent {referent}"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 40, "{label}: every object of the fixture checked");
    }
}

#[test]
fn dump_async_locals_shows_a_suspended_coroutines_and_generators_variables() {
    for python in test_pythons("dump --async --locals: suspended frames") {
        let label = python.label();
        let (fixture, truth) = start(&python);
        let pid = fixture.child.id().to_string();
        let dump: Value = serde_json::from_slice(&succeeds(
            "pydeep",
            [
                "dump",
                pid.as_str(),
                "--async",
                "--all",
                "--locals",
                "--json",
            ],
        ))
        .expect("JSON");
        let frames = dump["generator_locals"]
            .as_array()
            .expect("generator_locals");
        for name in ["suspended_generator", "suspended_coroutine"] {
            let expected = &truth["objects"][name];
            let frame = frames
                .iter()
                .find(|f| f["address"] == expected["id"])
                .unwrap_or_else(|| panic!("{label}: no locals of {name}: {frames:#?}"));
            // Every f_locals entry in-process, by name and id.
            let mut count = 0;
            for edge in expected["edges"].as_array().unwrap() {
                let Some(variable) = edge[1]
                    .as_str()
                    .unwrap()
                    .strip_prefix("f_locals['")
                    .and_then(|rest| rest.strip_suffix("']"))
                else {
                    continue;
                };
                let local = frame["locals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == variable)
                    .unwrap_or_else(|| panic!("{label}: {name} lacks {variable}: {frame:#}"));
                assert_eq!(
                    local["value"]["address"], edge[0],
                    "{label}: {name}.{variable}"
                );
                count += 1;
            }
            assert!(count >= 2, "{label}: {name}: {count} locals checked");
        }
        // The text names them under the coroutine.
        let text = String::from_utf8(succeeds(
            "pydeep",
            ["dump", pid.as_str(), "--async", "--all", "--locals"],
        ))
        .unwrap();
        assert!(
            text.contains("note: str = 'note 2'"),
            "{label}: the coroutine's local in the text dump:\n{text}"
        );
    }
}

#[test]
fn objects_gives_the_retained_size_python_would_free_with_the_root() {
    for python in test_pythons("objects: retained size") {
        let label = python.label();
        let (fixture, truth) = start(&python);
        let pid = fixture.child.id().to_string();
        let graph: Value = serde_json::from_slice(&succeeds(
            "pydeep",
            [
                "objects",
                pid.as_str(),
                "--root",
                "module:__main__:private_root",
                "--format",
                "json",
            ],
        ))
        .expect("JSON");
        let expected = &truth["retained"];
        let root = graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == expected["id"])
            .unwrap_or_else(|| panic!("{label}: no root in {graph:#}"));
        // The sum of sys.getsizeof of what only the root reaches (the
        // object it shares with a global left out), its instance's
        // __dict__ included, and on 3.13+ its inline values.
        assert_eq!(
            root["retained_size"], expected["retained_size"],
            "{label}: {graph:#}"
        );
        // A leaf retains itself.
        for node in graph["nodes"].as_array().unwrap() {
            if node["type"] == "str" {
                assert_eq!(node["retained_size"], node["size"], "{label}: {node}");
            }
        }

        // An instance whose attributes never got a dict: it retains its
        // size and the values array tracemalloc saw allocated beyond it
        // (3.11/3.12: kept apart; 3.13+: inline, outside sys.getsizeof).
        let attributes = &expected["attributes"];
        let address = attributes["id"].as_u64().unwrap();
        let graph: Value = serde_json::from_slice(&succeeds(
            "pydeep",
            [
                "objects",
                pid.as_str(),
                "--root",
                &format!("0x{address:x}"),
                "--format",
                "json",
            ],
        ))
        .expect("JSON");
        let node = &graph["nodes"][0];
        assert_eq!(node["size"], attributes["size"], "{label}: {node}");
        if let Some(beyond) = attributes["beyond_getsizeof"].as_u64() {
            assert!(beyond > 0, "{label}: no values array traced");
            assert_eq!(
                node["retained_size"].as_u64(),
                Some(attributes["size"].as_u64().unwrap() + beyond),
                "{label}: the instance and its values: {node}"
            );
        }
    }
}
