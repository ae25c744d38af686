//! `pydeep-view bytecode` on recordings holding the corpus code objects of
//! every interpreter found: samples land on the instructions they name, the
//! hottest instruction's source span (from that interpreter's own
//! `co_positions()`) is marked with carets, and specialized instructions
//! show beside their base form.

mod bytecode_common;

use std::path::Path;
use std::process::Command;

use bytecode_common::{code_object_def, dump};
use pydeep_format::proto::{Footer, Header, PythonVersion, ThreadDef};
use pydeep_format::{FrameKey, Writer, WriterOptions};
use pydeep_integration::{bytecode_pythons, program, Python};
use pydeep_view::bytecode::annotate::{AnnotateOptions, Profile};
use serde_json::Value;

/// Samples written for the function under test: (instruction index, count).
struct Plan {
    hot: usize,
    warm: usize,
}

const HOT_SAMPLES: u64 = 50;
const WARM_SAMPLES: u64 = 10;
/// Samples on the hot instruction's inline cache (3.11+, where BINARY_OP
/// has one): a frame can point there, and they count for the instruction.
const CACHE_SAMPLES: u64 = 5;

fn cache_samples(python: &Python) -> u64 {
    if python.at_least(3, 11) {
        CACHE_SAMPLES
    } else {
        0
    }
}

/// Writes a recording of the corpus code objects with samples on two
/// instructions of `loops`; returns the `loops` dump record and the plan.
fn write_recording(python: &Python, dump: &Value, path: &Path) -> (Value, Plan) {
    let (major, minor, patch) = python.version;
    let header = Header {
        python_version: Some(PythonVersion {
            major,
            minor,
            patch,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut writer =
        Writer::create(path, false, header, WriterOptions::default()).expect("create recording");
    let source = std::fs::read(program("bytecode_corpus.py")).expect("corpus source");
    let path_id = writer.intern_string("bytecode_corpus.py");
    let source_id = writer.define_source_file(path_id, Some(source));
    writer.define_thread(ThreadDef {
        id: 1,
        is_main: true,
        ..Default::default()
    });
    let mut loops = None;
    for record in dump["code_objects"].as_array().unwrap() {
        let mut def = code_object_def(record, python, &mut |text| writer.intern_string(text));
        def.id = writer.next_code_id();
        def.filename = path_id;
        def.source_file = source_id;
        if record["qualname"] == "loops" {
            loops = Some((record.clone(), def.id));
        }
        writer.define_code_object(def);
    }
    let (record, code) = loops.expect("corpus has loops()");
    let instructions = record["instructions"].as_array().unwrap();
    // The hot instruction: the `i * 2` of `total += i * 2` (BINARY_MULTIPLY
    // before 3.11, BINARY_OP * after); the warm one: the first instruction.
    let hot = instructions
        .iter()
        .position(|i| i[1] == "BINARY_MULTIPLY" || (i[1] == "BINARY_OP" && i[3] == "*"))
        .expect("loops() multiplies");
    let plan = Plan { hot, warm: 0 };
    let mut time = 1_000;
    let hot_offset = instructions[plan.hot][0].as_u64().unwrap() as u32;
    let warm_offset = instructions[plan.warm][0].as_u64().unwrap() as u32;
    for (offset, count) in [
        (hot_offset, HOT_SAMPLES),
        (warm_offset, WARM_SAMPLES),
        (hot_offset + 2, cache_samples(python)),
    ] {
        let frame = writer.intern_frame(FrameKey {
            code,
            instruction_offset: offset,
            ..Default::default()
        });
        let stack = writer.intern_stack(&[frame]);
        for _ in 0..count {
            time += 1_000;
            writer.sample(time, 1, stack, 0).expect("sample");
        }
    }
    writer.finish(Footer::default()).expect("finish");
    (record, plan)
}

#[test]
fn bytecode_listing_marks_samples_specializations_and_hot_columns() {
    for python in bytecode_pythons("bytecode annotate") {
        let dump = dump(&python);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("corpus.pdr");
        let (record, plan) = write_recording(&python, &dump, &path);
        let instructions = record["instructions"].as_array().unwrap();

        let profile = Profile::read(&path).expect("read recording");
        let total = HOT_SAMPLES + WARM_SAMPLES + cache_samples(&python);
        assert_eq!(profile.total_samples, total);
        let options = AnnotateOptions {
            function: Some("loops".into()),
            ..Default::default()
        };
        let ids = profile.select(&options).expect("loops is recorded");
        assert_eq!(ids.len(), 1);
        let text = profile.render(ids[0], false).expect("render");
        if std::env::var_os("PYDEEP_SHOW_LISTING").is_some() {
            eprintln!("{text}");
        }

        // The heat column: the hot instruction carries its samples and share.
        let hot_offset = instructions[plan.hot][0].as_u64().unwrap();
        let hot_line = text
            .lines()
            .find(|l| l.contains("-->"))
            .unwrap_or_else(|| panic!("no hottest marker under {}:\n{text}", python.label()));
        let hot_samples = HOT_SAMPLES + cache_samples(&python);
        let share = hot_samples as f64 * 100.0 / total as f64;
        assert!(
            hot_line.contains(&format!("{hot_samples} {share:>5.1}%"))
                && hot_line.contains(&format!(" {hot_offset} ")),
            "{}: hot line {hot_line:?}",
            python.label()
        );
        let warm_offset = instructions[plan.warm][0].as_u64().unwrap();
        assert!(text
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{WARM_SAMPLES} "))
                && l.contains(&format!(" {warm_offset} "))));

        // The source line of the hot instruction is interleaved.
        assert!(
            text.contains("total += i * 2"),
            "{}: no source:\n{text}",
            python.label()
        );

        if python.at_least(3, 11) {
            // Carets under the source line at the column co_positions() gives.
            let positions = record["positions"].as_array().unwrap();
            let span = &positions[(hot_offset / 2) as usize];
            let (column, end_column) = (span[2].as_u64().unwrap(), span[3].as_u64().unwrap());
            let carets = text
                .lines()
                .find(|l| l.contains("hottest:"))
                .unwrap_or_else(|| panic!("no carets under {}:\n{text}", python.label()));
            let source = text.lines().find(|l| l.contains("total += i * 2")).unwrap();
            let source_start = source.find("total").unwrap() - "        ".len();
            let first_caret = carets.find('^').unwrap();
            let width = carets.matches('^').count() as u64;
            assert_eq!(
                (first_caret - source_start) as u64,
                column,
                "{}: carets {carets:?} under {source:?}",
                python.label()
            );
            assert_eq!(width, end_column - column, "{}", python.label());
            assert!(carets.ends_with(&format!("at {hot_offset}")));

            // Specialized instructions show beside their base form. A
            // free-threaded 3.13 does not specialize (its adaptive
            // interpreter is off), so there is nothing to show there.
            let adaptive = record["adaptive_instructions"].as_array().unwrap();
            let specialized = adaptive
                .iter()
                .zip(instructions)
                .find(|(a, b)| a[1] != b[1]);
            match specialized {
                Some((adaptive, base)) => {
                    let expected = format!("{} ", adaptive[1].as_str().unwrap());
                    let base = format!("({}", base[1].as_str().unwrap());
                    assert!(
                        text.lines()
                            .any(|l| l.contains(&expected) && l.contains(&base)),
                        "{}: no {expected}..{base} in\n{text}",
                        python.label()
                    );
                }
                None if python.free_threaded => eprintln!(
                    "{}: free-threaded 3.13 does not specialize; no specialized form to check",
                    python.label()
                ),
                None => panic!("{}: loops() did not specialize", python.label()),
            }
        }

        // The binary prints the same listing.
        let output = Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
            .args(["bytecode", path.to_str().unwrap(), "--function", "loops"])
            .output()
            .expect("run pydeep-view");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), text);
        // --show-caches prints the hot instruction's cache fields with the
        // values dis shows for them.
        if python.at_least(3, 11) {
            let output = Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
                .args(["bytecode", path.to_str().unwrap(), "--function", "loops"])
                .arg("--show-caches")
                .output()
                .expect("run pydeep-view");
            let listing = String::from_utf8_lossy(&output.stdout);
            let field = record["caches"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c[0].as_u64() == Some(hot_offset + 2))
                .expect("dis shows the hot instruction's cache");
            let expected = format!("{} CACHE  {}", hot_offset + 2, field[1].as_str().unwrap());
            assert!(
                listing.lines().any(|l| l.trim_start() == expected),
                "{}: no {expected:?} in\n{listing}",
                python.label()
            );
        }
        // --at FILE:LINE finds the code object holding the hot line.
        let line = record["linestarts"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|p| p[0].as_u64().unwrap() <= hot_offset)
            .unwrap()[1]
            .as_u64()
            .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
            .args(["bytecode", path.to_str().unwrap(), "--at"])
            .arg(format!("bytecode_corpus.py:{line}"))
            .output()
            .expect("run pydeep-view");
        let listing = String::from_utf8_lossy(&output.stdout);
        assert!(
            listing.starts_with("loops "),
            "{}: {listing}",
            python.label()
        );
    }
}
