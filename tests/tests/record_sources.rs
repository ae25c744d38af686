//! The source a recording embeds: by default, for each code object
//! recorded, the lines it covers, exactly as in the file the target
//! compiled, at their own line numbers; with `--full-source`, whole files
//! byte for byte. The truth is the target's own view of each code object
//! (`co_filename`, `co_firstlineno` and the last line of `dis.findlinestarts`)
//! and the file itself. On every interpreter.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use pydeep_format::Recording;
use pydeep_integration::{program, test_pythons, workspace_binary, Python};

/// One code object as the program reported it.
struct Truth {
    file: String,
    first: usize,
    last: usize,
}

/// Records `source_spans.py` for 2 s (with `extra` options); returns the
/// recording and the program's truth, by qualname.
fn record(
    python: &Python,
    dir: &Path,
    extra: &[&str],
) -> (
    Recording<std::io::BufReader<std::fs::File>>,
    HashMap<String, Truth>,
) {
    let output = dir.join("sources.pdr");
    let truth_path = dir.join("truth.json");
    let status = Command::new(workspace_binary("pydeep"))
        .args(["record", "-q", "-r", "500", "--force", "-o"])
        .arg(&output)
        .args(extra)
        .arg("--")
        .arg(&python.path)
        .arg(program("source_spans.py"))
        .arg(&truth_path)
        .arg("2")
        .status()
        .unwrap();
    assert!(status.success(), "{}: pydeep record failed", python.label());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    let truth = json
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| {
            let line = |key: &str| t[key].as_u64().unwrap() as usize;
            let truth = Truth {
                file: t["file"].as_str().unwrap().to_owned(),
                first: line("first"),
                last: line("last"),
            };
            (name.clone(), truth)
        })
        .collect();
    let mut recording = Recording::open(&output).unwrap();
    while recording.next_event().unwrap().is_some() {}
    (recording, truth)
}

/// The embedded source of the code object `qualname` names: its text, with
/// each line at its own line number, and the bytes its definition holds.
/// (Before 3.11 code objects have no qualname: the name is compared.)
fn embedded(recording: &Recording<impl std::io::Read>, qualname: &str) -> Option<(String, usize)> {
    let tables = recording.tables();
    let name = qualname.rsplit('.').next().unwrap_or(qualname);
    let code = tables.code_objects.values().find(|c| {
        let recorded = tables.string(c.qualname);
        (recorded == qualname || recorded == name) && c.source_file != 0
    })?;
    let def = &tables.source_files[&code.source_file];
    Some((tables.source_text(code.source_file)?, def.content.len()))
}

/// True if the module code of `file` was recorded.
fn module_recorded(recording: &Recording<impl std::io::Read>, file: &str) -> bool {
    let tables = recording.tables();
    tables
        .code_objects
        .values()
        .any(|c| tables.string(c.name) == "<module>" && tables.string(c.filename) == file)
}

#[test]
fn each_recorded_function_carries_its_own_lines_and_full_source_whole_files() {
    for python in test_pythons("embedded source") {
        let label = python.label();
        let dir = tempfile::tempdir().unwrap();
        let (recording, truth) = record(&python, dir.path(), &[]);
        let mut checked = 0;
        for (name, truth) in &truth {
            // A function the sampler never caught has nothing embedded.
            let Some((text, bytes)) = embedded(&recording, name) else {
                continue;
            };
            let file = std::fs::read_to_string(&truth.file).unwrap();
            let file_lines: Vec<&str> = file.lines().collect();
            let lines: Vec<&str> = text.lines().collect();
            for line in truth.first..=truth.last {
                assert_eq!(
                    lines.get(line - 1),
                    file_lines.get(line - 1),
                    "{label}: {name}: line {line} of {}",
                    truth.file
                );
            }
            // Unless the sampler caught threading.py's module code (its
            // import, at start-up), whose lines are the whole file.
            if truth.file.ends_with("threading.py") && !module_recorded(&recording, &truth.file) {
                assert!(
                    bytes * 4 < file.len(),
                    "{label}: {name}: {bytes} of threading.py's {} bytes embedded",
                    file.len()
                );
            }
            checked += 1;
        }
        let names: Vec<&String> = truth.keys().collect();
        assert!(
            embedded(&recording, "inner").is_some() && checked >= 3,
            "{label}: only {checked} of {names:?} recorded with source"
        );

        let (recording, truth) = record(&python, dir.path(), &["--full-source"]);
        let inner = &truth["inner"];
        let (text, _) = embedded(&recording, "inner").expect("inner recorded");
        assert_eq!(
            text,
            std::fs::read_to_string(&inner.file).unwrap(),
            "{label}: --full-source embeds the whole file"
        );
        eprintln!("{label}: {checked} code objects with their own lines checked");
    }
}
