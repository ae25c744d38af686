//! What the previous samples read, read again in the next sample's first
//! batch.
//!
//! A thread's stack changes little from one sample to the next: on 3.11+
//! its frames stay in the same data-stack chunks, and on 3.11/3.12 its
//! current-frame pointer stays in the same C-stack `_PyCFrame` while the
//! same C call runs. So the first `process_vm_readv` of a sample reads,
//! after the thread states, the pointer at last sample's address and last
//! sample's windows (each chunk from its start to the frames the walk used,
//! plus room to grow). A chunk freed since (CPython 3.11+ unmaps a chunk
//! when its last frame returns, Objects/obmalloc.c `_PyObject_VirtualFree`)
//! makes its piece fail; the kernel stops the batch there, so these pieces
//! come last, the ones most likely still mapped first. Whatever turns out
//! missing is read as before, in a batch or by the walk.
//!
//! 3.9/3.10 frame objects live anywhere on the heap, one read each when
//! walked: the first batch reads the headers of the frame objects the last
//! walks visited instead (a stack's callers stay at their addresses, and a
//! returning frame's object is recycled, through its code's zombie frame
//! or the free list, for the next call), so a stack that did not change is
//! walked without another read, and one that did reads only its new frames.

/// Every data-stack chunk is at least this long (`DATA_STACK_CHUNK_SIZE`,
/// Python/pystate.c), so a window from a chunk's start up to this length is
/// always readable while the chunk lives.
pub(super) const MIN_CHUNK: u64 = 16 << 10;

/// Room a chunk's window leaves above the frames used in the last samples:
/// the stack grows between samples (a miss costs a read, ~3 us; each page
/// read ~0.25 us).
const GROWTH: u64 = 2 << 10;

/// Samples a window not used stays prefetched: a recursion that unwinds
/// and descends again reuses its chunks (often at the same addresses).
const MAX_AGE: u32 = 8;

/// Most windows prefetched per thread.
const MAX_WINDOWS: usize = 64;

/// Frame objects prefetched per thread beyond those its last walk
/// visited: the recently visited ones a churning stack recycles.
const RECENT_FRAME_OBJECTS: usize = 64;

/// Most frame objects prefetched per thread.
const MAX_FRAME_OBJECTS: usize = 4096;

/// Frame objects less than this far apart are read as one range: the
/// bytes between lie on the pages of the two headers (the gap crosses at
/// most one page boundary), so the range is readable when they are, and
/// each piece of a batch costs the kernel a page pin (~0.4 µs measured on
/// a 1,000-deep 3.9 stack read as 1,000 pieces) where copying a page
/// costs a tenth of that.
const FRAME_OBJECT_GAP: u64 = 4096;

/// Longest range of frame objects read as one piece.
const MAX_FRAME_OBJECT_RANGE: u64 = 64 << 10;

/// A range read in the first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    /// Start address (a chunk's start, or the start of a window read
    /// around a frame outside the chunks).
    pub address: u64,
    /// Bytes to read.
    pub len: u64,
    /// Samples since the walk last used it (0: the last sample).
    pub age: u32,
    /// Its place among the windows the walk used when it last used it,
    /// outermost first: a stack's chunks live and die in this order.
    pub position: u32,
    /// It starts a data-stack chunk.
    pub is_chunk: bool,
}

/// One thread's prefetch: where its current-frame pointer was, and which
/// windows its last walks used.
#[derive(Debug, Clone, Default)]
pub(super) struct ThreadPrefetch {
    /// Address of the thread state.
    pub thread_state: u64,
    /// Address of the current-frame pointer when it lives outside the
    /// thread state (3.11/3.12: `tstate->cframe->current_frame`), else 0.
    pub frame_pointer_at: u64,
    /// Windows to read, outermost first.
    pub windows: Vec<Window>,
    /// The position of the innermost window used, at its lowest in the
    /// last samples (it climbs back one place per sample): from here on
    /// the stack may end, so the first batch re-reads the current-frame
    /// pointer after each window (see `sample.rs`).
    pub shallowest: u32,
    /// Frame headers the last walk visited (room reserved for the next).
    pub last_depth: usize,
    /// 3.9/3.10: frame objects to read (`frame_header_len` bytes each),
    /// the last walk's first, innermost first, then others visited lately.
    pub frame_objects: Vec<u64>,
    /// Bytes of each frame object's header the walk reads.
    pub frame_header_len: u64,
    /// 3.11+: the thread's last complete walk, whose outer frames the
    /// next walk takes where the copy holds them unchanged (reuse.rs).
    pub last_walk: super::reuse::LastWalk,
}

/// A range the walk just used: where it starts, the end of the last frame
/// header read in it, and whether it starts a data-stack chunk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Used {
    pub address: u64,
    pub end: u64,
    pub is_chunk: bool,
}

impl ThreadPrefetch {
    /// Forgets windows that failed to read (`failed`) unless they start a
    /// chunk, ages the others and adds those the walk used (`used`,
    /// outermost chunk first).
    ///
    /// A chunk freed when the stack unwound is usually mapped again at the
    /// same address when the stack grows back (mmap reuses the gap), so
    /// its window stays until it ages out: it fails after the windows
    /// below it, which are the ones the stack still uses.
    pub fn update(&mut self, used: &[Used], failed: &[u64]) {
        self.windows
            .retain(|w| w.is_chunk || !failed.contains(&w.address));
        let innermost = used.len().saturating_sub(1) as u32;
        self.shallowest = innermost.min(self.shallowest.saturating_add(1));
        for window in &mut self.windows {
            window.age += 1;
        }
        for (position, u) in used.iter().enumerate() {
            let position = position as u32;
            let extent = u.end.saturating_sub(u.address);
            // A chunk's window leaves room to grow (within the chunk's
            // guaranteed size); any other window (a frame on the C stack,
            // a guess below a frame) is read exactly as used.
            let len = if u.is_chunk {
                extent.max((extent + GROWTH).min(MIN_CHUNK))
            } else {
                extent
            };
            match self.windows.iter_mut().find(|w| w.address == u.address) {
                Some(window) => {
                    // A window keeps the most it held while in use: a
                    // stack that moves up and down within its chunks
                    // between samples (a recursion sampled at 1 kHz) finds
                    // every chunk copied far enough, and a window not used
                    // for MAX_AGE samples starts over.
                    window.len = window.len.max(len);
                    window.age = 0;
                    window.position = position;
                    window.is_chunk = u.is_chunk;
                }
                None => self.windows.push(Window {
                    address: u.address,
                    len,
                    age: 0,
                    position,
                    is_chunk: u.is_chunk,
                }),
            }
        }
        self.windows.retain(|w| w.age <= MAX_AGE && w.len > 0);
        // Outermost first, as the stack's chunks live and die: a chunk is
        // freed only after every chunk above it, so the windows still
        // mapped come first and the first batch stops (at a freed chunk)
        // only after them; the innermost frames, the ones that change,
        // are copied last, right before the pointer read that brackets
        // the copy. At one place, the most recently used first.
        self.windows.sort_by_key(|w| (w.position, w.age));
        self.windows.truncate(MAX_WINDOWS);
    }

    /// 3.9/3.10: the frame objects to read next time: those the walk just
    /// `visited` (innermost first), then up to [`RECENT_FRAME_OBJECTS`]
    /// of the ones read before, minus any that failed to read (`failed`:
    /// its memory is gone).
    pub fn update_frame_objects(&mut self, visited: &[u64], header_len: u64, failed: &[u64]) {
        let limit = visited
            .len()
            .saturating_add(RECENT_FRAME_OBJECTS)
            .min(MAX_FRAME_OBJECTS);
        // Sorted, not hashed: this runs every sample of a 3.9/3.10 target,
        // and at depth 1,000 sorting the addresses costs a fraction of
        // hashing them.
        let mut seen = visited.to_vec();
        seen.sort_unstable();
        let recent = self
            .frame_objects
            .iter()
            .copied()
            .filter(|a| seen.binary_search(a).is_err() && !failed.contains(a))
            .take(RECENT_FRAME_OBJECTS);
        let mut next: Vec<u64> = visited
            .iter()
            .copied()
            .filter(|a| !failed.contains(a))
            .collect();
        next.extend(recent);
        next.truncate(limit);
        self.frame_objects = next;
        self.frame_header_len = header_len;
    }

    /// The ranges to read for [`ThreadPrefetch::frame_objects`]: (start,
    /// end), by address, headers less than [`FRAME_OBJECT_GAP`] apart
    /// merged into one range of at most [`MAX_FRAME_OBJECT_RANGE`] bytes.
    pub fn frame_object_ranges(&self) -> Vec<(u64, u64)> {
        let len = self.frame_header_len;
        let mut starts = self.frame_objects.clone();
        starts.sort_unstable();
        starts.dedup();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for start in starts {
            let end = start.saturating_add(len);
            match ranges.last_mut() {
                Some((from, to))
                    if start < to.saturating_add(FRAME_OBJECT_GAP)
                        && end - *from <= MAX_FRAME_OBJECT_RANGE =>
                {
                    *to = (*to).max(end);
                }
                _ => ranges.push((start, end)),
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_objects_close_together_are_read_as_one_range() {
        let mut prefetch = ThreadPrefetch::default();
        let addresses = [0x10_0000, 0x10_0200, 0x10_1000, 0x20_0000, 0x10_0400];
        prefetch.update_frame_objects(&addresses, 0x80, &[]);
        assert_eq!(
            prefetch.frame_object_ranges(),
            [(0x10_0000, 0x10_1080), (0x20_0000, 0x20_0080)]
        );
        // A gap of a page or more is not read.
        prefetch.update_frame_objects(&[0x10_0000, 0x10_0000 + 0x80 + FRAME_OBJECT_GAP], 0x80, &[]);
        assert_eq!(prefetch.frame_object_ranges().len(), 2);
        // Nor is a range longer than the bound.
        let far: Vec<u64> = (0..1000).map(|i| 0x100_0000 + i * 0x800).collect();
        prefetch.update_frame_objects(&far, 0x80, &[]);
        let ranges = prefetch.frame_object_ranges();
        assert!(ranges.iter().all(|(s, e)| e - s <= MAX_FRAME_OBJECT_RANGE));
        assert!(ranges.len() < 40, "{}", ranges.len());
    }

    #[test]
    fn frame_objects_visited_come_first_then_recent_ones_and_failed_ones_go() {
        let mut prefetch = ThreadPrefetch::default();
        prefetch.update_frame_objects(&[0x30, 0x20, 0x10], 88, &[]);
        assert_eq!(prefetch.frame_objects, [0x30, 0x20, 0x10]);
        assert_eq!(prefetch.frame_header_len, 88);
        // The stack unwound and called again through a recycled object.
        prefetch.update_frame_objects(&[0x40, 0x10], 88, &[]);
        assert_eq!(prefetch.frame_objects, [0x40, 0x10, 0x30, 0x20]);
        prefetch.update_frame_objects(&[0x40, 0x10], 88, &[0x30]);
        assert_eq!(prefetch.frame_objects, [0x40, 0x10, 0x20]);
        // Bounded: the walk's own frames, then at most RECENT_FRAME_OBJECTS.
        let many: Vec<u64> = (1..=200).map(|i| i * 0x100).collect();
        prefetch.update_frame_objects(&many, 88, &[]);
        prefetch.update_frame_objects(&[0x8], 88, &[]);
        assert_eq!(prefetch.frame_objects.len(), 1 + RECENT_FRAME_OBJECTS);
    }

    #[test]
    fn chunk_windows_leave_room_to_grow_and_stale_ones_are_dropped() {
        let mut prefetch = ThreadPrefetch::default();
        let used = [
            Used {
                address: 0x10000,
                end: 0x10000 + 1000,
                is_chunk: true,
            },
            Used {
                address: 0x90000,
                end: 0x90000 + 100,
                is_chunk: false,
            },
        ];
        prefetch.update(&used, &[]);
        assert_eq!(prefetch.windows[0].len, 1000 + GROWTH);
        assert_eq!(prefetch.windows[1].len, 100);
        prefetch.update(&used[1..], &[]);
        assert_eq!(prefetch.windows[0].address, 0x90000);
        assert_eq!(prefetch.windows[1].age, 1);
        for _ in 0..MAX_AGE {
            prefetch.update(&used[1..], &[]);
        }
        assert_eq!(prefetch.windows.len(), 1);
        prefetch.update(&[], &[0x90000]);
        assert!(prefetch.windows.is_empty());
    }

    #[test]
    fn a_chunk_window_never_reaches_past_the_smallest_chunk_unless_used_so() {
        let mut prefetch = ThreadPrefetch::default();
        let near_end = Used {
            address: 0x10000,
            end: 0x10000 + MIN_CHUNK - 100,
            is_chunk: true,
        };
        prefetch.update(&[near_end], &[]);
        assert_eq!(prefetch.windows[0].len, MIN_CHUNK);
        let big = Used {
            end: 0x10000 + 3 * MIN_CHUNK,
            ..near_end
        };
        prefetch.update(&[big], &[]);
        assert_eq!(prefetch.windows[0].len, 3 * MIN_CHUNK);
    }

    #[test]
    fn chunks_go_outermost_first_and_a_freed_one_waits_to_be_mapped_again() {
        let chunk = |address: u64, used: u64| Used {
            address,
            end: address + used,
            is_chunk: true,
        };
        let mut prefetch = ThreadPrefetch::default();
        // A stack over three chunks (mmap hands them out downwards).
        let deep = [
            chunk(0x90000, 16000),
            chunk(0x50000, 16000),
            chunk(0x10000, 500),
        ];
        prefetch.update(&deep, &[]);
        let order = |p: &ThreadPrefetch| p.windows.iter().map(|w| w.address).collect::<Vec<_>>();
        assert_eq!(order(&prefetch), [0x90000, 0x50000, 0x10000]);
        assert_eq!(prefetch.shallowest, 1, "climbs one place per sample");
        // The stack unwinds into its first chunk: the second one failed
        // to read (freed). It stays, behind the one still used, and the
        // window of the first chunk keeps its length.
        prefetch.update(&[chunk(0x90000, 4000)], &[0x50000]);
        assert_eq!(order(&prefetch), [0x90000, 0x50000, 0x10000]);
        assert_eq!(
            prefetch.windows[0].len,
            16000 + GROWTH.min(MIN_CHUNK - 16000)
        );
        assert_eq!(prefetch.windows[1].age, 1);
        assert_eq!(prefetch.shallowest, 0);
        // Descending again through the same addresses finds them all.
        prefetch.update(&deep, &[]);
        assert!(prefetch.windows.iter().all(|w| w.age == 0));
        assert_eq!(prefetch.shallowest, 1);
        // Not used again, they age out.
        for _ in 0..=MAX_AGE {
            prefetch.update(&deep[..1], &[0x50000]);
        }
        assert_eq!(order(&prefetch), [0x90000]);
    }
}
