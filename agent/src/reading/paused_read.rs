//! What a read of a paused target fetches ahead, shared by `pydeep dump`
//! and snapshots (notes/snapshots.md, "The pause"): while the target is
//! stopped every page costs about one call, so what is known ahead is
//! fetched in batches through the [`PageCache`], and the frame walk reads
//! a few pages ahead on each miss.

use crate::process::memory::read_u64;
use crate::process::page_cache::PageCache;
use crate::reading::objects::Objects;

/// Bytes of an object fetched ahead of rendering it: its header and the
/// fields most renderings read (a small int's digit, a short string).
pub const VALUE_BYTES: u64 = 64;
/// Pages a miss fetches while the frame chains are walked.
pub const FRAME_READ_AHEAD: usize = 8;
/// Bytes of a type object fetched ahead (every field the readers use).
pub const TYPE_BYTES: u64 = 1024;
/// Bytes of a type's `tp_name` fetched ahead (as much as is read of it).
pub const TYPE_NAME_BYTES: u64 = 256;

/// Fetches, in one call per round, what rendering the objects at
/// `addresses` reads first: their headers, their types, their types'
/// names. What a rendering reads beyond (items, attributes) is fetched
/// page by page as it is read.
pub fn prefetch_values(memory: &PageCache<'_>, objects: &Objects<'_>, addresses: &[u64]) {
    let addresses: Vec<u64> = addresses.iter().copied().filter(|&a| a != 0).collect();
    let _ = memory.prefetch(&addresses, VALUE_BYTES);
    let mut types: Vec<u64> = addresses
        .iter()
        .filter_map(|&address| objects.reader.type_of(address).ok())
        .collect();
    types.sort_unstable();
    types.dedup();
    let _ = memory.prefetch(&types, TYPE_BYTES);
    if let Some(at) = objects.layout().offsets.type_tp_name {
        let names: Vec<u64> = types
            .iter()
            .filter_map(|&address| read_u64(memory, address.wrapping_add(at)).ok())
            .collect();
        let _ = memory.prefetch(&names, TYPE_NAME_BYTES);
    }
}
