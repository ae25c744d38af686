//! pydeep's agent, in layers from the target's memory up to the command line:
//!
//! - [`process`]: another process's memory and threads, knowing nothing of Python;
//! - [`reading`]: CPython read out of that memory (attach, layouts, the stack
//!   walker, objects);
//! - [`recording`]: the one sampling loop and the recording sink;
//! - [`trace`]: trace windows (a tracer injected into the target);
//! - [`daemon`]: many targets recorded continuously;
//! - [`cli`]: the command line and its thin drivers.
//!
//! [`process`] and [`reading`] import nothing above them. Above them, four
//! upward imports remain, each named here so none is added unseen: the
//! sampler, trace windows and the daemon share the command line's exit codes
//! and interrupt flag ([`cli::exit`], [`cli::signals`]) and the sampler's
//! options ([`cli::session::SessionOptions`]); the daemon reads the rate and
//! duration parsers of [`cli::options`]; the sampler feeds trace windows
//! ([`trace::window`]) while they feed the sampler's sink.
#![deny(missing_docs)]

pub mod cli;
pub mod daemon;
pub mod process;
pub mod reading;
pub mod recording;
pub mod trace;

pub use reading::cpython::code::{CodeObject, LineTableKind};
pub use reading::cpython::PythonVersion;
pub use reading::target::{AttachError, CodeId, PauseGuard, ReadError, Target};
pub use reading::walker::{FrameSample, ThreadHead, ThreadSample, WalkOptions};
