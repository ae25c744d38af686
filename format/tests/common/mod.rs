//! Helpers shared by the format tests.
#![allow(dead_code)]

use pydeep_format::proto;
use pydeep_format::{FrameKey, Writer, WriterOptions};

/// A header with a few fields set.
pub fn header() -> proto::Header {
    proto::Header {
        pydeep_version: "0.1.0".into(),
        pid: 4242,
        argv: vec!["python3".into(), "app.py".into()],
        executable: "/usr/bin/python3".into(),
        start_clock_ns: 1_000_000,
        start_unix_ns: 1_764_000_000_000_000_000,
        clock: proto::ClockKind::ClockMonotonic as i32,
        mode: "record".into(),
        ..Default::default()
    }
}

/// Writes a small multi-chunk recording (one chunk per 5 samples) into memory.
pub fn small_recording(samples: u64) -> Vec<u8> {
    let options = WriterOptions {
        max_samples_per_chunk: 5,
        ..WriterOptions::default()
    };
    let mut writer = Writer::new(Vec::new(), header(), options).expect("writer");
    let thread_name = writer.intern_string("MainThread");
    writer.define_thread(proto::ThreadDef {
        id: 1,
        pid: 4242,
        name: thread_name,
        is_main: true,
        ..Default::default()
    });
    let code = writer.next_code_id();
    let filename = writer.intern_string("app.py");
    let name = writer.intern_string("work");
    writer.define_code_object(proto::CodeObjectDef {
        id: code,
        filename,
        name,
        qualname: name,
        first_line: 1,
        ..Default::default()
    });
    for i in 0..samples {
        let frames: Vec<u64> = (0..=(i % 4))
            .map(|depth| {
                writer.intern_frame(FrameKey {
                    code,
                    instruction_offset: depth as u32 * 2,
                    line: depth as u32 + 1,
                    ..Default::default()
                })
            })
            .collect();
        let stack = writer.intern_stack(&frames);
        writer
            .sample(
                1_000_000 + i * 1_000_000,
                1,
                stack,
                proto::SampleFlag::Active as u32,
            )
            .expect("sample");
    }
    writer
        .finish(proto::Footer {
            end_reason: "test".into(),
            ..Default::default()
        })
        .expect("finish")
}
