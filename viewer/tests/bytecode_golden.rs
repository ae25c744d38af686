//! Golden listing: the annotated bytecode of a fixed code object (loops()
//! as CPython 3.12.1 recorded it, with its source and a fixed heat map)
//! must print exactly as `bytecode_golden/loops_3_12.txt`. Needs no
//! interpreter; pins the output format. After an intended format change,
//! regenerate with `PYDEEP_UPDATE_GOLDEN=1 cargo test -p pydeep-view --test bytecode_golden`.

mod bytecode_common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytecode_common::{hex, strings};
use pydeep_format::proto::{CodeObjectDef, PythonVersion};
use pydeep_view::bytecode::annotate::render_listing;
use pydeep_view::bytecode::{disassemble, Code, Form};
use serde_json::Value;

#[test]
fn listing_of_loops_on_3_12_matches_the_golden_file() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bytecode_golden");
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(directory.join("loops_3_12.json")).expect("fixture"),
    )
    .expect("fixture is JSON");
    let record = &fixture["record"];
    let mut texts: HashMap<u64, String> = HashMap::new();
    let mut intern = |text: &str| {
        let id = texts.len() as u64 + 1;
        texts.insert(id, text.to_string());
        id
    };
    let def = CodeObjectDef {
        filename: intern("bytecode_corpus.py"),
        name: intern(record["name"].as_str().unwrap()),
        qualname: intern(record["qualname"].as_str().unwrap()),
        first_line: record["first_line"].as_u64().unwrap() as u32,
        bytecode: hex(&record["bytecode"]),
        line_table: hex(&record["line_table"]),
        line_table_kind: record["line_table_kind"].as_i64().unwrap() as i32,
        varnames: strings(&record["varnames"])
            .iter()
            .map(|s| intern(s))
            .collect(),
        names: strings(&record["names"])
            .iter()
            .map(|s| intern(s))
            .collect(),
        consts: strings(&record["consts"]),
        localspluskinds: hex(&record["localspluskinds"]),
        python_version: Some(PythonVersion {
            major: 3,
            minor: 12,
            patch: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let code = Code::from_def(&def, |id| texts.get(&id).cloned(), None);
    let instructions = disassemble(&code, Form::Adaptive).expect("3.12 table");
    let heat: BTreeMap<u32, u64> = fixture["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(offset, count)| (offset.parse().unwrap(), count.as_u64().unwrap()))
        .collect();
    let source = fixture["source"].as_str().unwrap();
    let text = render_listing(&code, &instructions, &heat, Some(source), 100, false);
    let golden = directory.join("loops_3_12.txt");
    if std::env::var_os("PYDEEP_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(text, expected, "listing differs from {}", golden.display());
}
