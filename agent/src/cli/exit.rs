//! Exit codes of the `pydeep` binary and the one place that turns an error
//! into what the user reads.
//!
//! Every failure a user can cause or meet has its own code, so scripts can
//! tell "no such pid" from "not allowed" without parsing messages.

use std::process::ExitCode;

/// Why `pydeep` stopped. The numbers are part of the interface: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// An error with no more specific code.
    Failure = 1,
    /// Bad command-line usage (clap's own code).
    Usage = 2,
    /// No process has the given pid.
    NoSuchProcess = 3,
    /// The kernel refused ptrace / process_vm_readv on the target.
    PermissionDenied = 4,
    /// The target is not a Python process (or its interpreter was not found).
    NotPython = 5,
    /// The target's CPython version is not supported.
    UnsupportedVersion = 6,
    /// The target exited before pydeep could attach.
    TargetExited = 7,
    /// `verify`: the recording is incomplete or corrupt.
    InvalidRecording = 8,
    /// The output file could not be created or written.
    OutputError = 9,
    /// `record`: the program could not be started.
    SpawnFailed = 10,
    /// `ctl`: the daemon did not answer in time (`--timeout`).
    Timeout = 11,
    /// `trace`: no thread of the target ran Python code in time (every
    /// thread blocked), so the tracer could not be loaded at a safe point.
    NoSafePoint = 19,
    /// `trace`: the target already has a profile function (sys.setprofile,
    /// cProfile, another tracer), or with `--lines` a trace function
    /// (sys.settrace: a debugger, coverage), or another trace window is
    /// open; pydeep never replaces one.
    TraceRefused = 20,
    /// `trace` on 3.14+: the target has CPython's remote debugging
    /// disabled (PYTHON_DISABLE_REMOTE_DEBUG, -X disable-remote-debug, or
    /// a build without it), through which pydeep starts its tracer there.
    RemoteDebugDisabled = 21,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// An error that knows its exit code; the message is what the user reads.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code to leave with.
    pub exit: Exit,
    /// One-line message naming the cause and the fix.
    pub message: String,
}

impl Failure {
    /// A failure with `exit` and `message`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

/// The exit code for `error`: the first [`Failure`] in its chain decides,
/// a broken pipe means the reader went away (exit 0), anything else is 1.
pub fn exit_for(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.exit;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return Exit::Ok;
            }
        }
    }
    Exit::Failure
}

/// Writes to standard output like `print!`, but returns the `io::Error`
/// instead of panicking: when the reader went away (`pydeep info | head -1`)
/// the error travels up to [`exit_for`], which makes a broken pipe a clean
/// exit. `print!` panics with "failed printing to stdout" there.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// [`out!`] with a newline, like `println!`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_innermost_failure_decides_the_exit_code() {
        let error = Err::<(), _>(Failure::new(Exit::NotPython, "not python"))
            .context("attaching to 42")
            .unwrap_err();
        assert_eq!(exit_for(&error), Exit::NotPython);
        assert_eq!(Exit::NotPython as u8, 5);
    }

    #[test]
    fn a_broken_pipe_is_a_clean_exit() {
        let error = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(exit_for(&error), Exit::Ok);
        assert_eq!(exit_for(&anyhow::anyhow!("other")), Exit::Failure);
    }
}
