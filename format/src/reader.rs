//! [`Reader`]: the chunk layer, streaming, bounded and panic-free.

use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::DeflateDecoder;
use prost::Message;

use crate::container::{
    version_check, FrameHeader, FILE_HEADER_LEN, FLAG_FINAL, FORMAT_VERSION, FRAME_HEADER_LEN,
    KNOWN_FLAGS, MAGIC, MAX_CHUNK_LEN, OLDEST_READABLE_VERSION,
};
use crate::proto;
use crate::sequence::ChunkSequence;
use crate::FormatError;

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Byte offset of the chunk's frame header in the file.
    pub offset: u64,
    /// The records of the chunk, in order.
    pub records: Vec<proto::Record>,
    /// True for the final chunk (the one carrying the footer).
    pub is_final: bool,
    /// Size of the chunk in the file, frame header included.
    pub size: u64,
    /// Size of the chunk's payload after decompression.
    pub uncompressed_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting another chunk.
    Reading,
    /// The final chunk was read; only the end of the file may follow.
    AfterFinal,
    /// The end of the file, or an error, was reported.
    Done,
}

/// Reads a `.pdr` file chunk by chunk.
///
/// Memory is bounded by one chunk ([`crate::MAX_CHUNK_LEN`] compressed plus as
/// much uncompressed); lengths above that are refused before anything is
/// allocated, and a declared length is only filled as far as the input
/// really goes. No input makes it panic.
///
/// Each chunk must follow the one before it in the recording its Header
/// names (`ChunkStart`, see `sequence.rs`): a chunk spliced in from another
/// recording, duplicated or out of order is [`FormatError::Corrupt`].
///
/// [`Reader::next_chunk`] returns `Ok(None)` only after the final chunk of a
/// complete file. A file that ends early gives every complete chunk and then
/// [`FormatError::Truncated`]; a chunk failing its checks gives
/// [`FormatError::Corrupt`] with its offset. After an error the reader is done
/// and returns `Ok(None)`.
pub struct Reader<R: Read> {
    source: R,
    offset: u64,
    chunks: u64,
    state: State,
    final_read: bool,
    records: u64,
    version: u32,
    /// Checks that each chunk follows the one before it in one recording.
    sequence: ChunkSequence,
}

impl Reader<BufReader<std::fs::File>> {
    /// Opens `path` and checks its file header.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = crate::files::open_input(path)?;
        Reader::new(BufReader::with_capacity(1 << 16, file))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(source: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

impl<R: Read> Reader<R> {
    /// Reads and checks the file header: magic and format version.
    pub fn new(mut source: R) -> Result<Self, FormatError> {
        let mut header = [0u8; FILE_HEADER_LEN];
        let n = read_full(&mut source, &mut header)?;
        let magic_len = n.min(MAGIC.len());
        if header[..magic_len] != MAGIC[..magic_len] {
            return Err(FormatError::BadMagic);
        }
        if n < FILE_HEADER_LEN {
            return Err(FormatError::Truncated {
                offset: 0,
                complete_chunks: 0,
            });
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let check = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if check != version_check(version) {
            return Err(FormatError::corrupt(
                12,
                "the word after the version in the file header does not match it",
            ));
        }
        Ok(Reader {
            source,
            offset: FILE_HEADER_LEN as u64,
            chunks: 0,
            state: State::Reading,
            final_read: false,
            records: 0,
            version,
            sequence: ChunkSequence::default(),
        })
    }

    /// The format version of the file header.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Bytes of the file read and validated so far: the end of the last
    /// complete chunk. After a truncation this is how much is readable.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of complete, valid chunks read so far.
    pub fn complete_chunks(&self) -> u64 {
        self.chunks
    }

    /// Records in the complete chunks read so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// True once the final chunk has been read.
    pub fn saw_final(&self) -> bool {
        self.final_read
    }

    /// Reads the next chunk; `Ok(None)` after the final chunk of a complete file.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, FormatError> {
        if self.state == State::Done {
            return Ok(None);
        }
        match self.read_chunk() {
            Ok(chunk) => {
                if chunk.is_none() {
                    self.state = State::Done;
                }
                Ok(chunk)
            }
            Err(error) => {
                self.state = State::Done;
                Err(error)
            }
        }
    }

    fn truncated(&self) -> FormatError {
        FormatError::Truncated {
            offset: self.offset,
            complete_chunks: self.chunks,
        }
    }

    fn read_chunk(&mut self) -> Result<Option<Chunk>, FormatError> {
        let start = self.offset;
        let mut frame = [0u8; FRAME_HEADER_LEN];
        let n = read_full(&mut self.source, &mut frame)?;
        if self.state == State::AfterFinal {
            if n == 0 {
                return Ok(None);
            }
            return Err(FormatError::corrupt(
                start,
                "data follows the final chunk (two recordings concatenated, or garbage appended?)",
            ));
        }
        if n < FRAME_HEADER_LEN {
            return Err(self.truncated());
        }
        let header = FrameHeader::parse(&frame);
        if header.compressed_len > MAX_CHUNK_LEN || header.uncompressed_len > MAX_CHUNK_LEN {
            return Err(FormatError::corrupt(
                start,
                format!(
                    "chunk lengths {} (compressed) / {} (uncompressed) exceed the {MAX_CHUNK_LEN}-byte limit",
                    header.compressed_len, header.uncompressed_len
                ),
            ));
        }
        if header.compressed_len == 0 {
            return Err(FormatError::corrupt(start, "chunk has an empty payload"));
        }
        // Grows with the bytes actually present, so a lying length on a short
        // file allocates no more than the file holds.
        let mut compressed = Vec::new();
        (&mut self.source)
            .take(u64::from(header.compressed_len))
            .read_to_end(&mut compressed)?;
        if compressed.len() < header.compressed_len as usize {
            return Err(self.truncated());
        }
        let crc = header.compute_crc(&compressed);
        if crc != header.crc {
            return Err(FormatError::corrupt(
                start,
                format!(
                    "CRC32 mismatch (stored {:08x}, computed {crc:08x})",
                    header.crc
                ),
            ));
        }
        if header.flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::corrupt(
                start,
                format!(
                    "unknown chunk flags {:#x} (written by a newer pydeep?)",
                    header.flags
                ),
            ));
        }
        let mut payload = Vec::with_capacity(header.uncompressed_len as usize);
        DeflateDecoder::new(&compressed[..])
            .take(u64::from(header.uncompressed_len) + 1)
            .read_to_end(&mut payload)
            .map_err(|error| FormatError::corrupt(start, format!("bad deflate data: {error}")))?;
        drop(compressed);
        if payload.len() != header.uncompressed_len as usize {
            return Err(FormatError::corrupt(
                start,
                format!(
                    "payload inflates to {}{} bytes, the frame says {}",
                    payload.len().min(header.uncompressed_len as usize),
                    if payload.len() > header.uncompressed_len as usize {
                        "+"
                    } else {
                        ""
                    },
                    header.uncompressed_len
                ),
            ));
        }
        let records =
            decode_records(&payload).map_err(|reason| FormatError::corrupt(start, reason))?;
        self.sequence
            .check(&records)
            .map_err(|reason| FormatError::corrupt(start, reason))?;
        let size = (FRAME_HEADER_LEN as u64) + u64::from(header.compressed_len);
        self.offset += size;
        self.chunks += 1;
        self.records += records.len() as u64;
        let is_final = header.flags & FLAG_FINAL != 0;
        if is_final {
            self.state = State::AfterFinal;
            self.final_read = true;
        }
        Ok(Some(Chunk {
            offset: start,
            records,
            is_final,
            size,
            uncompressed_len: header.uncompressed_len,
        }))
    }
}

/// Splits a payload into its length-delimited records.
fn decode_records(mut payload: &[u8]) -> Result<Vec<proto::Record>, String> {
    let mut records = Vec::new();
    while !payload.is_empty() {
        let index = records.len();
        let len = prost::encoding::decode_varint(&mut payload)
            .map_err(|error| format!("record {index}: bad length prefix: {error}"))?;
        if len > payload.len() as u64 {
            return Err(format!(
                "record {index}: length {len} runs past the end of the chunk ({} bytes left)",
                payload.len()
            ));
        }
        let (body, rest) = payload.split_at(len as usize);
        let record = proto::Record::decode(body)
            .map_err(|error| format!("record {index}: bad protobuf: {error}"))?;
        records.push(record);
        payload = rest;
    }
    Ok(records)
}
