//! Access to another process, knowing nothing of Python: its memory, read
//! through one trait and a page cache, stopping and resuming its threads, and
//! small bounded facts from `/proc`: how a process ended, and reading a
//! file as the process itself could.

pub mod address_hash;
pub mod lifecycle;
pub mod memory;
pub mod page_cache;
pub mod pause;
pub mod procfs;
pub mod source_access;
