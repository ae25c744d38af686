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

/// Every data-stack chunk is at least this long (`DATA_STACK_CHUNK_SIZE`,
/// Python/pystate.c), so a window from a chunk's start up to this length is
/// always readable while the chunk lives.
const MIN_CHUNK: u64 = 16 << 10;

/// Room a chunk's window leaves above the frames used in the last samples:
/// the stack grows between samples (a miss costs a read, ~3 us; each page
/// read ~0.25 us).
const GROWTH: u64 = 2 << 10;

/// Samples a window not used stays prefetched: a recursion that unwinds
/// and descends again reuses its chunks (often at the same addresses).
const MAX_AGE: u32 = 8;

/// Most windows prefetched per thread.
const MAX_WINDOWS: usize = 64;

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
    /// Windows to read, oldest chunk first.
    pub windows: Vec<Window>,
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
    /// Forgets windows that failed to read (`failed`), ages the others and
    /// adds those the walk used (`used`, outermost chunk first).
    pub fn update(&mut self, used: &[Used], failed: &[u64]) {
        self.windows.retain(|w| !failed.contains(&w.address));
        for window in &mut self.windows {
            window.age += 1;
        }
        for u in used {
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
                    window.len = if window.age <= 1 {
                        window.len.max(len)
                    } else {
                        len
                    };
                    window.age = 0;
                }
                None => self.windows.push(Window {
                    address: u.address,
                    len,
                    age: 0,
                }),
            }
        }
        self.windows.retain(|w| w.age <= MAX_AGE && w.len > 0);
        // Most recently used first: after a deep recursion unwinds, its
        // freed chunks (the stale ones) fail last.
        self.windows.sort_by_key(|w| w.age);
        self.windows.truncate(MAX_WINDOWS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
