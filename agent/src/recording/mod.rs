//! Recording: the one sampling loop (schedule, exactness and the pause
//! budget, gaps, snapshots, lifecycle) and the sink that turns what it reads
//! into a `.pdr` on a thread of its own (interning, code objects, sources,
//! redaction, the file and its exports).

pub mod codes;
pub mod exactness;
pub mod gaps;
pub mod output;
pub mod pause_budget;
pub mod recorder;
pub mod rotation;
pub mod sampled;
pub mod sampler;
pub mod schedule;
pub mod sink;
pub mod snapshot;
pub mod sources;
pub mod ticks;
