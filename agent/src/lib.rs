//! pydeep's agent: process access, CPython layouts, sampler and snapshots.
#![deny(missing_docs)]

pub mod address_hash;
pub mod asyncio;
pub mod blocking;
pub mod cpython;
pub mod exactness;
pub mod generators;
pub mod graph;
pub mod heap;
pub mod info_json;
pub mod live_views;
pub mod memory;
pub mod mimalloc;
pub mod objects;
pub mod page_cache;
pub mod pause;
pub mod pause_budget;
pub mod paused_read;
pub mod retained;
pub mod scopes;
pub mod target;
pub mod values;
pub mod walker;

pub mod cli;
pub mod codes;
pub mod commands;
pub mod daemon;
pub mod exit;
pub mod exports;
pub mod gaps;
pub mod lifecycle;
pub mod live_top;
pub mod one_shot;
pub mod output;
pub mod procfs;
pub mod recorder;
pub mod redact;
pub mod sampled;
pub mod sampler;
pub mod schedule;
pub mod session;
pub mod signals;
pub mod sink;
pub mod snapshot;
pub mod source_access;
pub mod sources;
pub mod status;
pub mod trace;

pub use cpython::code::{CodeObject, LineTableKind};
pub use cpython::PythonVersion;
pub use target::{AttachError, CodeId, PauseGuard, ReadError, Target};
pub use walker::{FrameSample, ThreadSample, WalkOptions};
