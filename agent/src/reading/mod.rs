//! Reading CPython out of a target's memory: attach ([`target`]), the
//! layout of this interpreter ([`cpython`]), the stack walker, and the object
//! readers snapshots and live views are made of (scopes, values, generators,
//! asyncio tasks, object graphs, heap counts, and the redaction of values).
//! Everything remote here is
//! untrusted: every read is bounded and every walk capped.

pub mod asyncio;
pub mod blocking;
pub mod cpython;
pub mod generators;
pub mod graph;
pub mod heap;
pub mod mimalloc;
pub mod objects;
pub mod paused_read;
pub mod redact;
pub mod retained;
pub mod scopes;
pub mod target;
pub mod values;
pub mod walker;
