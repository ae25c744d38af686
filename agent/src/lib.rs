//! pydeep's agent: process access, CPython layouts, sampler and snapshots.
