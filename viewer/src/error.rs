//! The viewer library's error type.

use std::path::PathBuf;

/// Why an output could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The recording's file could not be opened.
    #[error("cannot open recording {path}: {reason}")]
    Missing {
        /// The recording's path.
        path: PathBuf,
        /// What the operating system reported.
        reason: std::io::Error,
    },
    /// The file is not a readable recording (bad magic, damaged header).
    #[error("cannot read recording {path}: {reason}")]
    Open {
        /// The recording's path.
        path: PathBuf,
        /// What the format reader reported.
        reason: pydeep_format::FormatError,
    },
    /// Writing the output failed (a closed pipe shows up here as
    /// [`std::io::ErrorKind::BrokenPipe`]).
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
    /// A command-line value could not be understood.
    #[error("{0}")]
    InvalidArgument(String),
    /// `lines --source` named a file that no sampled frame belongs to.
    #[error("no sampled frame belongs to {path}; files with the most samples: {candidates}")]
    SourceNotSampled {
        /// The path given.
        path: String,
        /// Comma-separated list of the recording's most sampled files.
        candidates: String,
    },
    /// `lines --source` could not read the file and the recording does not embed it.
    #[error("cannot read source file {path} ({reason}) and the recording does not embed it")]
    SourceUnavailable {
        /// The path given.
        path: String,
        /// Why reading it failed.
        reason: String,
    },
}

impl ViewError {
    /// True if the error is a closed output pipe (`pydeep-view ... | head`),
    /// which is not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ViewError::Write(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
