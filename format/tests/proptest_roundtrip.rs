//! Property: whatever a random recording holds, the reader returns exactly it.

mod common;

use std::collections::HashMap;

use proptest::prelude::*;
use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{
    tick_interval_of, Event, FrameKey, Reader, Recording, Sample, Writer, WriterOptions,
};

/// One step of a random recording.
#[derive(Debug, Clone)]
enum Op {
    /// A sample at an absolute time, of thread index, stack index, with flags.
    Sample(u64, usize, usize, u32),
    /// A tick of a sampler on a schedule: `ticks` intervals after the
    /// previous tick, `lateness` ns late, one sample per (thread, stack,
    /// flags), all stamped with the tick's time as the agent does.
    Tick(u64, u64, Vec<(usize, usize, u32)>),
    /// A `PROCESS_RATE_CHANGED` event with this rate in millihertz: the
    /// schedule (and the writer's grid) changes interval.
    RateChange(u64, i32),
    /// `Writer::set_tick_interval` with a different interval than the
    /// schedule's (times stay exact, just larger).
    SetInterval(u64),
    Snapshot(u64, Vec<String>, u64),
    Process(u64, u32, i32, String),
    Trace(Vec<(u64, u32, u64)>),
    RenameThread(usize, String),
    Flush,
    MaybeFlush,
}

#[derive(Debug, Clone)]
struct Script {
    strings: Vec<String>,
    codes: Vec<(String, u32, Vec<u8>, Vec<String>)>,
    frames: Vec<(usize, u32, u32, bool, bool)>,
    stacks: Vec<Vec<usize>>,
    threads: Vec<(u64, String, bool)>,
    sources: Vec<(String, Option<Vec<u8>>)>,
    ops: Vec<Op>,
    footer: (u64, u64, String),
    max_samples_per_chunk: usize,
    compression_level: u32,
    prefix_sharing: bool,
    /// The header's sampling rate (None: no sampling config, version-1 deltas).
    rate_hz: Option<f64>,
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(".{0,12}", 0..8),
        prop::collection::vec(
            (".{0,10}", any::<u32>(), prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(".{0,6}", 0..4)),
            1..6,
        ),
        prop::collection::vec((any::<usize>(), any::<u32>(), 0u32..5000, any::<bool>(), any::<bool>()), 1..20),
        prop::collection::vec(prop::collection::vec(any::<usize>(), 0..40), 1..30),
        prop::collection::vec((any::<u64>(), ".{0,8}", any::<bool>()), 1..5),
        prop::collection::vec(
            (".{1,10}", prop::option::of(prop::collection::vec(any::<u8>(), 0..64))),
            0..4,
        ),
    )
        .prop_flat_map(|(strings, codes, frames, stacks, threads, sources)| {
            let op = prop_oneof![
                8 => (any::<u64>(), any::<usize>(), any::<usize>(), 0u32..32)
                    .prop_map(|(t, th, st, fl)| Op::Sample(t, th, st, fl)),
                8 => (1u64..5_000_000, any::<usize>(), any::<usize>(), 0u32..32)
                    .prop_map(|(t, th, st, fl)| Op::Sample(t, th, st, fl)),
                1 => (any::<u64>(), prop::collection::vec(".{0,8}", 0..3), any::<u64>())
                    .prop_map(|(t, w, p)| Op::Snapshot(t, w, p)),
                1 => (any::<u64>(), any::<u32>(), any::<i32>(), ".{0,8}")
                    .prop_map(|(t, p, c, d)| Op::Process(t, p, c, d)),
                1 => prop::collection::vec((any::<u64>(), any::<u32>(), any::<u64>()), 0..5).prop_map(Op::Trace),
                1 => (any::<usize>(), ".{0,8}").prop_map(|(i, n)| Op::RenameThread(i, n)),
                12 => (0u64..4, prop_oneof![0u64..2_000, 0u64..2_000_000, any::<u64>()],
                       prop::collection::vec((any::<usize>(), any::<usize>(), 0u32..32), 0..4))
                    .prop_map(|(k, late, samples)| Op::Tick(k, late, samples)),
                1 => (any::<u64>(), prop_oneof![1i32..200_000_000, any::<i32>()])
                    .prop_map(|(t, mhz)| Op::RateChange(t, mhz)),
                1 => prop_oneof![Just(0u64), 1u64..10_000_000, any::<u64>()].prop_map(Op::SetInterval),
                1 => Just(Op::Flush),
                1 => Just(Op::MaybeFlush),
            ];
            (
                Just((strings, codes, frames, stacks, threads, sources)),
                prop::collection::vec(op, 0..120),
                (any::<u64>(), any::<u64>(), ".{0,10}"),
                1usize..40,
                0u32..10,
                any::<bool>(),
                prop_oneof![
                    Just(None),
                    Just(Some(1000.0)),
                    Just(Some(100_000.0)),
                    (1e-3f64..1e7).prop_map(Some),
                    Just(Some(0.0)),
                ],
            )
        })
        .prop_map(
            |((strings, codes, frames, stacks, threads, sources), ops, footer, max_samples_per_chunk, compression_level, prefix_sharing, rate_hz)| Script {
                strings,
                sources,
                codes,
                frames,
                stacks,
                threads,
                ops,
                footer,
                max_samples_per_chunk,
                compression_level,
                prefix_sharing,
                rate_hz,
            },
        )
}

fn assert_defined(known: bool) {
    assert!(known, "define_source_file returned an id it never defined");
}

/// What the reader must return.
struct Expected {
    events: Vec<Event>,
    strings: HashMap<u64, String>,
    code_objects: HashMap<u64, proto::CodeObjectDef>,
    frames: HashMap<u64, proto::FrameDef>,
    stacks: HashMap<u64, Vec<u64>>,
    threads: HashMap<u32, proto::ThreadDef>,
    source_files: HashMap<u64, proto::SourceFileDef>,
    bytes: Vec<u8>,
}

fn write(script: &Script) -> Expected {
    let options = WriterOptions {
        // Never by time: the test must not depend on timing.
        flush_interval: std::time::Duration::from_secs(3600),
        max_samples_per_chunk: script.max_samples_per_chunk,
        compression_level: script.compression_level,
    };
    let mut header = common::header();
    // Times of the first samples are also random: start anywhere.
    header.start_clock_ns = script.footer.0 / 3;
    header.sampling = script.rate_hz.map(|rate_hz| proto::SamplingConfig {
        rate_hz,
        ..Default::default()
    });
    // The sampler's schedule: tick n due at origin + n * interval.
    let mut interval = script.rate_hz.map_or(1_000_000, tick_interval_of).max(1);
    let mut due = header
        .start_clock_ns
        .wrapping_add(script.footer.1 % interval);
    let mut writer = Writer::new(Vec::new(), header, options).unwrap();
    writer.set_stack_prefix_sharing(script.prefix_sharing);
    let mut expected = Expected {
        events: Vec::new(),
        strings: HashMap::new(),
        code_objects: HashMap::new(),
        frames: HashMap::new(),
        stacks: HashMap::new(),
        threads: HashMap::new(),
        source_files: HashMap::new(),
        bytes: Vec::new(),
    };
    let intern = |writer: &mut Writer<Vec<u8>>, s: &str, strings: &mut HashMap<u64, String>| {
        let id = writer.intern_string(s);
        if id != 0 {
            strings.insert(id, s.to_owned());
        }
        id
    };
    for s in &script.strings {
        intern(&mut writer, s, &mut expected.strings);
    }
    for (path, content) in &script.sources {
        let path = intern(&mut writer, path, &mut expected.strings);
        let first = !expected.source_files.values().any(|f| f.path == path);
        let id = writer.define_source_file(path, content.clone());
        if first {
            expected.source_files.insert(
                id,
                proto::SourceFileDef {
                    id,
                    path,
                    content: content.clone().unwrap_or_default(),
                    missing: content.is_none(),
                    first_line: 0,
                    missing_reason: String::new(),
                },
            );
        }
        // A path is embedded once: defining it again returns the same id.
        assert_defined(expected.source_files.contains_key(&id));
        // A span of the same path is a definition of its own, with an id
        // no other source definition has.
        if let Some(content) = content {
            let lines = content.len() as u32 % 7;
            let id = writer.define_source_span(path, lines + 1, content.clone());
            assert!(
                !expected.source_files.contains_key(&id),
                "define_source_span reused source id {id}"
            );
            expected.source_files.insert(
                id,
                proto::SourceFileDef {
                    id,
                    path,
                    content: content.clone(),
                    missing: false,
                    first_line: lines + 1,
                    missing_reason: String::new(),
                },
            );
        }
    }
    let mut code_ids = Vec::new();
    for (name, first_line, bytecode, consts) in &script.codes {
        let id = writer.next_code_id();
        let name = intern(&mut writer, name, &mut expected.strings);
        let def = proto::CodeObjectDef {
            id,
            name,
            qualname: name,
            first_line: *first_line,
            bytecode: bytecode.clone(),
            consts: consts.clone(),
            line_table_kind: proto::LineTableKind::LineTableLocations as i32,
            ..Default::default()
        };
        writer.define_code_object(def.clone());
        expected.code_objects.insert(id, def);
        code_ids.push(id);
    }
    let mut frame_ids = Vec::new();
    for &(code, offset, line, is_generator, is_shim) in &script.frames {
        let key = FrameKey {
            code: code_ids[code % code_ids.len()],
            instruction_offset: offset,
            line,
            is_generator,
            is_shim,
        };
        let id = writer.intern_frame(key);
        expected.frames.insert(
            id,
            proto::FrameDef {
                id,
                code: key.code,
                instruction_offset: offset,
                line,
                is_generator,
                is_shim,
            },
        );
        frame_ids.push(id);
    }
    let mut thread_ids = Vec::new();
    for (index, (native_id, name, is_main)) in script.threads.iter().enumerate() {
        let id = index as u32 + 1;
        let name = intern(&mut writer, name, &mut expected.strings);
        let def = proto::ThreadDef {
            id,
            pid: 4242,
            native_id: *native_id,
            name,
            is_main: *is_main,
            ..Default::default()
        };
        writer.define_thread(def);
        expected.threads.insert(id, def);
        thread_ids.push(id);
    }
    let mut stack_ids = Vec::new();
    let mut last_time = None;
    let mut snapshots = 0;
    for op in &script.ops {
        match op {
            Op::Sample(time, thread, stack, flags) => {
                // Stacks are interned lazily, at first use, as the agent does.
                let frames: Vec<u64> = script.stacks[stack % script.stacks.len()]
                    .iter()
                    .map(|f| frame_ids[f % frame_ids.len()])
                    .collect();
                let stack = writer.intern_stack(&frames);
                if stack != 0 {
                    expected.stacks.insert(stack, frames);
                }
                stack_ids.push(stack);
                let thread = thread_ids[thread % thread_ids.len()];
                writer.sample(*time, thread, stack, *flags).unwrap();
                last_time = Some(*time);
                expected.events.push(Event::Sample(Sample {
                    time_ns: *time,
                    thread,
                    stack,
                    flags: *flags,
                    weight: 1,
                }));
            }
            Op::Tick(ticks, lateness, samples) => {
                due = due.wrapping_add(ticks.wrapping_mul(interval));
                let time = due.wrapping_add(*lateness);
                for &(thread, stack, flags) in samples {
                    let frames: Vec<u64> = script.stacks[stack % script.stacks.len()]
                        .iter()
                        .map(|f| frame_ids[f % frame_ids.len()])
                        .collect();
                    let stack = writer.intern_stack(&frames);
                    if stack != 0 {
                        expected.stacks.insert(stack, frames);
                    }
                    stack_ids.push(stack);
                    let thread = thread_ids[thread % thread_ids.len()];
                    // As the agent weighs them: the ticks since the last
                    // one taken (more than 1 after missed ticks).
                    let weight = (*ticks % 5).max(1) as u32;
                    writer
                        .weighted_sample(time, thread, stack, flags, weight)
                        .unwrap();
                    last_time = Some(time);
                    expected.events.push(Event::Sample(Sample {
                        time_ns: time,
                        thread,
                        stack,
                        flags,
                        weight,
                    }));
                }
            }
            Op::RateChange(time, millihertz) => {
                let event = proto::ProcessEvent {
                    time_ns: *time,
                    pid: 4242,
                    kind: proto::ProcessEventKind::ProcessRateChanged as i32,
                    code: *millihertz,
                    ..Default::default()
                };
                writer.record(Kind::ProcessEvent(event.clone())).unwrap();
                expected.events.push(Event::Process(event));
                if *millihertz > 0 {
                    interval = tick_interval_of(f64::from(*millihertz) / 1000.0).max(1);
                }
            }
            Op::SetInterval(nanoseconds) => writer.set_tick_interval(*nanoseconds),
            Op::Snapshot(time, warnings, pause) => {
                let snapshot = proto::Snapshot {
                    time_ns: *time,
                    pid: 4242,
                    pause_ns: *pause,
                    warnings: warnings.clone(),
                    threads: vec![proto::ThreadScopes {
                        thread: 1,
                        stack: stack_ids.last().copied().unwrap_or(0),
                        frames: vec![],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                writer.record(Kind::Snapshot(snapshot.clone())).unwrap();
                snapshots += 1;
                expected.events.push(Event::Snapshot(Box::new(snapshot)));
            }
            Op::Process(time, pid, code, detail) => {
                let event = proto::ProcessEvent {
                    time_ns: *time,
                    pid: *pid,
                    kind: proto::ProcessEventKind::ProcessExited as i32,
                    code: *code,
                    detail: detail.clone(),
                    ..Default::default()
                };
                writer.record(Kind::ProcessEvent(event.clone())).unwrap();
                expected.events.push(Event::Process(event));
            }
            Op::Trace(entries) => {
                let batch = proto::TraceEventBatch {
                    time_delta_ns: entries.iter().map(|e| e.0).collect(),
                    thread: entries.iter().map(|e| e.1).collect(),
                    kind: entries
                        .iter()
                        .map(|_| proto::TraceEventKind::TraceCall as i32)
                        .collect(),
                    frame: entries.iter().map(|e| e.2).collect(),
                    ..Default::default()
                };
                writer.record(Kind::TraceEvents(batch.clone())).unwrap();
                expected.events.push(Event::TraceEvents(batch));
            }
            Op::RenameThread(thread, name) => {
                let id = thread_ids[thread % thread_ids.len()];
                let name = intern(&mut writer, name, &mut expected.strings);
                let mut def = expected.threads[&id];
                def.name = name;
                writer.define_thread(def);
                expected.threads.insert(id, def);
            }
            Op::Flush => writer.flush().unwrap(),
            Op::MaybeFlush => {
                writer.maybe_flush().unwrap();
            }
        }
    }
    let stats = writer.stats();
    let footer = proto::Footer {
        missed_ticks: script.footer.1,
        end_reason: script.footer.2.clone(),
        ..Default::default()
    };
    let bytes = writer.finish(footer.clone()).unwrap();
    let mut footer = footer;
    footer.sample_count = stats.samples;
    footer.snapshot_count = snapshots;
    // The writer counts the chunks it writes in finish too; checked against
    // the chunks the reader finds.
    footer.chunk_count = 0;
    footer.duration_ns = last_time
        .map(|t| t.saturating_sub(script.footer.0 / 3))
        .unwrap_or(0);
    expected.events.push(Event::Footer(footer));
    expected.bytes = bytes;
    expected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_random_recording_reads_back_exactly(script in script()) {
        let expected = write(&script);
        let mut recording = Recording::new(Reader::new(&expected.bytes[..]).unwrap()).unwrap();
        let mut events = Vec::new();
        while let Some(event) = recording.next_event().unwrap() {
            events.push(event);
        }
        let mut expected_events = expected.events.clone();
        if let Some(Event::Footer(footer)) = expected_events.last_mut() {
            footer.chunk_count = recording.reader().complete_chunks();
        }
        prop_assert_eq!(&events, &expected_events);
        let tables = recording.tables();
        prop_assert_eq!(&tables.strings, &expected.strings);
        prop_assert_eq!(&tables.code_objects, &expected.code_objects);
        prop_assert_eq!(&tables.frames, &expected.frames);
        prop_assert_eq!(&tables.threads, &expected.threads);
        prop_assert_eq!(&tables.source_files, &expected.source_files);
        for (id, frames) in &expected.stacks {
            prop_assert_eq!(&tables.stack_frames(*id), frames);
        }
        prop_assert!(recording.footer().is_some());
        prop_assert!(recording.reader().saw_final());
        // verify agrees, through a real file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.pdr");
        std::fs::write(&path, &expected.bytes).unwrap();
        let report = pydeep_format::verify(&path);
        prop_assert!(report.is_valid(), "{}", report);
    }
}
