//! Feeds arbitrary bytes to the `.pdr` reader: it must never panic, loop
//! forever or allocate without bound, whatever the input.
//!
//! The first byte picks how the rest is used:
//! * even: as a whole file (the magic is prepended unless present), which
//!   exercises the file header, frame headers, lengths and CRC checks;
//! * odd: as chunk payloads, split at each "\xff\xfe" and wrapped in valid
//!   frames (deflate, CRC; the last one FINAL) after a chunk holding a valid
//!   Header, so the fuzzer spends its time on record decoding, sample batches
//!   and the stack tables rather than on guessing CRCs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{encode_chunk, file_header, Event, Reader, Recording, FLAG_FINAL, MAGIC};

fn file_from_payloads(data: &[u8]) -> Vec<u8> {
    let mut file = file_header().to_vec();
    let header = proto::Record {
        kind: Some(Kind::Header(proto::Header {
            format_version: 1,
            ..Default::default()
        })),
    };
    let chunk = encode_chunk(&header.encode_length_delimited_to_vec(), 1, 0).unwrap();
    file.extend_from_slice(&chunk);
    let pieces: Vec<&[u8]> = split(data);
    for (i, piece) in pieces.iter().enumerate() {
        let flags = if i + 1 == pieces.len() { FLAG_FINAL } else { 0 };
        file.extend_from_slice(&encode_chunk(piece, 1, flags).unwrap());
    }
    file
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(2).position(|w| w == b"\xff\xfe") {
        pieces.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    pieces.push(rest);
    pieces
}

fn read(input: &[u8]) {
    if let Ok(mut reader) = Reader::new(input) {
        while let Ok(Some(_chunk)) = reader.next_chunk() {}
    }
    let Ok(reader) = Reader::new(input) else {
        return;
    };
    let Ok(mut recording) = Recording::new(reader) else {
        return;
    };
    let mut events = 0u32;
    while let Ok(Some(event)) = recording.next_event() {
        if let Event::Sample(sample) = event {
            if events < 64 {
                let _ = recording.tables().stack_frames(sample.stack);
            }
        }
        events = events.saturating_add(1);
    }
    for &id in recording.tables().stacks.keys().take(64) {
        let _ = recording.tables().stack_frames(id);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        read(&file_from_payloads(rest));
    } else if rest.starts_with(&MAGIC) {
        read(rest);
    } else {
        let mut file = file_header().to_vec();
        file.extend_from_slice(rest);
        read(&file);
    }
});
