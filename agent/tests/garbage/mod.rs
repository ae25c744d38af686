//! Shared by the garbage tests (`objects_garbage`, `generators_garbage`):
//! the layout of a generated table and a region of garbage words full of
//! pointers back into itself, so every walk can loop, nest and claim huge
//! sizes.

use pydeep::process::memory::SnapshotMemory;
use pydeep::reading::cpython::Layout;
use pydeep_cpython::layouts;

/// Where the garbage region starts.
pub const BASE: u64 = 0x10_0000;
/// Its length in bytes.
pub const LEN: usize = 16 << 10;

/// The layout of CPython 3.`minor` from its generated offsets table.
pub fn layout(minor: u32) -> Layout {
    Layout::of_version(
        minor,
        *layouts::ALL.iter().find(|t| t.version.1 == minor).unwrap(),
    )
    .unwrap()
}

/// Garbage at [`BASE`]: each 8-byte word is a pointer into the region
/// (aligned or not), a small number, or random bits, by the seed's choice.
pub fn garbage(words: &[(u8, u64)]) -> SnapshotMemory {
    let mut bytes = Vec::with_capacity(LEN);
    for i in 0..LEN / 8 {
        let (choice, value) = words[i % words.len()];
        let word = match choice % 4 {
            0 => BASE + (value % LEN as u64) / 8 * 8,
            1 => BASE + value % LEN as u64,
            2 => value % 64,
            _ => value,
        };
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let mut memory = SnapshotMemory::new();
    memory.add_region(BASE, bytes);
    memory
}
