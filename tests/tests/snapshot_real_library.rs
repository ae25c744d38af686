//! Issue 16 on a real library: a pydantic model (a class whose metaclass
//! is `ModelMetaclass`, instances with a `__dict__`) beside a `Counter`, an
//! `OrderedDict` cache and a `deque`, read by `pydeep objects` and checked
//! against the program's own `id`, `sys.getsizeof`, `vars()` and `repr`.
//! pydantic is pip-installed into a venv per interpreter (kept in cargo's
//! target tmpdir); where it does not install (no network, no wheel for the
//! version) the interpreter is skipped with a message saying why.

use std::path::PathBuf;
use std::process::Command;

use pydeep_integration::blocking::{process_in, PAUSE};
use pydeep_integration::run::succeeds;
use pydeep_integration::{test_pythons, Fixture, Python};
use serde_json::Value;

/// A venv of `python` with pydantic, or why there is none.
fn venv_with_pydantic(python: &Python) -> Result<Python, String> {
    let (a, b, c) = python.version;
    let name = format!(
        "pydantic-{a}.{b}.{c}-{}",
        python.path.display().to_string().replace('/', "_")
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let bin = dir.join("bin").join("python");
    let importable = |bin: &PathBuf| {
        Command::new(bin)
            .args(["-c", "import pydantic"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(&bin) {
        let made = Command::new(&python.path)
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("python -m venv: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "python -m venv failed: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            ));
        }
        let pip = Command::new(&bin)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pydantic",
            ])
            .output()
            .map_err(|e| format!("pip: {e}"))?;
        if !pip.status.success() || !importable(&bin) {
            return Err(format!(
                "pip install pydantic failed: {}",
                String::from_utf8_lossy(&pip.stderr).trim()
            ));
        }
    }
    Ok(Python {
        path: bin,
        version: python.version,
        free_threaded: python.free_threaded,
    })
}

#[test]
fn a_pydantic_model_and_the_containers_beside_it_read_as_python_sees_them() {
    for python in test_pythons("real library: pydantic") {
        let label = python.label();
        let venv = match venv_with_pydantic(&python) {
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
