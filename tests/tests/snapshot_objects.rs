//! Ground truth for `pydeep objects`: a fixture builds a small graph with a
//! cycle and writes, in-process, each object's id, type, sys.getsizeof and
//! reference count and the references between them; the breadth-first walk
//! from `module:__main__:root` (and from `0xADDRESS`) must report the same
//! nodes and edges on every interpreter, as JSON, DOT and SVG.

use pydeep_integration::blocking::{process_in, PAUSE};
use pydeep_integration::run::succeeds;
use pydeep_integration::{test_pythons, Fixture};
use serde_json::Value;

fn objects(pid: u32, args: &[&str]) -> Vec<u8> {
    let pid = pid.to_string();
    succeeds("pydeep", ["objects", pid.as_str()].iter().chain(args))
}

#[test]
fn objects_walks_references_from_a_root_with_the_sizes_and_refcounts_python_reports() {
    for python in test_pythons("snapshot objects") {
        let label = python.label();
        let (fixture, truth) =
            Fixture::start_with_truth(&python, "snapshot_graph.py", &[], |pid, _| {
                process_in(pid, PAUSE)
            });
        let pid = fixture.child.id();
        let graph: Value = serde_json::from_slice(&objects(
            pid,
            &[
                "--root",
                "module:__main__:root",
                "--depth",
                "3",
                "--format",
                "json",
            ],
        ))
        .expect("JSON");
        let nodes = graph["nodes"].as_array().unwrap();
        let truth = &truth;
        // The viewer's schema: the depth-0 objects are `roots`.
        assert_eq!(
            graph["roots"],
            serde_json::json!([truth["objects"]["root"]["id"]]),
            "{label}"
        );
        for (name, expected) in truth["objects"].as_object().unwrap() {
            let node = nodes
                .iter()
                .find(|n| n["address"] == expected["id"])
                .unwrap_or_else(|| panic!("{label}: {name} not in the graph"));
            for field in ["type", "size", "refcount"] {
                assert_eq!(node[field], expected[field], "{label}: {field} of {name}");
            }
        }
        let edges = graph["edges"].as_array().unwrap();
        for edge in truth["edges"].as_array().unwrap() {
            assert!(
                edges
                    .iter()
                    .any(|e| e["from"] == edge[0] && e["to"] == edge[1] && e["label"] == edge[2]),
                "{label}: missing edge {edge}"
            );
        }
        // Each object appears once although the graph has a cycle.
        let mut addresses: Vec<u64> = nodes
            .iter()
            .map(|n| n["address"].as_u64().unwrap())
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), nodes.len(), "{label}: duplicate nodes");

        // An address root, capped at one object: just that object.
        let a = truth["objects"]["a"]["id"].as_u64().unwrap();
        let single: Value = serde_json::from_slice(&objects(
            pid,
            &[
                "--root",
                &format!("0x{a:x}"),
                "--max-objects",
                "1",
                "--format",
                "json",
            ],
        ))
        .unwrap();
        assert_eq!(single["nodes"].as_array().unwrap().len(), 1, "{label}");
        assert_eq!(single["nodes"][0]["type"], "Plain", "{label}");
        assert_eq!(
            single["warnings"],
            serde_json::json!(["object graph truncated at 1 objects"]),
            "{label}"
        );

        // A function's closure before its module's globals: with room for
        // five objects (the function, its closure tuple, code and globals
        // dict at depth 1), the fifth is the cell, not a global.
        let closure = &truth["closure"];
        let function = closure["function"].as_u64().unwrap();
        let small: Value = serde_json::from_slice(&objects(
            pid,
            &[
                "--root",
                &format!("0x{function:x}"),
                "--max-objects",
                "5",
                "--format",
                "json",
            ],
        ))
        .unwrap();
        let reached: Vec<&Value> = small["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &n["address"])
            .collect();
        assert!(
            reached.contains(&&closure["cell"]),
            "{label}: the closure's cell is spent on before globals: {small:#}"
        );
        assert!(
            reached.contains(&&closure["globals"]),
            "{label}: the globals dict itself is at depth 1: {small:#}"
        );
        assert_eq!(reached.len(), 5, "{label}: {small:#}");

        // DOT on stdout and SVG through Graphviz, naming the same objects.
        let dot = String::from_utf8(objects(pid, &["--root", "module:__main__:root"])).unwrap();
        assert!(dot.starts_with("digraph snapshot_0 {"), "{label}");
        assert!(dot.contains(&format!("n{a:x} -> ")), "{label}: {dot}");
        let svg_path = fixture.dir().join("graph.svg");
        objects(
            pid,
            &[
                "--root",
                "module:__main__:root",
                "-o",
                svg_path.to_str().unwrap(),
            ],
        );
        let svg = std::fs::read_to_string(&svg_path).expect("svg written");
        assert!(svg.contains("<svg"), "{label}");
        assert!(svg.contains(&format!("Plain 0x{a:x}")), "{label}");
    }
}
