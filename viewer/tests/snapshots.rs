//! `pydeep-view scopes|generators|objects|heap` on a synthetic recording
//! whose snapshots the test writes itself with the format crate's Writer:
//! selection (`--index`, `--at`, `--thread`), heap counts merged by name,
//! growth between successive (and chosen) heap snapshots, graph subsets,
//! generator states, and the errors and warnings.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{FrameKey, Writer, WriterOptions};
use serde_json::Value;

const START_NS: u64 = 7_000_000_000;
const SECOND: u64 = 1_000_000_000;

/// Heap snapshots as (time offset in seconds, [(type name, count)]); a name
/// listed twice is two types of that name.
const HEAPS: [(u64, &[(&str, u64)]); 3] = [
    (1, &[("Node", 10), ("list", 5)]),
    (2, &[("Node", 15), ("list", 5), ("dict", 2)]),
    (3, &[("Node", 10), ("Node", 5), ("list", 4)]),
];

/// Writes the recording: two threads, scopes snapshots at 1.5 s and 2.5 s
/// (the second with an object graph and generators), the heap snapshots
/// above; `finish` writes the footer.
fn write(path: &Path, finish: bool) {
    let header = proto::Header {
        pid: 77,
        start_clock_ns: START_NS,
        python_version: Some(proto::PythonVersion {
            major: 3,
            minor: 10,
            patch: 13,
            ..Default::default()
        }),
        ..Default::default()
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = Writer::new(file, header, WriterOptions::default()).unwrap();
    let code = |w: &mut Writer<std::fs::File>, name: &str, first_line: u32| {
        let id = w.next_code_id();
        let filename = w.intern_string("/srv/app.py");
        let qualname = w.intern_string(name);
        w.define_code_object(proto::CodeObjectDef {
            id,
            filename,
            name: qualname,
            qualname,
            first_line,
            ..Default::default()
        });
        id
    };
    let main_code = code(&mut w, "<module>", 1);
    let work_code = code(&mut w, "work", 10);
    let gen_code = code(&mut w, "numbers", 20);
    let frame = |w: &mut Writer<std::fs::File>, code: u64, offset: u32, line: u32| {
        w.intern_frame(FrameKey {
            code,
            instruction_offset: offset,
            line,
            is_generator: false,
            is_shim: false,
        })
    };
    let main_frame = frame(&mut w, main_code, 8, 5);
    let work_frame = frame(&mut w, work_code, 16, 12);
    let gen_frame = frame(&mut w, gen_code, 0, 21);
    let stack = w.intern_stack(&[main_frame, work_frame]);
    let idle_stack = w.intern_stack(&[main_frame]);
    for (id, name, native) in [(1u32, "MainThread", 100u64), (2, "worker", 101)] {
        let name = w.intern_string(name);
        w.define_thread(proto::ThreadDef {
            id,
            pid: 77,
            thread_id: 1000 + u64::from(id),
            native_id: native,
            name,
            is_main: id == 1,
            interpreter: 0,
        });
    }
    let variable =
        |w: &mut Writer<std::fs::File>, name: &str, kind, address, ty: &str| proto::Variable {
            name: w.intern_string(name),
            kind: kind as i32,
            address,
            type_name: if ty.is_empty() {
                0
            } else {
                w.intern_string(ty)
            },
            value: if ty == "int" {
                "42".into()
            } else {
                String::new()
            },
            unbound: address == 0,
            ..Default::default()
        };
    let scopes = |w: &mut Writer<std::fs::File>, at: u64, with_graph: bool| {
        let a = variable(w, "a", proto::VariableKind::VariableArgument, 0x10, "int");
        let b = variable(w, "b", proto::VariableKind::VariableLocal, 0, "");
        let c = variable(w, "c", proto::VariableKind::VariableCell, 0x20, "list");
        let threads = vec![
            proto::ThreadScopes {
                thread: 1,
                stack,
                frames: vec![
                    proto::FrameScopes {
                        frame: work_frame,
                        locals: vec![a, b],
                        cells: vec![c],
                        ..Default::default()
                    },
                    proto::FrameScopes {
                        frame: main_frame,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            proto::ThreadScopes {
                thread: 2,
                stack: idle_stack,
                frames: vec![proto::FrameScopes {
                    frame: main_frame,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let (objects, edges, generators) = if with_graph {
            let int = w.intern_string("int");
            let list = w.intern_string("list");
            let gen_name = w.intern_string("numbers");
            let node = |address, type_name, depth| proto::ObjectNode {
                address,
                type_name,
                size: if address == 0x30 { 0 } else { 28 },
                refcount: 1,
                value: format!("v{address:x}"),
                depth,
                ..Default::default()
            };
            (
                vec![
                    node(0x10, int, 0),
                    node(0x20, list, 0),
                    node(0x30, int, 1),
                    node(0x40, int, 1),
                ],
                vec![
                    proto::ObjectEdge {
                        from: 0x20,
                        to: 0x30,
                        kind: proto::EdgeKind::EdgeIndex as i32,
                        label: "[0]".into(),
                    },
                    proto::ObjectEdge {
                        from: 0x20,
                        to: 0x40,
                        kind: proto::EdgeKind::EdgeIndex as i32,
                        label: "[1]".into(),
                    },
                ],
                vec![
                    proto::GeneratorInfo {
                        address: 0x50,
                        kind: proto::GeneratorKind::Generator as i32,
                        state: proto::GeneratorState::StateCreated as i32,
                        qualname: gen_name,
                        frame: gen_frame,
                        ..Default::default()
                    },
                    proto::GeneratorInfo {
                        address: 0x60,
                        kind: proto::GeneratorKind::Coroutine as i32,
                        state: proto::GeneratorState::StateClosed as i32,
                        qualname: gen_name,
                        ..Default::default()
                    },
                ],
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        w.record(Kind::Snapshot(proto::Snapshot {
            time_ns: START_NS + at,
            pid: 77,
            pause_ns: 2_000_000,
            threads,
            objects,
            edges,
            generators,
            ..Default::default()
        }))
        .unwrap();
    };
    for (index, (second, types)) in HEAPS.iter().enumerate() {
        if index == 1 {
            scopes(&mut w, SECOND * 3 / 2, false);
        }
        if index == 2 {
            scopes(&mut w, SECOND * 5 / 2, true);
        }
        let types = types
            .iter()
            .map(|(name, count)| proto::TypeCount {
                type_name: w.intern_string(name),
                count: *count,
                bytes: count * 100,
                ..Default::default()
            })
            .collect();
        w.record(Kind::Snapshot(proto::Snapshot {
            time_ns: START_NS + second * SECOND,
            pid: 77,
            pause_ns: 5_000_000,
            heap: Some(proto::HeapSummary {
                types,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .unwrap();
    }
    if finish {
        w.finish(proto::Footer::default()).unwrap();
    } else {
        w.flush().unwrap();
    }
}

fn view(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
        .args(args)
        .arg(file)
        .output()
        .expect("run pydeep-view")
}

fn lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn recording(finish: bool) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshots.pdr");
    write(&path, finish);
    (dir, path)
}

/// The plan's counts per heap snapshot, merged by name.
fn planned(index: usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, count) in HEAPS[index].1 {
        *out.entry(name.to_string()).or_default() += count;
    }
    out
}

#[test]
fn heap_lists_every_heap_snapshot_with_counts_merged_by_name() {
    let (_dir, file) = recording(true);
    let heaps = lines(&view(&["heap", "--json", "--top", "0"], &file));
    assert_eq!(heaps.len(), HEAPS.len());
    for (index, heap) in heaps.iter().enumerate() {
        let counts: BTreeMap<String, u64> = heap["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().into(),
                    t["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(counts, planned(index));
        assert_eq!(heap["index"], index);
        assert_eq!(heap["time"], HEAPS[index].0 as f64);
        assert_eq!(heap["pause_seconds"], 0.005);
    }
    // --top keeps the most numerous.
    let top = lines(&view(
        &["heap", "--json", "--top", "1", "--index", "2"],
        &file,
    ));
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["types"][0]["name"], "Node");
    assert_eq!(top[0]["types"][0]["count"], 15);
    assert_eq!(top[0]["types"].as_array().unwrap().len(), 1);
}

/// The increases from heap snapshot `a` to `b` of the plan, by name.
fn planned_growth(a: usize, b: usize) -> BTreeMap<String, u64> {
    let (before, after) = (planned(a), planned(b));
    after
        .into_iter()
        .filter_map(|(name, n)| {
            let was = before.get(&name).copied().unwrap_or(0);
            (n > was).then(|| (name, n - was))
        })
        .collect()
}

fn growth_of(step: &Value) -> BTreeMap<String, u64> {
    step["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["growth"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn growth_compares_successive_heap_snapshots_or_the_chosen_ones() {
    let (_dir, file) = recording(true);
    let steps = lines(&view(&["heap", "--growth", "--json", "--top", "0"], &file));
    assert_eq!(steps.len(), 2);
    assert_eq!(growth_of(&steps[0]), planned_growth(0, 1));
    assert_eq!(growth_of(&steps[1]), planned_growth(1, 2));
    assert_eq!(steps[0]["from"]["index"], 0);
    assert_eq!(steps[0]["to"]["index"], 1);
    // Largest growth first.
    assert_eq!(steps[0]["types"][0]["name"], "Node");
    assert_eq!(steps[0]["types"][0]["count"], 15);
    let chosen = lines(&view(
        &["heap", "--growth", "--json", "--index", "0", "--index", "2"],
        &file,
    ));
    assert_eq!(chosen.len(), 1);
    assert_eq!(growth_of(&chosen[0]), planned_growth(0, 2));
    let text = view(&["heap", "--growth"], &file);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("(no type grew)"), "{text}");
    assert!(text.contains("+5"), "{text}");
}

#[test]
fn scopes_pick_snapshots_by_index_time_and_thread() {
    let (_dir, file) = recording(true);
    let all = lines(&view(&["scopes", "--json"], &file));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["time"], 1.5);
    let at = |offset: &str| lines(&view(&["scopes", "--json", "--at", offset], &file));
    assert_eq!(at("2")[0]["index"], 0, "latest at or before 2 s");
    assert_eq!(at("2.5s")[0]["index"], 1);
    assert_eq!(at("100ms")[0]["index"], 0, "before all: the first");
    assert_eq!(at("60")[0]["index"], 1);
    let snapshot = &all[1];
    let threads = snapshot["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[0]["name"], "MainThread");
    let work = &threads[0]["frames"][0];
    assert_eq!(work["qualname"], "work");
    assert_eq!(work["line"], 12);
    assert_eq!(work["instruction_offset"], 16);
    assert_eq!(work["locals"][0]["name"], "a");
    assert_eq!(work["locals"][0]["binding"], "local");
    assert_eq!(work["locals"][0]["argument"], true);
    assert_eq!(work["locals"][0]["value"]["repr"], "42");
    assert_eq!(work["locals"][0]["value"]["address"], 0x10);
    assert_eq!(work["locals"][1]["value"], Value::Null, "unbound");
    // Cells follow the locals.
    assert_eq!(work["locals"][2]["binding"], "cell");
    assert_eq!(work["locals"][2]["value"]["type"], "list");
    assert_eq!(
        work["locals"][2]["value"]["repr"],
        Value::Null,
        "no value recorded"
    );
    assert_eq!(threads[0]["active"], Value::Null, "activity not recorded");
    let worker = lines(&view(&["scopes", "--json", "--thread", "worker"], &file));
    assert_eq!(worker[0]["threads"].as_array().unwrap().len(), 1);
    assert_eq!(worker[0]["threads"][0]["native_id"], 101);
    let by_tid = lines(&view(&["scopes", "--json", "--thread", "100"], &file));
    assert_eq!(by_tid[0]["threads"][0]["name"], "MainThread");
}

#[test]
fn objects_show_the_graph_or_what_one_object_reaches() {
    let (_dir, file) = recording(true);
    let graphs = lines(&view(&["objects", "--json"], &file));
    assert_eq!(graphs.len(), 1, "only the snapshot with objects");
    assert_eq!(graphs[0]["roots"], serde_json::json!([0x10, 0x20]));
    assert_eq!(graphs[0]["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(graphs[0]["nodes"][2]["size"], Value::Null, "0 = unknown");
    let sub = lines(&view(&["objects", "--json", "--root", "0x20"], &file));
    let nodes: Vec<u64> = sub[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_u64().unwrap())
        .collect();
    assert_eq!(nodes, [0x20, 0x30, 0x40]);
    assert_eq!(sub[0]["edges"].as_array().unwrap().len(), 2);
    let dot = view(&["objects", "--root", "32"], &file);
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph snapshot_0 {"), "{dot}");
    assert!(dot.contains("n20 -> n30 [label=\"[0]\"]"), "{dot}");
    assert!(!dot.contains("n10 "), "{dot}");
}

#[test]
fn generators_show_states_and_created_positions_as_inspect_does() {
    let (_dir, file) = recording(true);
    let snapshots = lines(&view(&["generators", "--json"], &file));
    assert_eq!(snapshots.len(), 1);
    let created = &snapshots[0]["generators"][0];
    assert_eq!(created["state"], "created");
    assert_eq!(created["kind"], "generator");
    assert_eq!(created["qualname"], "numbers");
    // Not started: its def line and, on 3.10, f_lasti -1.
    assert_eq!(created["line"], 20);
    assert_eq!(created["instruction_offset"], -1);
    let closed = &snapshots[0]["generators"][1];
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["line"], Value::Null);
}

#[test]
fn unfinished_recordings_warn_and_missing_snapshots_are_an_error() {
    let (_dir, file) = recording(false);
    let output = view(&["heap", "--json"], &file);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("warning"));
    assert_eq!(lines(&output).len(), 3);
    let none = view(&["heap", "--index", "7"], &file);
    assert!(!none.status.success());
    let message = String::from_utf8_lossy(&none.stderr);
    assert!(
        message.contains("no heap snapshot matches (the recording holds 3"),
        "{message}"
    );
}

#[test]
fn a_recording_whose_snapshots_hold_no_generator_says_so_rather_than_to_record_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no_generators.pdr");
    let header = proto::Header {
        pid: 77,
        start_clock_ns: START_NS,
        ..Default::default()
    };
    let mut w = Writer::new(
        std::fs::File::create(&file).unwrap(),
        header,
        WriterOptions::default(),
    )
    .unwrap();
    for at in 0..2 {
        w.record(Kind::Snapshot(proto::Snapshot {
            time_ns: START_NS + at * SECOND,
            pid: 77,
            ..Default::default()
        }))
        .unwrap();
    }
    w.finish(proto::Footer::default()).unwrap();
    let none = view(&["generators"], &file);
    assert!(!none.status.success());
    let message = String::from_utf8_lossy(&none.stderr);
    assert!(
        message.contains("none of the recording's 2 snapshots holds a generator"),
        "{message}"
    );
    assert!(
        !message.contains("record with --snapshot-every"),
        "{message}"
    );
}
