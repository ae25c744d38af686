//! The one error type of the format crate.

use std::path::PathBuf;

/// What went wrong reading or writing a `.pdr` file. Every message names the
/// cause and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An operating-system error from the underlying file or stream.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// [`crate::Writer::create`] without `overwrite` found the path taken.
    #[error("{} already exists; choose another output path or pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    /// The output path is a symbolic link, which the writer never follows.
    #[error("{} is a symbolic link; pydeep never writes through one (remove it or choose another path)", .0.display())]
    Symlink(PathBuf),
    /// The output path exists and is not a regular file.
    #[error("{} is not a regular file; choose another output path", .0.display())]
    NotARegularFile(PathBuf),
    /// The file does not start with the `.pdr` magic.
    #[error("not a pydeep recording: the file does not start with the .pdr magic (was it written by pydeep, or mangled by a text-mode transfer?)")]
    BadMagic,
    /// The file's format version is not one this build reads.
    #[error("the recording uses format version {0}, but this pydeep reads versions {oldest} to {newest} only; upgrade pydeep", oldest = crate::OLDEST_READABLE_VERSION, newest = crate::FORMAT_VERSION)]
    UnsupportedVersion(u32),
    /// The file ends in the middle of a chunk or without the final chunk.
    #[error("the recording is truncated at byte {offset}: {complete_chunks} complete chunks are readable before it (the writer was probably killed or the disk filled)")]
    Truncated {
        /// Byte offset where the incomplete part starts: everything before it is readable.
        offset: u64,
        /// Number of complete, valid chunks before `offset`.
        complete_chunks: u64,
    },
    /// A chunk failed its checks (CRC, lengths, deflate, protobuf).
    #[error("corrupt chunk at byte {offset}: {reason}; the chunks before it are readable")]
    Corrupt {
        /// Byte offset of the start of the bad chunk (or of the bad header).
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A single record is larger than a chunk may be.
    #[error("a record of {size} bytes exceeds the {limit}-byte limit of one chunk; record less data (e.g. smaller snapshots)")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The limit, [`crate::MAX_RECORD_LEN`].
        limit: usize,
    },
    /// The caller asked the writer for something the format does not allow.
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// An earlier write failed, so the file may end in a partial chunk; the
    /// writer refuses to append after it.
    #[error("an earlier write to the recording failed; the writer stopped (the chunks written before the failure are readable)")]
    WriterFailed,
}

impl FormatError {
    /// Builds a [`FormatError::Corrupt`].
    pub(crate) fn corrupt(offset: u64, reason: impl Into<String>) -> Self {
        FormatError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}
