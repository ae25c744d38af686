//! pydeep's viewer: reads `.pdr` recordings only, never a process.

pub mod bytecode;
