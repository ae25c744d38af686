//! pydeep's viewer: turns `.pdr` recordings into profiles and standard
//! exports. It reads recordings only, never a process.
//!
//! Every output streams the recording once. Samples are aggregated into maps
//! keyed by distinct stacks (see [`aggregate`]), so memory is bounded by the
//! number of distinct stacks, not by the number of samples; the Chrome trace
//! keeps only each thread's open stack.
//!
//! One module per job:
//! * [`input`] opens a recording and streams its samples, turning a damaged
//!   tail into a warning;
//! * [`filter`] decides which samples count (pid, thread, time window, flags);
//! * [`symbols`] turns frames into labels at a [`symbols::Granularity`];
//!   [`labels`] names them short (graphs) and full (tooltips);
//! * [`aggregate`] counts samples per distinct stack;
//! * [`collapsed`], [`flamegraph`], [`top`], [`lines`], [`speedscope`],
//!   [`pprof`] and [`chrome`] each write one output;
//! * [`report`] gathers every view into one self-contained HTML page;
//! * [`export`] writes a whole recording as one of them with the
//!   defaults, for `pydeep record --format`;
//! * [`diff`] compares two recordings (a table and a differential flamegraph);
//! * [`bytecode`] disassembles recorded code objects;
//! * [`snapshots`] picks deep snapshots, shown by [`scopes`] (frames,
//!   variables, generators), [`objects`] (graphs) and [`heap`] (counts by
//!   type, growth).
#![deny(missing_docs)]

pub mod aggregate;
pub mod bytecode;
pub mod chrome;
pub mod collapsed;
pub mod diff;
pub mod error;
pub mod export;
pub mod filter;
pub mod flamegraph;
pub mod heap;
pub mod input;
pub mod labels;
pub mod lines;
pub mod objects;
pub mod pprof;
pub mod report;
pub mod scopes;
pub mod snapshots;
pub mod speedscope;
pub mod symbols;
pub mod top;
pub mod traced;

pub use error::ViewError;
