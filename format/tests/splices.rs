//! Chunks that are each intact but do not belong where they stand: a body
//! spliced from another recording, chunks reordered, duplicated or left
//! out, a header swapped for an older recording's. Every chunk keeps a
//! valid CRC (whole chunks are moved; a rewritten header chunk gets its
//! checksum recomputed), so only the chunk sequence can tell (issue #14
//! item 8). Each must fail `verify` with a message naming the problem, and
//! stop `Recording` and `summarize` at the chunk that does not belong.

mod common;

use prost::Message;
use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{encode_chunk, summarize, verify, Event, Reader, Recording};

/// A file cut into its 16-byte file header and its chunks (frame included).
struct Pieces {
    file_header: Vec<u8>,
    chunks: Vec<Vec<u8>>,
}

fn pieces(bytes: &[u8]) -> Pieces {
    let mut chunks = Vec::new();
    let mut at = 16;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        chunks.push(bytes[at..at + 16 + len].to_vec());
        at += 16 + len;
    }
    assert_eq!(at, bytes.len());
    Pieces {
        file_header: bytes[..16].to_vec(),
        chunks,
    }
}

fn join(file_header: &[u8], chunks: &[&Vec<u8>]) -> Vec<u8> {
    let mut out = file_header.to_vec();
    for chunk in chunks {
        out.extend_from_slice(chunk);
    }
    out
}

/// The problem `verify` reports for `bytes` (which must be invalid).
fn problem(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spliced.pdr");
    std::fs::write(&path, bytes).unwrap();
    let report = verify(&path);
    assert!(!report.is_valid(), "passed verify: {report}");
    let summary = summarize(&path).unwrap();
    assert!(!summary.complete, "info calls it complete: {summary}");
    report.problem.expect("a problem").message
}

fn recording(samples: u64) -> Pieces {
    pieces(&common::small_recording(samples))
}

#[test]
fn an_untouched_recording_passes() {
    let a = recording(23);
    let all: Vec<&Vec<u8>> = a.chunks.iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.pdr");
    std::fs::write(&path, join(&a.file_header, &all)).unwrap();
    let report = verify(&path);
    assert!(report.is_valid(), "{report}");
}

#[test]
fn one_recordings_header_with_anothers_body_fails() {
    let a = recording(23);
    let b = recording(23);
    let mut chunks = vec![&a.chunks[0]];
    chunks.extend(b.chunks[1..].iter());
    let message = problem(&join(&a.file_header, &chunks));
    assert!(
        message.contains("chunk 1 belongs to another recording")
            && message.contains("spliced from two recordings"),
        "{message}"
    );
}

#[test]
fn a_second_recordings_chunks_appended_in_place_of_the_tail_fail() {
    let a = recording(23);
    let b = recording(23);
    // A's first chunks, then B's from the same position on.
    let mut chunks: Vec<&Vec<u8>> = a.chunks[..3].iter().collect();
    chunks.extend(b.chunks[3..].iter());
    let message = problem(&join(&a.file_header, &chunks));
    assert!(
        message.contains("chunk 3 belongs to another recording"),
        "{message}"
    );
}

#[test]
fn reordered_chunks_fail() {
    let a = recording(23);
    let c = &a.chunks;
    let chunks = vec![&c[0], &c[2], &c[1], &c[3], &c[4], &c[5], &c[6]];
    let message = problem(&join(&a.file_header, &chunks));
    assert!(
        message.contains("chunk 1 is numbered 2") && message.contains("out of order"),
        "{message}"
    );
}

#[test]
fn a_duplicated_chunk_fails() {
    let a = recording(23);
    let c = &a.chunks;
    let chunks = vec![&c[0], &c[1], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6]];
    let message = problem(&join(&a.file_header, &chunks));
    assert!(message.contains("chunk 2 is chunk 1 again"), "{message}");
}

#[test]
fn a_chunk_left_out_fails() {
    let a = recording(23);
    let c = &a.chunks;
    let chunks = vec![&c[0], &c[1], &c[3], &c[4], &c[5], &c[6]];
    let message = problem(&join(&a.file_header, &chunks));
    assert!(message.contains("chunk 2 is missing"), "{message}");
}

#[test]
fn a_cut_tail_is_truncation_not_a_splice() {
    let a = recording(23);
    let chunks: Vec<&Vec<u8>> = a.chunks[..4].iter().collect();
    let message = problem(&join(&a.file_header, &chunks));
    assert!(message.contains("truncated"), "{message}");
}

/// `pieces`' header chunk with its Header's `recording_id` replaced (the
/// CRC recomputed), as an older pydeep would have written it.
fn header_chunk_with_id(chunk: &[u8], recording_id: u64) -> Vec<u8> {
    let bytes = join(&pydeep_format::file_header(), &[&chunk.to_vec()]);
    let mut reader = Reader::new(&bytes[..]).expect("reader");
    let read = reader.next_chunk().unwrap().expect("header chunk");
    let Some(Kind::Header(mut header)) = read.records[0].kind.clone() else {
        panic!("no header");
    };
    header.recording_id = recording_id;
    let record = proto::Record {
        kind: Some(Kind::Header(header)),
    };
    encode_chunk(&record.encode_length_delimited_to_vec(), 6, 0).unwrap()
}

#[test]
fn an_older_recordings_header_on_a_marked_body_fails() {
    let a = recording(23);
    let old_header = header_chunk_with_id(&a.chunks[0], 0);
    let mut chunks = vec![&old_header];
    chunks.extend(a.chunks[1..].iter());
    let message = problem(&join(&a.file_header, &chunks));
    assert!(message.contains("header names no recording"), "{message}");
}

#[test]
fn a_header_rewritten_with_another_id_fails() {
    let a = recording(23);
    let forged = header_chunk_with_id(&a.chunks[0], 0x1234);
    let mut chunks = vec![&forged];
    chunks.extend(a.chunks[1..].iter());
    let message = problem(&join(&a.file_header, &chunks));
    assert!(
        message.contains("belongs to another recording"),
        "{message}"
    );
}

#[test]
fn the_viewer_reads_a_spliced_file_only_up_to_the_splice() {
    let a = recording(23);
    let b = recording(23);
    let mut chunks: Vec<&Vec<u8>> = a.chunks[..3].iter().collect();
    chunks.extend(b.chunks[3..].iter());
    let bytes = join(&a.file_header, &chunks);
    let mut recording = Recording::new(Reader::new(&bytes[..]).unwrap()).unwrap();
    let mut samples = 0;
    let error = loop {
        match recording.next_event() {
            Ok(Some(Event::Sample(_))) => samples += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("read to the end of a spliced file"),
            Err(error) => break error,
        }
    };
    // Chunks 1 and 2 hold 5 samples each.
    assert_eq!(samples, 10);
    assert!(error.to_string().contains("another recording"), "{error}");
}
