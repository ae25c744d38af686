//! Which recording a chunk belongs to and where it stands: the
//! [`proto::ChunkStart`] the writer puts first in every chunk after the
//! Header's, and the check the [`crate::Reader`] makes of it.
//!
//! CRC32 proves a chunk is intact, not that it belongs where it is: chunks
//! spliced from two recordings, reordered or duplicated (with their
//! checksums recomputed, or simply copied whole) each pass it. The Header
//! draws a random `recording_id`; every later chunk repeats it with its
//! position (1, 2, 3, ...), so a reader knows at each chunk that it follows
//! the one before it in the same recording. A file whose header has no id
//! (written before this existed) has no markers and cannot be checked; a
//! marker in such a file means its header came from another recording.
//!
//! This catches accidents and careless splicing, not forgery: whoever can
//! recompute CRCs can rewrite the markers too.

use prost::Message;

use crate::proto::{self, record::Kind};

/// A random, non-zero recording id: from the kernel's generator
/// (`getrandom(2)`), or where that fails from the standard library's
/// randomly keyed hasher mixed with the time and the pid.
pub(crate) fn new_recording_id() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let mut id = u64::from_le_bytes(bytes);
    if filled != bytes.len() as isize {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        id = hasher.finish();
    }
    id.max(1)
}

/// The encoded, length-delimited `ChunkStart` record of chunk `sequence`.
pub(crate) fn chunk_start(recording_id: u64, sequence: u64) -> Vec<u8> {
    let record = proto::Record {
        kind: Some(Kind::ChunkStart(proto::ChunkStart {
            recording_id,
            sequence,
        })),
    };
    record.encode_length_delimited_to_vec()
}

/// Most bytes [`chunk_start`] adds to a chunk's payload.
pub(crate) const CHUNK_START_MAX_LEN: usize = 32;

/// Checks, chunk by chunk, that a file's chunks were written in this
/// order for the recording its Header names.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChunkSequence {
    /// The Header's `recording_id` (0: a file without markers).
    recording_id: u64,
    /// Chunks checked so far, the Header's included.
    checked: u64,
}

impl ChunkSequence {
    /// Checks the records of the next chunk; `Err` says in words why the
    /// chunk cannot stand there.
    pub(crate) fn check(&mut self, records: &[proto::Record]) -> Result<(), String> {
        let position = self.checked;
        self.checked += 1;
        if let Some(index) = records
            .iter()
            .skip(1)
            .position(|r| matches!(r.kind, Some(Kind::ChunkStart(_))))
        {
            return Err(format!(
                "chunk {position} holds a chunk marker as its record {} (a marker only starts a chunk)",
                index + 1
            ));
        }
        let first = records.first().and_then(|r| r.kind.as_ref());
        if position == 0 {
            return match first {
                Some(Kind::Header(header)) => {
                    self.recording_id = header.recording_id;
                    Ok(())
                }
                Some(Kind::ChunkStart(marker)) => Err(format!(
                    "the file starts with chunk {} of recording {:016x} instead of a Header: its beginning is missing",
                    marker.sequence, marker.recording_id
                )),
                // The readers above say "the first record is not a Header".
                _ => Ok(()),
            };
        }
        let marker = match first {
            Some(Kind::ChunkStart(marker)) => marker,
            _ if self.recording_id == 0 => return Ok(()),
            _ => {
                return Err(format!(
                    "chunk {position} has no chunk marker, though the header says every chunk of recording {:016x} has one: it was spliced in from an older recording",
                    self.recording_id
                ))
            }
        };
        if self.recording_id == 0 {
            return Err(format!(
                "chunk {position} belongs to recording {:016x}, but the header names no recording: the header was spliced in from an older recording",
                marker.recording_id
            ));
        }
        if marker.recording_id != self.recording_id {
            return Err(format!(
                "chunk {position} belongs to another recording ({:016x}; the header's is {:016x}): the file was spliced from two recordings",
                marker.recording_id, self.recording_id
            ));
        }
        match marker.sequence {
            n if n == position => Ok(()),
            0 => Err(format!(
                "chunk {position} is numbered 0, the Header's number: a second recording start"
            )),
            n if n < position => Err(format!(
                "chunk {position} is chunk {n} again: a duplicated chunk, or chunks out of order"
            )),
            n => {
                let missing = if n - 1 == position {
                    format!("chunk {position} is missing")
                } else {
                    format!("chunks {position} to {} are missing", n - 1)
                };
                Err(format!(
                    "chunk {position} is numbered {n}: {missing}, or the chunks are out of order"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(recording_id: u64) -> proto::Record {
        proto::Record {
            kind: Some(Kind::Header(proto::Header {
                recording_id,
                ..Default::default()
            })),
        }
    }

    fn marker(recording_id: u64, sequence: u64) -> proto::Record {
        proto::Record {
            kind: Some(Kind::ChunkStart(proto::ChunkStart {
                recording_id,
                sequence,
            })),
        }
    }

    fn run(chunks: &[Vec<proto::Record>]) -> Result<(), String> {
        let mut sequence = ChunkSequence::default();
        chunks.iter().try_for_each(|c| sequence.check(c))
    }

    #[test]
    fn chunks_numbered_in_order_for_their_header_pass() {
        assert_eq!(
            run(&[vec![header(7)], vec![marker(7, 1)], vec![marker(7, 2)]]),
            Ok(())
        );
    }

    #[test]
    fn a_file_without_markers_from_before_them_passes() {
        assert_eq!(run(&[vec![header(0)], vec![], vec![]]), Ok(()));
    }

    #[test]
    fn another_recordings_chunk_is_named_as_spliced() {
        let error = run(&[vec![header(7)], vec![marker(8, 1)]]).unwrap_err();
        assert!(error.contains("spliced from two recordings"), "{error}");
    }

    #[test]
    fn a_duplicated_chunk_is_named() {
        let error = run(&[vec![header(7)], vec![marker(7, 1)], vec![marker(7, 1)]]).unwrap_err();
        assert!(error.contains("chunk 2 is chunk 1 again"), "{error}");
    }

    #[test]
    fn a_gap_is_named_with_the_missing_chunks() {
        let error = run(&[vec![header(7)], vec![marker(7, 3)]]).unwrap_err();
        assert!(error.contains("chunks 1 to 2 are missing"), "{error}");
    }

    #[test]
    fn old_and_new_halves_do_not_mix() {
        assert!(run(&[vec![header(0)], vec![marker(7, 1)]]).is_err());
        assert!(run(&[vec![header(7)], vec![]]).is_err());
    }

    #[test]
    fn a_marker_inside_a_chunk_is_refused() {
        assert!(run(&[vec![header(7)], vec![marker(7, 1), marker(7, 2)]]).is_err());
    }

    #[test]
    fn recording_ids_are_never_zero_and_differ() {
        let a = new_recording_id();
        let b = new_recording_id();
        assert!(a != 0 && b != 0 && a != b);
    }

    #[test]
    fn the_marker_fits_its_reserved_room() {
        assert!(chunk_start(u64::MAX, u64::MAX).len() <= CHUNK_START_MAX_LEN);
    }
}
