//! Every snapshot output (`scopes`, `generators`, `objects`, `heap`,
//! `heap --growth`, text and JSON) on hostile recordings: snapshots with
//! random and dangling ids, unknown enum values, cyclic object graphs,
//! counts near `u64::MAX`, and stack tables with cycles. Nothing may panic
//! or hang, and each output shows exactly the snapshots holding its
//! content.

use std::io;

use proptest::prelude::*;
use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{Reader, Recording, Writer, WriterOptions};
use pydeep_view::input::Input;
use pydeep_view::snapshots::{for_each, Content, Selection};
use pydeep_view::{heap, objects, scopes};

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0..8u64, any::<u64>()]
}

fn variable() -> impl Strategy<Value = proto::Variable> {
    (
        id(),
        any::<i32>(),
        any::<u64>(),
        id(),
        ".{0,8}",
        any::<bool>(),
    )
        .prop_map(
            |(name, kind, address, type_name, value, unbound)| proto::Variable {
                name,
                kind,
                address,
                type_name,
                // Garbage too: attributes naming ids that do not exist.
                attributes: vec![proto::Variable {
                    name: type_name,
                    address,
                    type_name: name,
                    ..Default::default()
                }],
                length: unbound.then_some(address),
                cell: address / 2,
                value,
                unbound,
                ..Default::default()
            },
        )
}

fn thread() -> impl Strategy<Value = proto::ThreadScopes> {
    (
        any::<u32>(),
        id(),
        prop::collection::vec(
            (
                id(),
                prop::collection::vec(variable(), 0..4),
                prop::collection::vec(variable(), 0..2),
            ),
            0..4,
        ),
    )
        .prop_map(|(thread, stack, frames)| proto::ThreadScopes {
            thread: thread % 4,
            stack,
            frames: frames
                .into_iter()
                .map(|(frame, locals, cells)| proto::FrameScopes {
                    frame,
                    locals,
                    cells,
                    // Garbage too: a frame naming one that is not there.
                    globals_listed_at: frame,
                    ..Default::default()
                })
                .collect(),
            activity: (thread % 5) as i32,
            holds_gil: thread % 2 == 0,
        })
}

fn snapshot() -> impl Strategy<Value = proto::Snapshot> {
    (
        any::<u64>(),
        prop::collection::vec(thread(), 0..3),
        prop::collection::vec((0..6u64, id(), any::<u64>(), 0..3u32), 0..6),
        prop::collection::vec((0..6u64, 0..6u64, ".{0,4}"), 0..10),
        prop::collection::vec((any::<u64>(), any::<i32>(), any::<i32>(), id(), id()), 0..3),
        prop::collection::vec(
            (any::<u64>(), id(), prop::collection::vec(0..6u64, 0..3)),
            0..3,
        ),
        prop::option::of(prop::collection::vec(
            (id(), any::<u64>(), any::<u64>()),
            0..5,
        )),
    )
        .prop_map(
            |(time_ns, threads, nodes, edges, generators, tasks, heap)| proto::Snapshot {
                time_ns,
                pid: 1,
                pause_ns: time_ns % 1_000_000,
                threads,
                objects: nodes
                    .into_iter()
                    .map(|(address, type_name, size, depth)| proto::ObjectNode {
                        address,
                        type_name,
                        size,
                        // Garbage too: a claimed size beside a size.
                        implausible_size: size / 3,
                        refcount: -1,
                        value: String::new(),
                        depth,
                        retained_size: size.wrapping_mul(3),
                    })
                    .collect(),
                edges: edges
                    .into_iter()
                    .map(|(from, to, label)| proto::ObjectEdge {
                        from,
                        to,
                        kind: 99,
                        label,
                    })
                    .collect(),
                generators: generators
                    .into_iter()
                    .map(
                        |(address, kind, state, qualname, frame)| proto::GeneratorInfo {
                            address,
                            kind,
                            state,
                            qualname,
                            frame,
                            ..Default::default()
                        },
                    )
                    .collect(),
                tasks: tasks
                    .into_iter()
                    .map(|(address, stack, awaited_by)| proto::AsyncTaskInfo {
                        address,
                        stack,
                        awaited_by,
                        ..Default::default()
                    })
                    .collect(),
                heap: heap.map(|types| proto::HeapSummary {
                    types: types
                        .into_iter()
                        .map(|(type_name, count, bytes)| proto::TypeCount {
                            type_name: type_name % 4,
                            count,
                            bytes,
                            implausible: count / 2,
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
}

/// A recording with hostile tables (a stack whose parent chain loops, a
/// frame of a missing code object, a thread) and `snapshots`.
fn recording(snapshots: &[proto::Snapshot]) -> Vec<u8> {
    let header = proto::Header {
        start_clock_ns: 1_000,
        ..Default::default()
    };
    let mut w = Writer::new(Vec::new(), header, WriterOptions::default()).unwrap();
    w.intern_string("Node");
    w.intern_string("list");
    for kind in [
        Kind::Frame(proto::FrameDef {
            id: 1,
            code: 77,
            line: 3,
            ..Default::default()
        }),
        Kind::Stack(proto::StackDef {
            id: 1,
            parent: 2,
            frames: vec![1, 5],
        }),
        Kind::Stack(proto::StackDef {
            id: 2,
            parent: 1,
            frames: vec![1],
        }),
        Kind::Thread(proto::ThreadDef {
            id: 1,
            name: 1,
            is_main: true,
            ..Default::default()
        }),
    ] {
        w.record(kind).unwrap();
    }
    for snapshot in snapshots {
        w.record(Kind::Snapshot(snapshot.clone())).unwrap();
    }
    w.finish(proto::Footer::default()).unwrap()
}

fn open(bytes: &[u8]) -> Input<&[u8]> {
    Input::new(
        Recording::new(Reader::new(bytes).unwrap()).unwrap(),
        "garbage".into(),
    )
}

/// Runs every output of `content` over the recording; returns how many
/// snapshots were shown (0 when none matched).
fn show(bytes: &[u8], content: Content, selection: &Selection, root: Option<u64>) -> usize {
    let mut input = open(bytes);
    let mut growth = heap::Growth::default();
    let shown = for_each(
        &mut input,
        content,
        selection,
        |tables, header, selected| {
            let mut sink = io::sink();
            match content {
                Content::Scopes => {
                    let every = scopes::ScopesView {
                        threads: Vec::new(),
                        asynchronous: true,
                    };
                    let _ = serde_json::to_string(&scopes::scopes_json(
                        tables, header, selected, &every,
                    ));
                    let some = scopes::ScopesView {
                        threads: vec!["1".to_string(), "MainThread".to_string()],
                        asynchronous: false,
                    };
                    let _ = scopes::scopes_json(tables, header, selected, &some);
                    scopes::write_scopes_text(&mut sink, tables, header, selected, &every)?;
                    scopes::write_scopes_text(&mut sink, tables, header, selected, &some)
                }
                Content::Generators => {
                    let _ =
                        serde_json::to_string(&scopes::generators_json(tables, header, selected));
                    scopes::write_generators_text(&mut sink, tables, header, selected)
                }
                Content::Objects => {
                    let _ = objects::graph_json(tables, header, selected, root);
                    let _ = objects::graph_dot(tables, selected, None);
                    Ok(())
                }
                Content::Heap => {
                    let _ = heap::heap_json(tables, header, selected, 0);
                    heap::write_heap_text(&mut sink, tables, header, selected, 3)?;
                    if let Some(step) = growth.next(tables, selected) {
                        let _ = heap::growth_json(header, &step, 0);
                        heap::write_growth_text(&mut sink, header, &step, 2)?;
                    }
                    Ok(())
                }
            }
        },
    );
    shown.unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn snapshot_outputs_survive_hostile_recordings(
        snapshots in prop::collection::vec(snapshot(), 0..6),
        at in prop::option::of(any::<u64>()),
        index in prop::collection::vec(0..8usize, 0..2),
        root in prop::option::of(0..6u64),
    ) {
        let bytes = recording(&snapshots);
        for content in [Content::Scopes, Content::Generators, Content::Objects, Content::Heap] {
            let holding = snapshots.iter().filter(|s| content.in_snapshot(s)).count();
            prop_assert_eq!(show(&bytes, content, &Selection::default(), root), holding);
            let chosen = Selection { at_ns: at, indexes: index.clone(), pids: vec![] };
            let shown = show(&bytes, content, &chosen, root);
            prop_assert!(shown <= holding.max(1));
        }
    }
}
