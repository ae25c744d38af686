//! The GC objects of a free-threaded CPython (3.13t), found the way its
//! collector finds them: by visiting the blocks of every thread's mimalloc
//! heaps for GC objects.
//!
//! A free-threaded build keeps no generation lists (no `PyGC_Head`).
//! Python/gc_free_threading.c `gc_visit_heaps` walks, for each thread state
//! (`_PyThreadStateImpl.mimalloc`), the heaps `_Py_MIMALLOC_HEAP_GC` (GC
//! objects, the object at the block's start) and `_Py_MIMALLOC_HEAP_GC_PRE`
//! (objects with a pre-header: managed dict and weakref words, the object
//! two words in), with mimalloc's `mi_heap_visit_blocks`
//! (Objects/mimalloc/heap.c): each heap's page queues `pages[0..=MI_BIN_FULL]`,
//! each queue a list of `mi_page_t` by `next`; in a page, the blocks
//! `0..capacity` from the page start, less those on the page's free lists
//! (`free`, `local_free`, and `xthread_free` with its two tag bits masked);
//! a block's first word is its free-list link. An object counts when its
//! `ob_gc_bits` say tracked and not frozen (`op_from_block`), which is what
//! `gc.get_objects()` returns.
//!
//! Where a page's memory starts is mimalloc's `_mi_segment_page_start`
//! (Objects/mimalloc/segment.c, the vendored 2.1.2): the segment is the
//! page's address rounded down to `1 << MI_SEGMENT_SHIFT`, the page is
//! slice `idx` of the segment's `slices` array, its memory
//! `segment + idx * MI_SEGMENT_SLICE_SIZE`, shifted for small blocks by
//! `3 * block_size` (at most 64 bytes) or `block_size` (at most 512).
//!
//! Remote memory is untrusted: every page must name the heap it is queued
//! in (`xheap`), lie in a segment's slice array, and hold its blocks inside
//! its slices; free lists are followed only inside the page's copy, at
//! most `capacity` steps; pages are visited once; every count is capped.
//! A page whose free lists and `used` disagree (a target that was not
//! paused) is still visited and counted in [`MimallocStats::inconsistent_pages`].
//!
//! Not walked: segments abandoned by threads that exited (the
//! interpreter's `mimalloc.abandoned_pool`, whose objects
//! `gc.get_objects()` includes); their number is reported
//! ([`MimallocStats::abandoned_segments`]).

use std::collections::HashSet;

use crate::process::memory::{field_u16, field_u32, field_u64, field_u8, read_vec, RemoteMemory};
use crate::reading::cpython::Offsets;

/// Most thread states followed.
const MAX_THREADS: usize = 100_000;
/// Most pages visited in one walk.
const MAX_PAGES: usize = 4_000_000;
/// Largest page area copied in one read (a medium page is 512 KiB; pages
/// of larger blocks hold one block, whose header alone is read).
const MAX_AREA: u64 = 8 << 20;
/// Bytes of an object header read: through `ob_size` on 64-bit builds.
const HEADER: u64 = 40;

/// The offsets the walk needs, all present or the walk is impossible.
#[derive(Debug, Clone, Copy)]
pub struct MimallocLayout {
    thread_next: u64,
    interpreter_threads_head: u64,
    thread_heaps: u64,
    thread_initialized: u64,
    heap_gc: u64,
    heap_gc_pre: u64,
    heap_size: u64,
    heap_pages: u64,
    bin_full: u64,
    queue_size: u64,
    queue_first: u64,
    page_size: u64,
    page_slice_count: u64,
    page_capacity: u64,
    page_reserved: u64,
    page_free: u64,
    page_used: u64,
    page_xblock_size: u64,
    page_local_free: u64,
    page_xthread_free: u64,
    page_xheap: u64,
    page_next: u64,
    segment_slices: u64,
    slices_per_segment: u64,
    segment_shift: u64,
    slice_shift: u64,
    abandoned_count: Option<u64>,
    gc_bits_at: u64,
    gc_bits_tracked: u8,
    gc_bits_frozen: u8,
    ob_type: u64,
    ob_size: u64,
    /// Bytes before an object of the `GC_PRE` heap (its block start).
    pre_header: u64,
}

impl MimallocLayout {
    /// The walk's offsets, if the table has them all (free-threaded builds
    /// whose layout the generator took, without encoded free lists).
    pub fn from_offsets(o: &Offsets) -> Option<MimallocLayout> {
        if o.mimalloc_encode_freelist != Some(0) {
            return None;
        }
        let shift = o.mimalloc_segment_shift?;
        let slice_shift = o.mimalloc_segment_slice_shift?;
        if !(16..=40).contains(&shift) || !(10..=shift).contains(&slice_shift) {
            return None;
        }
        Some(MimallocLayout {
            thread_next: o.thread_next?,
            interpreter_threads_head: o.interpreter_threads_head?,
            thread_heaps: o.thread_mimalloc_heaps?,
            thread_initialized: o.thread_mimalloc_initialized?,
            heap_gc: o.mimalloc_heap_gc?,
            heap_gc_pre: o.mimalloc_heap_gc_pre?,
            heap_size: o.mimalloc_heap_size?,
            heap_pages: o.mimalloc_heap_pages?,
            bin_full: o.mimalloc_bin_full?.min(1024),
            queue_size: o.mimalloc_page_queue_size?,
            queue_first: o.mimalloc_page_queue_first?,
            page_size: o.mimalloc_page_size?.max(8),
            page_slice_count: o.mimalloc_page_slice_count?,
            page_capacity: o.mimalloc_page_capacity?,
            page_reserved: o.mimalloc_page_reserved?,
            page_free: o.mimalloc_page_free?,
            page_used: o.mimalloc_page_used?,
            page_xblock_size: o.mimalloc_page_xblock_size?,
            page_local_free: o.mimalloc_page_local_free?,
            page_xthread_free: o.mimalloc_page_xthread_free?,
            page_xheap: o.mimalloc_page_xheap?,
            page_next: o.mimalloc_page_next?,
            segment_slices: o.mimalloc_segment_slices?,
            slices_per_segment: o.mimalloc_slices_per_segment?,
            segment_shift: shift,
            slice_shift,
            abandoned_count: o.interpreter_mimalloc_abandoned_count,
            gc_bits_at: o.object_ob_gc_bits?,
            gc_bits_tracked: o.gc_bits_tracked? as u8,
            gc_bits_frozen: o.gc_bits_frozen? as u8,
            ob_type: o.object_ob_type?,
            ob_size: o.var_object_ob_size?,
            // Py_TPFLAGS_PREHEADER's two words (gc_visit_heaps offset_pre).
            pre_header: 16,
        })
    }
}

/// What a walk of the mimalloc heaps found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MimallocStats {
    /// GC objects visited (tracked, not frozen).
    pub objects: u64,
    /// Thread states whose heaps were walked.
    pub threads: u64,
    /// Pages visited.
    pub pages: u64,
    /// Pages whose free lists did not add up to `capacity - used`.
    pub inconsistent_pages: u64,
    /// Pages skipped as implausible (outside a segment, blocks past their
    /// slices, a queue naming another heap).
    pub bad_pages: u64,
    /// Segments abandoned by exited threads, not walked.
    pub abandoned_segments: u64,
    /// A cap was reached, a list looped or a read failed: objects may be
    /// missing.
    pub truncated: bool,
}

/// Calls `visit(object, type, ob_size)` for every GC object the collector
/// of the free-threaded interpreter at `interpreter` would visit, thread by
/// thread, page by page. `ob_size` is the word after `ob_type` (0 if it
/// lies past the block). At most `max_objects` are visited.
pub fn walk_gc_heaps(
    memory: &dyn RemoteMemory,
    layout: &MimallocLayout,
    interpreter: u64,
    max_objects: u64,
    visit: &mut dyn FnMut(u64, u64, i64),
) -> MimallocStats {
    let l = layout;
    let mut stats = MimallocStats::default();
    if let Some(at) = l.abandoned_count {
        if let Ok(bytes) = read_vec(memory, interpreter + at, 8, 8) {
            stats.abandoned_segments = field_u64(&bytes, 0);
        }
    }
    let mut pages_seen = HashSet::new();
    let mut threads_seen = HashSet::new();
    let mut thread = match read_vec(memory, interpreter + l.interpreter_threads_head, 8, 8) {
        Ok(bytes) => field_u64(&bytes, 0),
        Err(_) => {
            stats.truncated = true;
            return stats;
        }
    };
    while thread != 0 {
        if threads_seen.len() >= MAX_THREADS || !threads_seen.insert(thread) {
            stats.truncated = true;
            break;
        }
        let initialized = read_vec(memory, thread + l.thread_initialized, 4, 4)
            .map(|b| field_u32(&b, 0))
            .unwrap_or(0);
        if initialized != 0 {
            stats.threads += 1;
            for (heap_id, offset) in [(l.heap_gc, 0), (l.heap_gc_pre, l.pre_header)] {
                let heap = thread + l.thread_heaps + heap_id * l.heap_size;
                walk_heap(
                    memory,
                    l,
                    heap,
                    offset,
                    max_objects,
                    &mut pages_seen,
                    &mut stats,
                    visit,
                );
            }
        }
        thread = match read_vec(memory, thread + l.thread_next, 8, 8) {
            Ok(bytes) => field_u64(&bytes, 0),
            Err(_) => {
                stats.truncated = true;
                break;
            }
        };
    }
    stats
}

/// One heap's page queues.
#[allow(clippy::too_many_arguments)]
fn walk_heap(
    memory: &dyn RemoteMemory,
    l: &MimallocLayout,
    heap: u64,
    object_offset: u64,
    max_objects: u64,
    pages_seen: &mut HashSet<u64>,
    stats: &mut MimallocStats,
    visit: &mut dyn FnMut(u64, u64, i64),
) {
    let queues_len = (l.bin_full + 1) * l.queue_size;
    let Ok(queues) = read_vec(memory, heap + l.heap_pages, queues_len as usize, 1 << 16) else {
        stats.truncated = true;
        return;
    };
    for queue in 0..=l.bin_full {
        let mut page = field_u64(&queues, queue * l.queue_size + l.queue_first);
        while page != 0 {
            if stats.objects >= max_objects
                || pages_seen.len() >= MAX_PAGES
                || !pages_seen.insert(page)
            {
                stats.truncated = true;
                return;
            }
            let Ok(header) = read_vec(memory, page, l.page_size as usize, 4096) else {
                stats.truncated = true;
                break;
            };
            if field_u64(&header, l.page_xheap) != heap {
                // Not this heap's page: garbage, or a page moving between
                // heaps under a running target. The rest of the queue
                // cannot be trusted.
                stats.bad_pages += 1;
                break;
            }
            stats.pages += 1;
            visit_page(
                memory,
                l,
                page,
                &header,
                object_offset,
                max_objects,
                stats,
                visit,
            );
            page = field_u64(&header, l.page_next);
        }
    }
}

/// Where a page's blocks start: `_mi_segment_page_start` of mimalloc 2.1.2.
/// `None` when the page is not an entry of its segment's slice array.
pub fn page_start(l: &MimallocLayout, page: u64, block_size: u64) -> Option<(u64, u64)> {
    let segment = page & !((1u64 << l.segment_shift) - 1);
    let slices = segment + l.segment_slices;
    let offset = page.checked_sub(slices)?;
    if !offset.is_multiple_of(l.page_size) {
        return None;
    }
    let index = offset / l.page_size;
    if index > l.slices_per_segment {
        return None;
    }
    let start_offset = if (8..=64).contains(&block_size) {
        3 * block_size
    } else if (8..=512).contains(&block_size) {
        block_size
    } else {
        0
    };
    Some((segment + (index << l.slice_shift), start_offset))
}

/// The used blocks of one page.
#[allow(clippy::too_many_arguments)]
fn visit_page(
    memory: &dyn RemoteMemory,
    l: &MimallocLayout,
    page: u64,
    header: &[u8],
    object_offset: u64,
    max_objects: u64,
    stats: &mut MimallocStats,
    visit: &mut dyn FnMut(u64, u64, i64),
) {
    let used = u64::from(field_u32(header, l.page_used));
    if used == 0 {
        return;
    }
    let capacity = u64::from(field_u16(header, l.page_capacity));
    let reserved = u64::from(field_u16(header, l.page_reserved));
    let block_size = u64::from(field_u32(header, l.page_xblock_size));
    let slice_count = u64::from(field_u32(header, l.page_slice_count));
    let Some((slice_start, start_offset)) = page_start(l, page, block_size) else {
        stats.bad_pages += 1;
        return;
    };
    let area = capacity.saturating_mul(block_size);
    if block_size < object_offset + 32
        || capacity == 0
        || capacity > reserved
        || used > capacity
        || slice_count == 0
        || slice_count > l.slices_per_segment
        || start_offset + area > slice_count << l.slice_shift
    {
        stats.bad_pages += 1;
        return;
    }
    let start = slice_start + start_offset;
    let header_len = HEADER.min(block_size - object_offset);
    if capacity == 1 {
        // One block (large objects): its header only.
        match read_vec(memory, start + object_offset, header_len as usize, 64) {
            Ok(object) => visit_block(l, start + object_offset, &object, stats, visit),
            Err(_) => stats.truncated = true,
        }
        return;
    }
    if area > MAX_AREA {
        stats.bad_pages += 1;
        return;
    }
    let Ok(blocks) = read_vec(memory, start, area as usize, MAX_AREA as usize) else {
        stats.truncated = true;
        return;
    };
    let mut free = vec![false; capacity as usize];
    let mut free_count = 0u64;
    let thread_free = field_u64(header, l.page_xthread_free) & !3;
    for head in [
        field_u64(header, l.page_free),
        field_u64(header, l.page_local_free),
        thread_free,
    ] {
        let mut block = head;
        let mut steps = 0u64;
        while block != 0 && steps < capacity {
            steps += 1;
            let Some(offset) = block.checked_sub(start) else {
                break;
            };
            if offset >= area || !offset.is_multiple_of(block_size) {
                break;
            }
            let index = (offset / block_size) as usize;
            if free[index] {
                break;
            }
            free[index] = true;
            free_count += 1;
            block = field_u64(&blocks, offset);
        }
    }
    if capacity - free_count != used {
        stats.inconsistent_pages += 1;
    }
    for (index, is_free) in free.iter().enumerate() {
        if *is_free {
            continue;
        }
        if stats.objects >= max_objects {
            stats.truncated = true;
            return;
        }
        let at = index as u64 * block_size + object_offset;
        let object = &blocks[at as usize..(at + header_len) as usize];
        visit_block(l, start + at, object, stats, visit);
    }
}

/// One used block: visited if it holds a tracked, unfrozen GC object.
fn visit_block(
    l: &MimallocLayout,
    address: u64,
    object: &[u8],
    stats: &mut MimallocStats,
    visit: &mut dyn FnMut(u64, u64, i64),
) {
    let bits = field_u8(object, l.gc_bits_at);
    if bits & l.gc_bits_tracked == 0 || bits & l.gc_bits_frozen != 0 {
        return;
    }
    let object_type = field_u64(object, l.ob_type);
    if object_type == 0 {
        return;
    }
    stats.objects += 1;
    visit(address, object_type, field_u64(object, l.ob_size) as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::SnapshotMemory;
    use pydeep_cpython::layouts::CPYTHON_3_13T;

    fn layout() -> MimallocLayout {
        MimallocLayout::from_offsets(&CPYTHON_3_13T).expect("3.13t has the mimalloc offsets")
    }

    const INTERP: u64 = 0x1000;
    const TSTATE: u64 = 0x10_0000;
    const SEGMENT: u64 = 0x4000_0000; // 32 MiB aligned

    fn put(buf: &mut [u8], at: u64, value: u64, width: usize) {
        buf[at as usize..at as usize + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }

    /// One thread whose GC heap has one page of 64-byte blocks at slice 1:
    /// blocks 0, 2 and 3 used and tracked (3 frozen), 1 free, 4 on the
    /// thread-free list (tag bit set), 5 used but untracked.
    fn target(l: &MimallocLayout) -> (SnapshotMemory, u64) {
        let mut memory = SnapshotMemory::new();
        let mut interp = vec![0u8; 16 << 10];
        put(&mut interp, l.interpreter_threads_head, TSTATE, 8);
        memory.add_region(INTERP, interp);
        let mut tstate = vec![0u8; 32 << 10];
        put(&mut tstate, l.thread_initialized, 1, 4);
        let heap = TSTATE + l.thread_heaps + l.heap_gc * l.heap_size;
        let page = SEGMENT + l.segment_slices + l.page_size;
        put(
            &mut tstate,
            heap - TSTATE + l.heap_pages + 3 * l.queue_size,
            page,
            8,
        );
        memory.add_region(TSTATE, tstate);
        let mut segment_info = vec![0u8; 4096];
        let p = l.segment_slices + l.page_size;
        put(&mut segment_info, p + l.page_slice_count, 1, 4);
        put(&mut segment_info, p + l.page_capacity, 6, 2);
        put(&mut segment_info, p + l.page_reserved, 100, 2);
        put(&mut segment_info, p + l.page_used, 5, 4);
        put(&mut segment_info, p + l.page_xblock_size, 64, 4);
        put(&mut segment_info, p + l.page_xheap, heap, 8);
        let start = SEGMENT + (1 << l.slice_shift) + 3 * 64;
        put(&mut segment_info, p + l.page_free, start + 64, 8);
        put(
            &mut segment_info,
            p + l.page_xthread_free,
            (start + 4 * 64) | 1,
            8,
        );
        memory.add_region(SEGMENT, segment_info);
        let mut blocks = vec![0u8; 6 * 64];
        for (index, bits) in [(0u64, 1u64), (2, 1), (3, 1 | 8), (5, 0)] {
            put(&mut blocks, index * 64 + l.gc_bits_at, bits, 1);
            put(&mut blocks, index * 64 + l.ob_type, 0x7000 + index, 8);
            put(&mut blocks, index * 64 + l.ob_size, index, 8);
        }
        memory.add_region(start, blocks);
        (memory, start)
    }

    #[test]
    fn the_used_tracked_unfrozen_blocks_of_a_thread_heap_are_visited() {
        let l = layout();
        let (memory, start) = target(&l);
        let mut seen = Vec::new();
        let stats = walk_gc_heaps(&memory, &l, INTERP, 1000, &mut |o, t, s| {
            seen.push((o, t, s))
        });
        assert_eq!(seen, vec![(start, 0x7000, 0), (start + 128, 0x7002, 2)]);
        assert_eq!((stats.threads, stats.pages, stats.objects), (1, 1, 2));
        assert_eq!((stats.bad_pages, stats.inconsistent_pages), (0, 1));
        assert!(!stats.truncated);
    }

    #[test]
    fn a_page_start_follows_mimalloc_segment_page_start() {
        let l = layout();
        let slice = |i: u64| SEGMENT + l.segment_slices + i * l.page_size;
        assert_eq!(page_start(&l, slice(0), 64), Some((SEGMENT, 192)));
        assert_eq!(
            page_start(&l, slice(2), 256),
            Some((SEGMENT + (2 << 16), 256))
        );
        assert_eq!(
            page_start(&l, slice(2), 1024),
            Some((SEGMENT + (2 << 16), 0))
        );
        assert_eq!(page_start(&l, slice(0) + 8, 64), None);
        assert_eq!(page_start(&l, SEGMENT, 64), None);
    }

    #[test]
    fn garbage_heaps_never_panic_loop_or_visit_without_bound() {
        let l = layout();
        let mut memory = SnapshotMemory::new();
        let garbage: Vec<u8> = (0..(64u32 << 10))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        memory.add_region(INTERP, garbage.clone());
        memory.add_region(TSTATE, garbage.clone());
        memory.add_region(SEGMENT, garbage);
        let mut visited = 0u64;
        let stats = walk_gc_heaps(&memory, &l, INTERP, 1000, &mut |_, _, _| visited += 1);
        assert!(visited <= 1000);
        assert!(stats.objects <= 1000);
        // A thread list pointing at itself stops.
        let mut memory = SnapshotMemory::new();
        let mut interp = vec![0u8; 16 << 10];
        put(&mut interp, l.interpreter_threads_head, TSTATE, 8);
        memory.add_region(INTERP, interp);
        let mut tstate = vec![0u8; 32 << 10];
        put(&mut tstate, l.thread_next, TSTATE, 8);
        memory.add_region(TSTATE, tstate);
        let stats = walk_gc_heaps(&memory, &l, INTERP, 1000, &mut |_, _, _| {});
        assert!(stats.truncated);
        assert_eq!(stats.threads, 0);
    }
}
