//! verify and summarize, the library side of `pydeep verify` and `pydeep info`.

mod common;

use pydeep_format::{summarize, verify};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_complete_file_verifies_and_summarizes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::small_recording(23);
    let path = write(&dir, "ok.pdr", &bytes);
    let report = verify(&path);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.samples, 23);
    assert_eq!(report.chunks, 7);
    assert_eq!(report.bytes_readable, bytes.len() as u64);
    assert!(report.to_string().contains("OK"));

    let summary = summarize(&path).unwrap();
    assert!(summary.complete);
    assert_eq!(summary.samples, 23);
    assert_eq!(summary.threads, 1);
    assert_eq!(summary.chunks, 7);
    assert_eq!(summary.records["sample_batch"], 5);
    assert_eq!(summary.records["thread"], 1);
    // Samples 1 ms apart from the start clock: the last at 23 ms.
    assert_eq!(summary.duration_ns, 22_000_000);
    assert_eq!(summary.file_size, bytes.len() as u64);
    let text = summary.to_string();
    for expected in [
        "complete",
        "pid 4242",
        "python3 app.py",
        "23 in 1 threads",
        "bytes/sample",
        "2025-11-24",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn a_truncated_file_says_where_and_how_much_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = common::small_recording(23);
    let path = write(&dir, "cut.pdr", &bytes[..bytes.len() - 10]);
    let report = verify(&path);
    assert!(!report.is_valid());
    let problem = report.problem.clone().expect("a problem");
    assert!(problem.message.contains("truncated"), "{problem}");
    assert_eq!(problem.offset, report.bytes_readable);
    assert_eq!(report.chunks, 6, "all but the final chunk");
    assert_eq!(report.samples, 23, "the samples were all in earlier chunks");
    let text = report.to_string();
    assert!(
        text.contains("INVALID") && text.contains("readable"),
        "{text}"
    );

    let summary = summarize(&path).unwrap();
    assert!(!summary.complete);
    assert_eq!(summary.samples, 23);
    assert!(summary.to_string().contains("INCOMPLETE"));
}

#[test]
fn a_corrupt_chunk_is_reported_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = common::small_recording(23);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let path = write(&dir, "bad.pdr", &bytes);
    let report = verify(&path);
    assert!(!report.is_valid());
    let problem = report.problem.expect("a problem");
    assert!(problem.offset <= middle as u64 && problem.offset >= 16);
    assert_eq!(problem.offset, report.bytes_readable);
    assert!(
        problem.message.contains("corrupt") || problem.message.contains("truncated"),
        "{}",
        problem.message
    );
}

#[test]
fn a_file_that_is_not_a_recording_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "text.pdr", b"hello, world, this is not a recording");
    assert!(summarize(&path).is_err());
    let report = verify(&path);
    assert!(!report.is_valid());
    assert!(report
        .problem
        .unwrap()
        .message
        .contains("not a pydeep recording"));
}

#[test]
fn a_sample_of_an_undefined_stack_fails_verification() {
    use pydeep_format::{proto, Writer, WriterOptions};
    let mut writer = Writer::new(Vec::new(), common::header(), WriterOptions::default()).unwrap();
    writer.define_thread(proto::ThreadDef {
        id: 1,
        ..Default::default()
    });
    writer.sample(5, 1, 99, 0).unwrap();
    let bytes = writer.finish(proto::Footer::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = verify(&write(&dir, "dangling.pdr", &bytes));
    assert!(!report.is_valid());
    assert!(report.problem.unwrap().message.contains("undefined stack"));
}

#[test]
fn a_definition_after_its_first_use_is_reported_at_the_chunk_of_the_use() {
    use prost::Message;
    use pydeep_format::proto::{self, record::Kind};
    use pydeep_format::{encode_chunk, file_header, FLAG_FINAL};

    fn payload(kinds: Vec<Kind>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for kind in kinds {
            proto::Record { kind: Some(kind) }
                .encode_length_delimited(&mut bytes)
                .unwrap();
        }
        bytes
    }
    let mut file = file_header().to_vec();
    file.extend(encode_chunk(&payload(vec![Kind::Header(common::header())]), 6, 0).unwrap());
    let use_offset = file.len() as u64;
    let samples = proto::SampleBatch {
        time_delta_ns: vec![1],
        thread: vec![1],
        stack: vec![1],
        flags: vec![0],
        ..Default::default()
    };
    let chunk = payload(vec![
        Kind::Thread(proto::ThreadDef {
            id: 1,
            ..Default::default()
        }),
        Kind::Samples(samples),
    ]);
    file.extend(encode_chunk(&chunk, 6, 0).unwrap());
    let chunk = payload(vec![
        Kind::CodeObject(proto::CodeObjectDef {
            id: 1,
            ..Default::default()
        }),
        Kind::Frame(proto::FrameDef {
            id: 1,
            code: 1,
            ..Default::default()
        }),
        Kind::Stack(proto::StackDef {
            id: 1,
            parent: 0,
            frames: vec![1],
        }),
        Kind::Footer(proto::Footer {
            sample_count: 1,
            chunk_count: 3,
            ..Default::default()
        }),
    ]);
    file.extend(encode_chunk(&chunk, 6, FLAG_FINAL).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let report = verify(&write(&dir, "late.pdr", &file));
    assert!(!report.is_valid(), "{report}");
    let problem = report.problem.unwrap();
    assert_eq!(problem.offset, use_offset);
    assert!(
        problem.message.contains("undefined stack 1"),
        "{}",
        problem.message
    );

    // Defined in the same chunk instead, it is valid.
    let mut fixed = file_header().to_vec();
    fixed.extend(encode_chunk(&payload(vec![Kind::Header(common::header())]), 6, 0).unwrap());
    let chunk = payload(vec![
        Kind::Thread(proto::ThreadDef {
            id: 1,
            ..Default::default()
        }),
        Kind::Samples(proto::SampleBatch {
            time_delta_ns: vec![1],
            thread: vec![1],
            stack: vec![1],
            flags: vec![0],
            ..Default::default()
        }),
        Kind::CodeObject(proto::CodeObjectDef {
            id: 1,
            ..Default::default()
        }),
        Kind::Frame(proto::FrameDef {
            id: 1,
            code: 1,
            ..Default::default()
        }),
        Kind::Stack(proto::StackDef {
            id: 1,
            parent: 0,
            frames: vec![1],
        }),
    ]);
    fixed.extend(encode_chunk(&chunk, 6, 0).unwrap());
    let footer = payload(vec![Kind::Footer(proto::Footer {
        sample_count: 1,
        chunk_count: 3,
        ..Default::default()
    })]);
    fixed.extend(encode_chunk(&footer, 6, FLAG_FINAL).unwrap());
    let report = verify(&write(&dir, "fixed.pdr", &fixed));
    assert!(report.is_valid(), "{report}");
}
