//! Ground truth for annotated bytecode: on every interpreter found, every
//! code object of tests/programs/bytecode_corpus.py is dumped by the
//! interpreter itself (tests/programs/dump_code.py), rebuilt as the agent
//! records it (a CodeObjectDef with interned strings), and the viewer's
//! disassembly and decoded line tables must equal what that interpreter's
//! `dis.get_instructions`, `co_lines()` and `co_positions()` say.
//! On 3.11+ the corpus must have specialized (the adaptive forms are then
//! covered), except on a free-threaded 3.13, which does not specialize:
//! there the test checks that the interpreter left every code object as
//! compiled and says so in its output.

mod bytecode_common;

use bytecode_common::{code_object_def, dump, hex, strings, Strings};
use pydeep_cpython::linetable::{
    line_for_offset, line_ranges, merge_line_ranges, positions, LineIndex,
};
use pydeep_format::proto::LineTableKind;
use pydeep_integration::{bytecode_pythons, Python};
use pydeep_view::bytecode::disassemble::{deoptimize, opcodes_of};
use pydeep_view::bytecode::{disassemble, Code, Form, Instruction};
use serde_json::Value;

type Row = (u64, String, Option<i64>, String);

fn truth_rows(list: &Value) -> Vec<Row> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[0].as_u64().unwrap(),
                row[1].as_str().unwrap().to_string(),
                row[2].as_i64(),
                row[3].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn our_rows(instructions: &[Instruction]) -> Vec<Row> {
    instructions
        .iter()
        .map(|i| {
            (
                u64::from(i.offset),
                i.opname.to_string(),
                i.arg,
                i.argrepr.clone(),
            )
        })
        .collect()
}

fn compare_rows(what: &str, qualname: &str, ours: &[Row], truth: &[Row], out: &mut Vec<String>) {
    if ours.len() != truth.len() {
        out.push(format!(
            "{qualname} {what}: {} instructions, dis has {}",
            ours.len(),
            truth.len()
        ));
    }
    for (a, b) in ours.iter().zip(truth) {
        if a != b {
            out.push(format!("{qualname} {what}: ours {a:?} != dis {b:?}"));
        }
    }
}

/// The inline cache fields and values equal what `dis` shows with
/// show_caches=True (3.11: only for specialized instructions; 3.13: only
/// the first field of each instruction, see dump_code.py).
fn compare_caches(
    record: &Value,
    adaptive: &[Instruction],
    python: &Python,
    out: &mut Vec<String>,
) {
    let truth: Vec<(u64, String)> = record["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect();
    let ours: Vec<(u64, String)> = adaptive
        .iter()
        .filter(|i| python.at_least(3, 12) || i.is_specialized())
        .flat_map(|i| {
            let fields = if python.at_least(3, 13) {
                1
            } else {
                usize::MAX
            };
            i.cache_fields.iter().take(fields)
        })
        .map(|f| (u64::from(f.offset), format!("{}: {}", f.name, f.value)))
        .collect();
    if ours != truth {
        let at = ours.iter().zip(&truth).position(|(a, b)| a != b);
        out.push(format!(
            "{}: cache fields differ ({} vs {}, first at {at:?}: {:?} vs {:?})",
            record["qualname"],
            ours.len(),
            truth.len(),
            at.map(|i| &ours[i]),
            at.map(|i| &truth[i])
        ));
    }
}

fn optional(value: &Value) -> Option<u32> {
    value.as_u64().map(|v| v as u32)
}

type Span = [Option<u32>; 4];

/// Compares decoded tables with co_lines(), co_positions() and
/// dis.findlinestarts() of the interpreter.
fn compare_lines(record: &Value, code: &Code, python: &Python, out: &mut Vec<String>) {
    let kind = code.line_table_kind;
    let first = code.first_line;
    let table = &code.line_table;
    let code_len = hex(&record["bytecode_deoptimized"]).len() as u32;
    let name = &code.qualname;
    let stored = line_ranges(kind, first, table, code_len);
    let ranges = if python.at_least(3, 12) {
        merge_line_ranges(&stored)
    } else {
        stored
    };
    if let Some(lines) = record.get("lines").and_then(Value::as_array) {
        let truth: Vec<(u32, u32, Option<u32>)> = lines
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap() as u32,
                    r[1].as_u64().unwrap() as u32,
                    optional(&r[2]),
                )
            })
            .collect();
        let ours: Vec<(u32, u32, Option<u32>)> =
            ranges.iter().map(|r| (r.start, r.end, r.line)).collect();
        if ours != truth {
            out.push(format!("{name}: co_lines {ours:?} != {truth:?}"));
        }
    }
    if let Some(list) = record.get("positions").and_then(Value::as_array) {
        let truth: Vec<Span> = list
            .iter()
            .map(|p| {
                [
                    optional(&p[0]),
                    optional(&p[1]),
                    optional(&p[2]),
                    optional(&p[3]),
                ]
            })
            .collect();
        let ours: Vec<Span> = positions(kind, first, table, code_len)
            .iter()
            .map(|p| [p.line, p.end_line, p.column, p.end_column])
            .collect();
        if ours != truth {
            let at = ours.iter().zip(&truth).position(|(a, b)| a != b);
            out.push(format!(
                "{name}: co_positions differ (lengths {} vs {}, first difference at unit {at:?})",
                ours.len(),
                truth.len()
            ));
        }
    }
    // dis.findlinestarts: the first offset of each change of line; 3.13+
    // also reports the changes to "no line" (None).
    let truth_starts: Vec<(u32, Option<u32>)> = record["linestarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as u32, optional(&p[1])))
        .collect();
    let mut ours_starts = Vec::new();
    let mut last = None;
    for range in &ranges {
        let reported = range.line.is_some() || python.at_least(3, 13);
        if reported && Some(range.line) != last {
            ours_starts.push((range.start, range.line));
            last = Some(range.line);
        }
    }
    if ours_starts != truth_starts {
        out.push(format!(
            "{name}: linestarts {ours_starts:?} != {truth_starts:?}"
        ));
    }
    // line_for_offset on every instruction equals the line of the range
    // holding it (co_lines on 3.10+, findlinestarts on 3.9).
    let index = LineIndex::new(kind, first, table);
    for row in record["instructions"].as_array().unwrap() {
        let offset = row[0].as_u64().unwrap() as u32;
        let expected = if kind == LineTableKind::LineTableLnotab {
            truth_starts
                .iter()
                .rev()
                .find(|(start, _)| *start <= offset)
                .and_then(|&(_, line)| line)
        } else {
            ranges
                .iter()
                .find(|r| r.start <= offset && offset < r.end)
                .and_then(|r| r.line)
        };
        let got = line_for_offset(kind, first, table, offset);
        if got != expected || index.line(offset) != expected {
            out.push(format!(
                "{name}: line_for_offset({offset}) = {got:?}, expected {expected:?}"
            ));
        }
    }
}

/// Whether the interpreter's specializing adaptive interpreter is on, from
/// its build (sysconfig's Py_GIL_DISABLED, see `Python::free_threaded`) and
/// version: CPython 3.13 compiles it out of free-threaded builds
/// (`ENABLE_SPECIALIZATION` is 0 under Py_GIL_DISABLED in
/// Include/internal/pycore_code.h, gh-115999), 3.14 turns it back on for
/// them. The test also measures it: on a build said not to specialize, the
/// adaptive code must be untouched.
fn specializes(python: &Python) -> bool {
    let compiled_out = python.free_threaded && (python.version.0, python.version.1) == (3, 13);
    python.at_least(3, 11) && !compiled_out
}

/// Opcodes the corpus must produce on a version, so that a passing test
/// covers the argument renderings that differ between versions.
fn required_opnames(python: &Python) -> Vec<&'static str> {
    let mut names = vec![
        "EXTENDED_ARG",
        "LOAD_GLOBAL",
        "LOAD_DEREF",
        "COMPARE_OP",
        "FOR_ITER",
    ];
    if !python.at_least(3, 11) {
        names.extend([
            "JUMP_ABSOLUTE",
            "LOAD_METHOD",
            "MAKE_FUNCTION",
            "FORMAT_VALUE",
        ]);
    }
    if python.at_least(3, 10) {
        names.push("MATCH_CLASS");
    }
    if python.at_least(3, 11) {
        names.extend(["JUMP_BACKWARD", "BINARY_OP", "SEND", "CHECK_EG_MATCH"]);
    }
    if python.at_least(3, 11) && !python.at_least(3, 13) {
        names.push("KW_NAMES");
    }
    if python.at_least(3, 12) {
        names.extend(["LOAD_SUPER_ATTR", "CALL_INTRINSIC_1", "CALL_INTRINSIC_2"]);
    }
    if python.at_least(3, 12) && !python.at_least(3, 14) {
        names.push("RETURN_CONST");
    }
    if python.at_least(3, 13) && !python.at_least(3, 14) {
        names.push("LOAD_FAST_LOAD_FAST");
    }
    if python.at_least(3, 13) {
        names.extend([
            "STORE_FAST_STORE_FAST",
            "CONVERT_VALUE",
            "SET_FUNCTION_ATTRIBUTE",
        ]);
    }
    if python.at_least(3, 14) {
        names.extend([
            "LOAD_SMALL_INT",
            "LOAD_FAST_BORROW",
            "LOAD_FAST_BORROW_LOAD_FAST_BORROW",
            "LOAD_SPECIAL",
        ]);
    }
    names
}

#[test]
fn disassembly_and_line_tables_equal_dis_of_the_same_interpreter() {
    let mut failures = Vec::new();
    for python in bytecode_pythons("bytecode") {
        let dump = dump(&python);
        let mut strings = Strings::default();
        let (mut code_objects, mut instructions, mut specialized) = (0, 0, 0);
        // The interpreter's own view of specialization: instructions whose
        // name under `dis` with adaptive=True differs from the base one,
        // code objects whose `_co_code_adaptive` still equals `co_code`
        // byte for byte, and inline cache fields `dis` shows non-zero.
        let (mut dis_specialized, mut untouched, mut nonzero_caches) = (0, 0, 0);
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for record in dump["code_objects"].as_array().unwrap() {
            let def = code_object_def(record, &python, &mut |text| strings.intern(text));
            let code = Code::from_def(&def, |id| strings.texts.get(&id).cloned(), None);
            let opcodes = opcodes_of(&code).expect("a table for every interpreter here");
            let co_code = hex(&record["bytecode_deoptimized"]);
            if deoptimize(opcodes, &code.bytecode) != co_code {
                problems.push(format!(
                    "{}: deoptimized bytes differ from co_code",
                    code.qualname
                ));
            }
            if let Some(names) = record.get("localsplusnames") {
                if code.localsplus != self::strings(names) {
                    problems.push(format!(
                        "{}: localsplus {:?}",
                        code.qualname, code.localsplus
                    ));
                }
            }
            let base = disassemble(&code, Form::Deoptimized).unwrap();
            let truth = truth_rows(&record["instructions"]);
            compare_rows(
                "base",
                &code.qualname,
                &our_rows(&base),
                &truth,
                &mut problems,
            );
            if let Some(adaptive_truth) = record.get("adaptive_instructions") {
                let adaptive = disassemble(&code, Form::Adaptive).unwrap();
                specialized += adaptive.iter().filter(|i| i.is_specialized()).count();
                let truth_adaptive = truth_rows(adaptive_truth);
                dis_specialized += truth_adaptive
                    .iter()
                    .zip(&truth)
                    .filter(|(a, b)| a.1 != b.1)
                    .count();
                untouched += usize::from(hex(&record["bytecode"]) == co_code);
                nonzero_caches += record["caches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| !r[1].as_str().unwrap().ends_with(": 0"))
                    .count();
                let truth = truth_adaptive;
                compare_caches(record, &adaptive, &python, &mut problems);
                compare_rows(
                    "adaptive",
                    &code.qualname,
                    &our_rows(&adaptive),
                    &truth,
                    &mut problems,
                );
            }
            seen.extend(base.iter().map(|i| i.opname));
            compare_lines(record, &code, &python, &mut problems);
            code_objects += 1;
            instructions += base.len();
        }
        // 3.12+: code under sys.monitoring holds INSTRUMENTED_* opcodes in
        // place of their base opcodes; the walk must stay aligned with the
        // base's caches and undo them into co_code.
        let mut instrumented = 0;
        for entry in dump["instrumented"].as_array().into_iter().flatten() {
            let record = dump["code_objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["qualname"] == entry["qualname"])
                .expect("instrumented function is in the dump");
            let mut def = code_object_def(record, &python, &mut |text| strings.intern(text));
            def.bytecode = hex(&entry["bytecode"]);
            let code = Code::from_def(&def, |id| strings.texts.get(&id).cloned(), None);
            let opcodes = opcodes_of(&code).unwrap();
            if deoptimize(opcodes, &code.bytecode) != hex(&entry["bytecode_deoptimized"]) {
                problems.push(format!(
                    "{}: instrumented bytes do not deoptimize to co_code",
                    code.qualname
                ));
            }
            let base = disassemble(&code, Form::Deoptimized).unwrap();
            let truth = truth_rows(&record["instructions"]);
            compare_rows(
                "instrumented",
                &code.qualname,
                &our_rows(&base),
                &truth,
                &mut problems,
            );
            let adaptive = disassemble(&code, Form::Adaptive).unwrap();
            for (ours, truth) in adaptive.iter().zip(&truth) {
                if ours.opname.starts_with("INSTRUMENTED_") {
                    instrumented += 1;
                    if ours.base_opname != truth.1 || ours.argrepr != truth.3 {
                        problems.push(format!("{}: {ours:?} is not {truth:?}", code.qualname));
                    }
                }
            }
        }
        if python.at_least(3, 12) {
            assert!(
                instrumented >= 5,
                "no instrumented opcodes under {}",
                python.label()
            );
        }
        eprintln!(
            "   {}: {code_objects} code objects, {instructions} instructions, {specialized} specialized ({dis_specialized} by dis), {} mismatches",
            python.label(),
            problems.len()
        );
        assert!(
            code_objects > 30 && instructions > 1000,
            "corpus too small under {}",
            python.label()
        );
        for name in required_opnames(&python) {
            if !seen.contains(name) {
                problems.push(format!("the corpus has no {name}"));
            }
        }
        if python.at_least(3, 11) && !specializes(&python) {
            // Nothing to compare specialized forms with: check that the
            // interpreter really left the code as compiled (so the
            // comparisons above covered what it runs: unspecialized
            // adaptive instructions and their zeroed caches, row for row).
            assert!(
                dis_specialized == 0 && untouched == code_objects && nonzero_caches == 0,
                "{}: a free-threaded 3.13 build is not expected to specialize, yet dis shows \
                 {dis_specialized} specialized instructions, {} of {code_objects} code objects' \
                 _co_code_adaptive differ from co_code and {nonzero_caches} cache fields are \
                 non-zero: update specializes()",
                python.label(),
                code_objects - untouched
            );
            eprintln!(
                "   {}: free-threaded 3.13 does not specialize (Py_GIL_DISABLED: \
                 ENABLE_SPECIALIZATION 0, gh-115999). Measured after 60 runs of the corpus: dis \
                 shows 0 specialized instructions, _co_code_adaptive equals co_code in all \
                 {code_objects} code objects, all inline cache fields are 0. Checked there: the \
                 adaptive disassembly (unspecialized) and its cache fields equal dis row for row; \
                 specialized forms are not covered on this build",
                python.label()
            );
        } else if python.at_least(3, 11) {
            assert!(
                specialized > 100,
                "corpus did not specialize under {} (dis shows {dis_specialized} specialized)",
                python.label()
            );
        }
        failures.extend(
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", python.label())),
        );
    }
    let shown: Vec<&String> = failures.iter().take(40).collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{shown:#?}",
        failures.len()
    );
}
