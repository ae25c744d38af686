//! One read of a process by a command that attaches, reads once and
//! leaves (`dump`, `objects`, `heap`), with every way it can fail given
//! its documented exit code.
//!
//! A process that has only just started can `exec` between the attach and
//! the read (a launcher, or a Python that re-executes itself): the image
//! attached to is gone, and its addresses are no longer readable. That is
//! neither a bug nor a reason to give up: attach to the new image and read
//! again. A process that ends while it is read has exited (exit 7), like
//! one that had ended before; one whose runtime lists no interpreter yet
//! is not Python yet (exit 5), like one whose interpreter was not found.

use anyhow::Result;

use crate::cli::exit::{Exit, Failure};
use crate::process::lifecycle::Identity;
use crate::Target;

/// Most attach-and-read rounds when the process keeps `exec`ing.
const ROUNDS: u32 = 3;

/// Attaches to `pid` and runs `read` on it. A read that fails because the
/// process exec'd meanwhile is done again on the new image (up to
/// [`ROUNDS`] times); one that fails because the process ended is
/// [`Exit::TargetExited`]; attach failures get their codes from
/// [`crate::cli::commands::attach_failure`]. Returns the target (for commands
/// that read it again later) with what `read` returned.
pub fn read<T>(pid: i32, mut read: impl FnMut(&mut Target) -> Result<T>) -> Result<(Target, T)> {
    let mut round = 0;
    loop {
        round += 1;
        let image = Identity::of(pid);
        let mut target = Target::attach(pid).map_err(crate::cli::commands::attach_failure)?;
        let error = match read(&mut target) {
            Ok(value) => return Ok((target, value)),
            Err(error) => error,
        };
        if error
            .downcast_ref::<crate::cli::signals::Interrupted>()
            .is_some()
        {
            return Err(error);
        }
        if !crate::process::procfs::is_alive(pid) {
            return Err(Failure::new(
                Exit::TargetExited,
                format!("process {pid} exited while pydeep was reading it: {error:#}"),
            )
            .into());
        }
        if round < ROUNDS && image.execed_into(&Identity::of(pid)) {
            continue;
        }
        if no_interpreter(&error) {
            // _PyRuntime is static data, found before the interpreter it
            // lists exists: not Python yet, as far as there is anything
            // to read.
            return Err(Failure::new(
                Exit::NotPython,
                format!(
                    "process {pid} has no CPython interpreter running: it has only just started and its interpreter is not up yet, or it is finalizing; try again"
                ),
            )
            .into());
        }
        return Err(error);
    }
}

/// True if `error` says the runtime lists no interpreter.
fn no_interpreter(error: &anyhow::Error) -> bool {
    use crate::reading::target::ReadError;
    use crate::reading::walker::WalkError;
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ReadError>(),
            Some(ReadError::Walk(WalkError::NoInterpreter))
        ) || matches!(
            cause.downcast_ref::<WalkError>(),
            Some(WalkError::NoInterpreter)
        )
    })
}
