//! The container: file header and chunk frames, below the protobuf layer.
//!
//! ```text
//! file   = file_header chunk*
//! file_header (16 bytes) = MAGIC (8) | format version u32 LE | reserved u32 LE (0)
//! chunk  = frame_header (16 bytes) | deflate payload (compressed_len bytes)
//! frame_header = compressed_len u32 LE | uncompressed_len u32 LE | crc32 u32 LE | flags u32 LE
//! ```
//!
//! The CRC32 (IEEE, as zlib and gzip use) covers the compressed length, the
//! uncompressed length and the flags (12 bytes, in that order) and then the
//! compressed bytes, so a flipped bit anywhere in a chunk, its frame header
//! included, is caught before anything is decompressed.

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;

/// The first 8 bytes of every `.pdr` file.
///
/// Modelled on PNG's signature: the high-bit first byte catches 7-bit
/// transports, `\r\n` catches line-ending conversion in either direction,
/// `0x1a` stops a DOS `type`, and the final `\n` catches LF→CRLF mangling.
pub const MAGIC: [u8; 8] = [0x89, b'P', b'D', b'R', b'\r', b'\n', 0x1a, b'\n'];

/// The container and schema version this crate writes. Version 2 codes
/// sample times on the sampler's tick grid (`SampleBatch.ticks`); version 3
/// may embed a source file as spans of lines (`SourceFileDef.first_line`);
/// the framing is unchanged.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest version this crate still reads: every version from here to
/// [`FORMAT_VERSION`] is read.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Length of the file header: magic, version, reserved word.
pub(crate) const FILE_HEADER_LEN: usize = 16;

/// Length of a chunk's frame header.
pub const FRAME_HEADER_LEN: usize = 16;

/// Flag bit of the chunk that carries the [`crate::proto::Footer`]: the last
/// chunk of a complete file.
pub const FLAG_FINAL: u32 = 1;

/// Flag bits this version knows; a chunk with any other bit set is refused.
pub(crate) const KNOWN_FLAGS: u32 = FLAG_FINAL;

/// Largest compressed or uncompressed chunk length a reader accepts. Lengths
/// above it are refused before any allocation; the writer never produces them.
pub const MAX_CHUNK_LEN: u32 = 64 << 20;

/// Largest single encoded record the writer accepts (room is left for the
/// record's length prefix and the chunk's `ChunkStart`).
pub const MAX_RECORD_LEN: usize =
    MAX_CHUNK_LEN as usize - 16 - crate::sequence::CHUNK_START_MAX_LEN;

/// Most frames [`crate::Tables::stack_frames`] returns for one stack (deeper
/// chains in a hostile file are cut there).
pub const MAX_STACK_FRAMES: usize = 1 << 16;

/// The 16-byte file header: [`MAGIC`], [`FORMAT_VERSION`] and its check
/// word ([`version_check`]).
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&version_check(FORMAT_VERSION).to_le_bytes());
    header
}

/// The word after the version in the file header: zero in versions 1 and
/// 2, the version's complement from version 3 on. Nothing else covers the
/// file header, and a single flipped bit turns 3 into 2 or 1, which would
/// read as an older, readable version: with the complement beside it, any
/// flipped bit of either word is caught.
pub fn version_check(version: u32) -> u32 {
    if version >= 3 {
        !version
    } else {
        0
    }
}

/// A parsed chunk frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub compressed_len: u32,
    pub uncompressed_len: u32,
    pub crc: u32,
    pub flags: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        FrameHeader {
            compressed_len: word(0),
            uncompressed_len: word(4),
            crc: word(8),
            flags: word(12),
        }
    }

    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        bytes[0..4].copy_from_slice(&self.compressed_len.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.crc.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.flags.to_le_bytes());
        bytes
    }

    /// The CRC32 this header and `payload` should carry.
    pub fn compute_crc(&self, payload: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.compressed_len.to_le_bytes());
        hasher.update(&self.uncompressed_len.to_le_bytes());
        hasher.update(&self.flags.to_le_bytes());
        hasher.update(payload);
        hasher.finalize()
    }
}

/// Compresses `payload` (varint-length-delimited records) and returns the
/// whole chunk: frame header and deflate bytes. [`crate::Writer`] uses this;
/// it is public for tools and the fuzz target, which build files by hand.
pub fn encode_chunk(payload: &[u8], level: u32, flags: u32) -> std::io::Result<Vec<u8>> {
    encode_chunk_in_blocks(payload, level, flags, &[])
}

/// [`encode_chunk`], ending a deflate block at each offset of `block_ends`
/// (increasing, within `payload`).
///
/// Why: deflate codes a block with one pair of Huffman tables. The columns
/// of a sample batch have unlike byte distributions (time offsets, thread
/// ids, stack ids, flags); coded together they share one table that fits
/// none. A block per column costs a sync marker (5 bytes) and a table
/// (~50 bytes) and saves 5-10% of a sample batch. The stream stays one
/// ordinary deflate stream: readers see no difference.
pub(crate) fn encode_chunk_in_blocks(
    payload: &[u8],
    level: u32,
    flags: u32,
    block_ends: &[usize],
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len() / 4 + 64);
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    let mut encoder = DeflateEncoder::new(out, Compression::new(level.min(9)));
    let mut start = 0;
    for &end in block_ends {
        if end <= start || end >= payload.len() {
            continue;
        }
        encoder.write_all(&payload[start..end])?;
        // A sync flush: ends the block, the next one gets its own tables.
        encoder.flush()?;
        start = end;
    }
    encoder.write_all(&payload[start..])?;
    let mut out = encoder.finish()?;
    let compressed_len = out.len() - FRAME_HEADER_LEN;
    if compressed_len > MAX_CHUNK_LEN as usize || payload.len() > MAX_CHUNK_LEN as usize {
        return Err(std::io::Error::other("chunk exceeds MAX_CHUNK_LEN"));
    }
    let mut header = FrameHeader {
        compressed_len: compressed_len as u32,
        uncompressed_len: payload.len() as u32,
        crc: 0,
        flags,
    };
    header.crc = header.compute_crc(&out[FRAME_HEADER_LEN..]);
    out[..FRAME_HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(out)
}
