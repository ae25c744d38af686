//! Shared input shaping of pydeep's fuzz targets: arbitrary bytes become a
//! `.pdr` file, either as they are or as chunk payloads wrapped in valid
//! frames, so the fuzzer spends its time past the CRC checks.

use prost::Message;
use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{file_header, FLAG_FINAL, MAGIC};

/// The file a fuzz input stands for. The first byte picks how the rest is used:
/// * even: as a whole file (the magic is prepended unless present), which
///   exercises the file header, frame headers, lengths and CRC checks;
/// * odd: as chunk payloads, split at each "\xff\xfe" and wrapped in valid
///   frames (stored deflate blocks, CRC; the last one FINAL) after a chunk
///   holding a valid Header.
pub fn file_of(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(if mode & 1 == 1 {
        file_from_payloads(rest)
    } else if rest.starts_with(&MAGIC) {
        rest.to_vec()
    } else {
        let mut file = file_header().to_vec();
        file.extend_from_slice(rest);
        file
    })
}

/// A chunk whose deflate stream is made of stored blocks: valid for the
/// reader, and far cheaper per run than building a compressor (whose zeroed
/// tables dominated the fuzzer's time).
pub fn stored_chunk(payload: &[u8], flags: u32) -> Vec<u8> {
    let mut deflate = Vec::with_capacity(payload.len() + 5 * (payload.len() / 65535 + 1));
    let mut blocks = payload.chunks(65535).peekable();
    if blocks.peek().is_none() {
        deflate.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        deflate.push(u8::from(last));
        let len = block.len() as u16;
        deflate.extend_from_slice(&len.to_le_bytes());
        deflate.extend_from_slice(&(!len).to_le_bytes());
        deflate.extend_from_slice(block);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(deflate.len() as u32).to_le_bytes());
    crc.update(&(payload.len() as u32).to_le_bytes());
    crc.update(&flags.to_le_bytes());
    crc.update(&deflate);
    let mut chunk = Vec::with_capacity(16 + deflate.len());
    chunk.extend_from_slice(&(deflate.len() as u32).to_le_bytes());
    chunk.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    chunk.extend_from_slice(&crc.finalize().to_le_bytes());
    chunk.extend_from_slice(&flags.to_le_bytes());
    chunk.extend_from_slice(&deflate);
    chunk
}

/// A valid header chunk, then `data` split at "\xff\xfe" into chunk payloads.
pub fn file_from_payloads(data: &[u8]) -> Vec<u8> {
    let mut file = file_header().to_vec();
    let header = proto::Record {
        kind: Some(Kind::Header(proto::Header {
            format_version: 1,
            ..Default::default()
        })),
    };
    let chunk = stored_chunk(&header.encode_length_delimited_to_vec(), 0);
    file.extend_from_slice(&chunk);
    let pieces: Vec<&[u8]> = split(data);
    for (i, piece) in pieces.iter().enumerate() {
        let flags = if i + 1 == pieces.len() { FLAG_FINAL } else { 0 };
        file.extend_from_slice(&stored_chunk(piece, flags));
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
