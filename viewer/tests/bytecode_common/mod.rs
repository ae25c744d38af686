//! Shared by the bytecode tests: running tests/programs/dump_code.py under
//! an interpreter and rebuilding its code objects as the agent records them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Command;

use pydeep_format::proto::{CodeObjectDef, PythonVersion};
use pydeep_integration::{program, Python};
use serde_json::Value;

fn intern_all(intern: &mut dyn FnMut(&str) -> u64, list: &Value) -> Vec<u64> {
    strings(list).iter().map(|s| intern(s)).collect()
}

/// Interns strings the way the agent's writer does: one id per distinct text.
#[derive(Default)]
pub struct Strings {
    pub ids: HashMap<String, u64>,
    pub texts: HashMap<u64, String>,
}

impl Strings {
    pub fn intern(&mut self, text: &str) -> u64 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.ids.len() as u64 + 1;
        self.ids.insert(text.to_string(), id);
        self.texts.insert(id, text.to_string());
        id
    }
}

pub fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

pub fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().unwrap_or("");
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

pub fn dump(python: &Python) -> Value {
    let output = Command::new(&python.path)
        .arg(program("dump_code.py"))
        .current_dir(program(""))
        .output()
        .expect("run dump_code.py");
    assert!(
        output.status.success(),
        "dump_code.py failed under {}: {}",
        python.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("dump_code.py prints JSON")
}

/// The CodeObjectDef the agent would write for one dumped code object.
pub fn code_object_def(
    record: &Value,
    python: &Python,
    intern: &mut dyn FnMut(&str) -> u64,
) -> CodeObjectDef {
    let (major, minor, patch) = python.version;
    CodeObjectDef {
        id: 1,
        filename: intern("bytecode_corpus.py"),
        name: intern(record["name"].as_str().unwrap()),
        qualname: intern(record["qualname"].as_str().unwrap()),
        first_line: record["first_line"].as_u64().unwrap() as u32,
        bytecode: hex(&record["bytecode"]),
        // Left empty: the viewer must deoptimize the adaptive bytes itself.
        bytecode_deoptimized: Vec::new(),
        line_table: hex(&record["line_table"]),
        line_table_kind: record["line_table_kind"].as_i64().unwrap() as i32,
        varnames: intern_all(intern, &record["varnames"]),
        cellvars: intern_all(intern, &record["cellvars"]),
        freevars: intern_all(intern, &record["freevars"]),
        names: intern_all(intern, &record["names"]),
        consts: strings(&record["consts"]),
        python_version: Some(PythonVersion {
            major,
            minor,
            patch,
            ..Default::default()
        }),
        localspluskinds: hex(&record["localspluskinds"]),
        ..Default::default()
    }
}
