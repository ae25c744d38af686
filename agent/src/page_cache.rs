//! A read-through cache of whole pages of a paused target.
//!
//! Deep snapshots (`dump --locals`, `objects`, `heap`, snapshots in
//! recordings) read object after object, field after field: thousands of
//! small reads, each a `process_vm_readv` that costs ~2 µs while the target
//! waits (13,679 calls for one `dump --locals` of a 4-thread program). While
//! the target is paused its memory cannot change, so each page needs reading
//! only once: this layer turns field reads into page reads, and a miss
//! fetches its page together with the pages after it in one call.
//!
//! Only for a paused target: pages read before an object changed would be
//! served stale. Bounded: at most [`PageCache::MAX_PAGES`] pages are kept
//! (the cache starts over when full), and reads larger than
//! [`PageCache::DIRECT_READ`] bypass it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::memory::{MemoryError, RemoteMemory};

/// Bytes per page (x86-64 Linux).
const PAGE: u64 = 4096;

/// Pages fetched by one miss: the missed page and the ones after it, read in
/// one call as far as they are readable (objects allocated together sit
/// together: a list's items, a dict's entries, a frame's neighbours).
const READ_AHEAD: usize = 8;

/// A page cache over `inner` for the duration of one pause.
pub struct PageCache<'a> {
    inner: &'a dyn RemoteMemory,
    /// Page address to its bytes, or `None` if the page is unreadable.
    pages: RefCell<HashMap<u64, Option<Box<[u8]>>>>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl<'a> PageCache<'a> {
    /// At most this many pages (64 MiB) are kept.
    pub const MAX_PAGES: usize = 16_384;
    /// Reads longer than this go straight to the target.
    pub const DIRECT_READ: usize = 64 * 1024;

    /// A cache over `inner`, which must stay paused while the cache is used.
    pub fn new(inner: &'a dyn RemoteMemory) -> PageCache<'a> {
        PageCache {
            inner,
            pages: RefCell::new(HashMap::new()),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// (reads served from cached pages, page fetches), for measurements.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// Fetches the page at `page` and up to READ_AHEAD - 1 uncached pages
    /// after it in one call.
    fn fetch(&self, page: u64) -> Result<(), MemoryError> {
        self.misses.set(self.misses.get() + 1);
        let mut pages = self.pages.borrow_mut();
        if pages.len() + READ_AHEAD > Self::MAX_PAGES {
            pages.clear();
        }
        let addresses: Vec<u64> = (0..READ_AHEAD as u64)
            .map(|i| page.wrapping_add(i * PAGE))
            .take_while(|&at| at >= page)
            .enumerate()
            .take_while(|&(i, at)| i == 0 || !pages.contains_key(&at))
            .map(|(_, at)| at)
            .collect();
        let mut buffers: Vec<Box<[u8]>> = addresses
            .iter()
            .map(|_| vec![0u8; PAGE as usize].into_boxed_slice())
            .collect();
        let mut pieces: Vec<(u64, &mut [u8])> = addresses
            .iter()
            .copied()
            .zip(buffers.iter_mut().map(|b| &mut b[..]))
            .collect();
        let filled = self.inner.read_prefix(&mut pieces)?;
        drop(pieces);
        for (index, (address, buffer)) in addresses.into_iter().zip(buffers).enumerate() {
            if index < filled {
                pages.insert(address, Some(buffer));
            } else if index == 0 {
                // Only the page asked for is known unreadable; the ones
                // after the first failure were never tried.
                pages.insert(address, None);
            }
        }
        Ok(())
    }
}

impl RemoteMemory for PageCache<'_> {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = address.checked_add(buf.len() as u64);
        if buf.len() > Self::DIRECT_READ || end.is_none() {
            return self.inner.read(address, buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = address + done as u64;
            let page = at & !(PAGE - 1);
            let cached = self.pages.borrow().contains_key(&page);
            if cached {
                self.hits.set(self.hits.get() + 1);
            } else {
                self.fetch(page)?;
            }
            let pages = self.pages.borrow();
            let Some(Some(bytes)) = pages.get(&page) else {
                drop(pages);
                // Unreadable: let the target's own read say why, exactly.
                return self.inner.read(address, buf);
            };
            let from = (at - page) as usize;
            let take = (PAGE as usize - from).min(buf.len() - done);
            buf[done..done + take].copy_from_slice(&bytes[from..from + take]);
            done += take;
        }
        Ok(())
    }

    fn read_calls(&self) -> u64 {
        self.inner.read_calls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory of a few mapped ranges, counting calls like the real thing.
    struct Fake {
        ranges: Vec<(u64, Vec<u8>)>,
        calls: Cell<u64>,
    }

    impl Fake {
        fn readable(&self, address: u64, len: usize) -> Option<&[u8]> {
            self.ranges.iter().find_map(|(start, bytes)| {
                let offset = address.checked_sub(*start)? as usize;
                bytes.get(offset..offset.checked_add(len)?)
            })
        }
    }

    impl RemoteMemory for Fake {
        fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
            self.calls.set(self.calls.get() + 1);
            let bytes = self
                .readable(address, buf.len())
                .ok_or(MemoryError::Unreadable {
                    address,
                    len: buf.len(),
                })?;
            buf.copy_from_slice(bytes);
            Ok(())
        }

        fn read_prefix(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<usize, MemoryError> {
            self.calls.set(self.calls.get() + 1);
            for (done, (address, buf)) in pieces.iter_mut().enumerate() {
                match self.readable(*address, buf.len()) {
                    Some(bytes) => buf.copy_from_slice(bytes),
                    None => return Ok(done),
                }
            }
            Ok(pieces.len())
        }

        fn read_calls(&self) -> u64 {
            self.calls.get()
        }
    }

    fn fake() -> Fake {
        // Three readable pages at 0x10000, a hole, one page at 0x20000.
        let bytes: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        let last: Vec<u8> = (0..PAGE).map(|i| (i % 13) as u8).collect();
        Fake {
            ranges: vec![(0x10000, bytes), (0x20000, last)],
            calls: Cell::new(0),
        }
    }

    #[test]
    fn reads_equal_the_target_and_need_one_call_per_run_of_pages() {
        let memory = fake();
        let cache = PageCache::new(&memory);
        for (address, len) in [
            (0x10010u64, 8usize),
            (0x10ff8, 16),
            (0x11800, 3000),
            (0x12ffc, 4),
        ] {
            let mut ours = vec![0u8; len];
            let mut truth = vec![0u8; len];
            cache.read(address, &mut ours).unwrap();
            memory.read(address, &mut truth).unwrap();
            assert_eq!(ours, truth, "{address:#x}+{len}");
        }
        // The 4 reads above went to the fake once each; the cache itself
        // fetched the three pages in one call.
        assert_eq!(memory.read_calls(), 4 + 1);
    }

    #[test]
    fn unreadable_memory_fails_like_the_target_and_is_remembered() {
        let memory = fake();
        let cache = PageCache::new(&memory);
        let mut buf = [0u8; 8];
        assert!(cache.read(0x18000, &mut buf).is_err());
        // A read running off the end of the mapping fails too.
        assert!(cache.read(0x12ffc, &mut [0u8; 8]).is_err());
        let calls = memory.read_calls();
        assert!(cache.read(0x18000, &mut buf).is_err());
        // Known unreadable: one exact read for the error, no page fetch.
        assert_eq!(memory.read_calls(), calls + 1);
        cache.read(0x20000, &mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn reads_near_the_top_of_the_address_space_do_not_overflow() {
        let memory = fake();
        let cache = PageCache::new(&memory);
        assert!(cache.read(u64::MAX - 3, &mut [0u8; 8]).is_err());
        assert!(cache.read(!(PAGE - 1), &mut [0u8; 8]).is_err());
    }
}
