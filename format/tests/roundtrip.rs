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
