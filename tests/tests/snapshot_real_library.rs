//! Issue 16 on a real library: a pydantic model (a class whose metaclass
//! is `ModelMetaclass`, instances with a `__dict__`) beside a `Counter`, an
//! `OrderedDict` cache and a `deque`, read by `pydeep objects` and checked
//! against the program's own `id`, `sys.getsizeof`, `vars()` and `repr`.
//! pydantic is pip-installed into a venv per interpreter (kept in cargo's
//! target tmpdir); where it does not install (no network, no wheel for the
//! version) the interpreter is skipped with a message saying why.

use pydeep_integration::blocking::{process_in, PAUSE};
use pydeep_integration::run::succeeds;
use pydeep_integration::venv::venv_with;
use pydeep_integration::{test_pythons, Fixture};
use serde_json::Value;

#[test]
fn a_pydantic_model_and_the_containers_beside_it_read_as_python_sees_them() {
    for python in test_pythons("real library: pydantic") {
        let label = python.label();
        let venv = match venv_with(&python, &["pydantic"]) {
            Ok(venv) => venv,
            Err(why) => {
                eprintln!("   {label}: skipped, pydantic is not installable here: {why}");
                continue;
            }
        };
        let (fixture, truth) =
            Fixture::start_with_truth(&venv, "real_pydantic.py", &[], |pid, _| {
                process_in(pid, PAUSE)
            });
        let pid = fixture.child.id().to_string();
        for (name, expected) in truth["objects"].as_object().unwrap() {
            let root = format!("module:__main__:{name}");
            let graph: Value = serde_json::from_slice(&succeeds(
                "pydeep",
                [
                    "objects",
                    pid.as_str(),
                    "--root",
                    root.as_str(),
                    "--depth",
                    "1",
                    "--format",
                    "json",
                ],
            ))
            .expect("JSON");
            let node = &graph["nodes"][0];
            assert_eq!(node["address"], expected["id"], "{label}: {name}");
            assert_eq!(node["type"], expected["type"], "{label}: type of {name}");
            assert_eq!(node["size"], expected["size"], "{label}: size of {name}");
            if let Some(repr) = expected["repr"].as_str() {
                let shown = node["repr"].as_str().unwrap();
                assert!(
                    shown.starts_with(repr),
                    "{label}: {name} rendered {shown:?}, expected {repr:?}"
                );
            }
            let edges = graph["edges"].as_array().unwrap();
            for edge in expected["edges"].as_array().unwrap() {
                assert!(
                    edges.iter().any(|e| e["from"] == expected["id"]
                        && e["to"] == edge[0]
                        && e["label"] == edge[1]),
                    "{label}: {name} lacks the edge {edge}: {edges:?}"
                );
            }
        }
        eprintln!(
            "   {label}: pydantic {} model, Counter, OrderedDict, deque as Python sees them",
            truth["pydantic"]
        );
    }
}
