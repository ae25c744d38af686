//! A written recording reads back exactly.

mod common;

use pydeep_format::{Event, Reader, Recording};

#[test]
fn a_small_recording_reads_back_its_samples_tables_and_footer() {
    let bytes = common::small_recording(23);
    let mut recording = Recording::new(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert_eq!(recording.header().pid, 4242);
    let mut samples = Vec::new();
    let mut footer = None;
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(sample) => samples.push(sample),
            Event::Footer(f) => footer = Some(f),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(samples.len(), 23);
    for (i, sample) in samples.iter().enumerate() {
        assert_eq!(sample.time_ns, 1_000_000 + i as u64 * 1_000_000);
        assert_eq!(sample.thread, 1);
        let frames = recording.tables().stack_frames(sample.stack);
        assert_eq!(frames.len(), i % 4 + 1);
        let lines: Vec<u32> = frames
            .iter()
            .map(|f| recording.tables().frames[f].line)
            .collect();
        assert_eq!(lines, (1..=(i % 4 + 1) as u32).collect::<Vec<_>>());
    }
    let footer = footer.expect("footer");
    assert_eq!(footer.sample_count, 23);
    assert_eq!(footer.end_reason, "test");
    assert_eq!(
        recording
            .tables()
            .string(recording.tables().threads[&1].name),
        "MainThread"
    );
    // 23 samples at 5 per chunk: header chunk + 5 sample chunks + final chunk.
    assert_eq!(footer.chunk_count, 7);
    assert_eq!(recording.reader().complete_chunks(), 7);
}

/// A trace window's last batch names the functions CPython may have run
/// past it by FrameDef (`TraceEventBatch.unwatched_frame`): read back, the
/// ids lead to the code objects' names, files and first lines.
#[test]
fn a_trace_batch_reads_back_its_unwatched_functions_as_frames_of_named_code_objects() {
    use pydeep_format::proto::record::Kind;
    use pydeep_format::{proto, FrameKey, Writer, WriterOptions};
    let mut writer =
        Writer::new(Vec::new(), common::header(), WriterOptions::default()).expect("writer");
    let mut frames = Vec::new();
    for (name, qualname, line) in [("make", "make", 12), ("pick", "Box.pick", 30)] {
        let code = writer.next_code_id();
        let filename = writer.intern_string("/tmp/app.py");
        let name = writer.intern_string(name);
        let qualname = writer.intern_string(qualname);
        writer.define_code_object(proto::CodeObjectDef {
            id: code,
            filename,
            name,
            qualname,
            first_line: line,
            ..Default::default()
        });
        frames.push(writer.intern_frame(FrameKey {
            code,
            ..Default::default()
        }));
    }
    let batch = proto::TraceEventBatch {
        window_end_ns: 5_000_000,
        unwatched_functions: 3,
        unwatched_frame: frames.clone(),
        ..Default::default()
    };
    writer
        .record(Kind::TraceEvents(batch.clone()))
        .expect("record");
    let bytes = writer.finish(proto::Footer::default()).expect("finish");
    let mut recording = Recording::new(Reader::new(&bytes[..]).unwrap()).unwrap();
    let mut read = None;
    while let Some(event) = recording.next_event().unwrap() {
        if let Event::TraceEvents(batch) = event {
            read = Some(batch);
        }
    }
    let read = read.expect("the trace batch");
    assert_eq!(read, batch);
    let tables = recording.tables();
    let named: Vec<(String, String, u32)> = read
        .unwatched_frame
        .iter()
        .map(|frame| {
            let code = &tables.code_objects[&tables.frames[frame].code];
            (
                tables.string(code.qualname).to_owned(),
                tables.string(code.filename).to_owned(),
                code.first_line,
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("make".to_owned(), "/tmp/app.py".to_owned(), 12),
            ("Box.pick".to_owned(), "/tmp/app.py".to_owned(), 30)
        ]
    );
}
