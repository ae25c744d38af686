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
//! Two ways to fill it. A miss fetches its page (and, for walks over
//! objects allocated together, the pages after it: [`PageCache::new`]), and
//! a reader that knows what it will read next asks for all of it at once
//! ([`PageCache::prefetch`]: every page of many addresses in one call), so
//! the target waits for few calls that each copy only needed pages. Each
//! page copied costs about as much as a call (the kernel pins the target's
//! page, we fault in ours), so `pydeep dump` reads no page ahead
//! ([`PageCache::exact`]).
//!
//! Only for a paused target: pages read before an object changed would be
//! served stale. Bounded: at most [`PageCache::MAX_PAGES`] pages are kept
//! (the cache starts over when full), and reads larger than
//! [`PageCache::DIRECT_READ`] bypass it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::process::memory::{MemoryError, RemoteMemory};

/// Bytes per page (x86-64 Linux).
const PAGE: u64 = 4096;

/// Pages fetched by one miss: the missed page and the ones after it, read in
/// one call as far as they are readable (objects allocated together sit
/// together: a list's items, a dict's entries, a frame's neighbours).
const READ_AHEAD: usize = 8;

/// Hashes a page address (a multiple of [`PAGE`]) with one multiply: every
/// field read looks its page up, and SipHash cost more than the copy.
#[derive(Default)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (value >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Pages = HashMap<u64, Option<Box<[u8]>>, BuildHasherDefault<PageHasher>>;

/// A page cache over `inner` for the duration of one pause.
pub struct PageCache<'a> {
    inner: &'a dyn RemoteMemory,
    /// Page address to its bytes, or `None` if the page is unreadable.
    pages: RefCell<Pages>,
    /// Pages a miss fetches (the missed one included).
    read_ahead: Cell<usize>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl<'a> PageCache<'a> {
    /// At most this many pages (64 MiB) are kept.
    pub const MAX_PAGES: usize = 16_384;
    /// Reads longer than this go straight to the target.
    pub const DIRECT_READ: usize = 64 * 1024;

    /// A cache over `inner`, which must stay paused while the cache is
    /// used; a miss also fetches the uncached pages after it (up to 8 in
    /// all), for walks over objects allocated together (heap lists,
    /// object graphs).
    pub fn new(inner: &'a dyn RemoteMemory) -> PageCache<'a> {
        PageCache::with_read_ahead(inner, READ_AHEAD)
    }

    /// A cache whose misses fetch their own page only: for readers that
    /// [`PageCache::prefetch`] what they will read, like `pydeep dump`.
    pub fn exact(inner: &'a dyn RemoteMemory) -> PageCache<'a> {
        PageCache::with_read_ahead(inner, 1)
    }

    fn with_read_ahead(inner: &'a dyn RemoteMemory, read_ahead: usize) -> PageCache<'a> {
        PageCache {
            inner,
            pages: RefCell::new(Pages::default()),
            read_ahead: Cell::new(read_ahead.max(1)),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// From now on a miss fetches `pages` pages (at least 1): more for a
    /// walk through memory allocated in order (a frame chain), 1 again
    /// after it.
    pub fn set_read_ahead(&self, pages: usize) {
        self.read_ahead.set(pages.max(1));
    }

    /// Fetches every uncached page holding a byte of the `len` bytes at each
    /// of `addresses` (`len` at most a page), in as few calls as
    /// `process_vm_readv` allows (1024 pages per call). Unreadable pages are
    /// remembered as such; nothing fails but a target that cannot be read
    /// at all (the reads that follow say what was unreadable).
    pub fn prefetch(&self, addresses: &[u64], len: u64) -> Result<(), MemoryError> {
        let len = len.clamp(1, PAGE);
        self.prefetch_ranges(
            addresses
                .iter()
                .filter(|&&address| address != 0)
                .map(|&address| (address, len)),
        )
    }

    /// [`PageCache::prefetch`] of `(address, len)` ranges; ranges longer
    /// than [`PageCache::DIRECT_READ`] are left to their reads.
    fn prefetch_ranges(&self, ranges: impl Iterator<Item = (u64, u64)>) -> Result<(), MemoryError> {
        let mut wanted: Vec<u64> = {
            let pages = self.pages.borrow();
            ranges
                .filter(|&(_, len)| len > 0 && len <= Self::DIRECT_READ as u64)
                .filter_map(|(address, len)| {
                    let first = address & !(PAGE - 1);
                    let last = address.checked_add(len - 1)? & !(PAGE - 1);
                    Some((first..=last).step_by(PAGE as usize))
                })
                .flatten()
                .filter(|page| !pages.contains_key(page))
                .collect()
        };
        wanted.sort_unstable();
        wanted.dedup();
        let room = Self::MAX_PAGES.saturating_sub(self.pages.borrow().len());
        wanted.truncate(room);
        let mut next = 0;
        while next < wanted.len() {
            let batch = &wanted[next..];
            self.misses.set(self.misses.get() + 1);
            let mut buffers: Vec<Box<[u8]>> = batch
                .iter()
                .map(|_| vec![0u8; PAGE as usize].into_boxed_slice())
                .collect();
            let mut pieces: Vec<(u64, &mut [u8])> = batch
                .iter()
                .copied()
                .zip(buffers.iter_mut().map(|b| &mut b[..]))
                .collect();
            let filled = self.inner.read_prefix(&mut pieces)?;
            drop(pieces);
            let mut pages = self.pages.borrow_mut();
            for (&address, buffer) in batch.iter().zip(buffers).take(filled) {
                pages.insert(address, Some(buffer));
            }
            if let Some(&unreadable) = batch.get(filled) {
                pages.insert(unreadable, None);
            }
            next += filled + 1;
        }
        Ok(())
    }

    /// (reads served from cached pages, page fetches), for measurements.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// Fetches the page at `page` and up to `read_ahead - 1` uncached pages
    /// after it in one call.
    fn fetch(&self, page: u64) -> Result<(), MemoryError> {
        self.misses.set(self.misses.get() + 1);
        let mut pages = self.pages.borrow_mut();
        let read_ahead = self.read_ahead.get();
        if pages.len() + read_ahead > Self::MAX_PAGES {
            pages.clear();
        }
        let addresses: Vec<u64> = (0..read_ahead as u64)
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
                // Unreadable, as the target said when the page was
                // fetched; the error the target gives for the read itself.
                return Err(MemoryError::Unreadable {
                    address,
                    len: buf.len(),
                });
            };
            let from = (at - page) as usize;
            let take = (PAGE as usize - from).min(buf.len() - done);
            buf[done..done + take].copy_from_slice(&bytes[from..from + take]);
            done += take;
        }
        Ok(())
    }

    /// The pages of every piece are fetched together first: readers that
    /// batch their reads (a dict's key lengths, a walker's prefetch) cost
    /// the target one call, not one per page.
    fn read_many(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        self.prefetch_ranges(
            pieces
                .iter()
                .map(|(address, buf)| (*address, buf.len() as u64)),
        )?;
        for (address, buf) in pieces.iter_mut() {
            self.read(*address, buf)?;
        }
        Ok(())
    }

    fn read_prefix(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<usize, MemoryError> {
        self.prefetch_ranges(
            pieces
                .iter()
                .map(|(address, buf)| (*address, buf.len() as u64)),
        )?;
        for (done, (address, buf)) in pieces.iter_mut().enumerate() {
            match self.read(*address, buf) {
                Ok(()) => {}
                Err(MemoryError::Unreadable { .. } | MemoryError::TooLarge { .. }) => {
                    return Ok(done)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(pieces.len())
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
        assert_eq!(
            cache.read(0x18004, &mut buf),
            memory.read(0x18004, &mut buf),
            "the same error as the target's"
        );
        // Known unreadable: no call at all (the one above is the truth's).
        assert_eq!(memory.read_calls(), calls + 1);
        cache.read(0x20000, &mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_prefetch_copies_the_pages_of_many_addresses_in_one_call_per_readable_run() {
        let memory = fake();
        let cache = PageCache::exact(&memory);
        // 0x12ff0 + 32 runs into the unmapped page at 0x13000; 0x18000 is
        // unmapped; 0 is skipped.
        cache
            .prefetch(&[0x20008, 0x10010, 0x12ff0, 0x18000, 0], 32)
            .unwrap();
        // 0x10000 and 0x12000 (stops at 0x13000), 0x18000 (fails at
        // once), 0x20000.
        assert_eq!(memory.read_calls(), 3);
        for (address, len) in [(0x10010u64, 8usize), (0x12ff0, 16), (0x20008, 24)] {
            let mut ours = vec![0u8; len];
            let mut truth = vec![0u8; len];
            cache.read(address, &mut ours).unwrap();
            memory.read(address, &mut truth).unwrap();
            assert_eq!(ours, truth, "{address:#x}+{len}");
        }
        let calls = memory.read_calls();
        assert!(cache.read(0x18000, &mut [0u8; 8]).is_err());
        assert!(cache.read(0x12ff8, &mut [0u8; 16]).is_err());
        // The three reads of the truth above, none by the cache.
        assert_eq!(calls, 3 + 3);
        assert_eq!(memory.read_calls(), calls);
    }

    #[test]
    fn a_batch_read_costs_one_call_for_all_its_pages() {
        let memory = fake();
        let cache = PageCache::exact(&memory);
        let (mut a, mut b, mut c) = ([0u8; 8], [0u8; 8], [0u8; 8]);
        cache
            .read_many(&mut [
                (0x10008, &mut a[..]),
                (0x12000, &mut b[..]),
                (0x20000, &mut c[..]),
            ])
            .unwrap();
        assert_eq!(memory.read_calls(), 1);
        let mut truth = [0u8; 8];
        memory.read(0x12000, &mut truth).unwrap();
        assert_eq!(b, truth);
        assert_eq!(c, [0, 1, 2, 3, 4, 5, 6, 7]);
        // A piece in unmapped memory ends a prefix read there, as the
        // target's own process_vm_readv does.
        let done = cache
            .read_prefix(&mut [
                (0x10000, &mut a[..]),
                (0x18000, &mut b[..]),
                (0x20000, &mut c[..]),
            ])
            .unwrap();
        assert_eq!(done, 1);
    }

    #[test]
    fn reads_near_the_top_of_the_address_space_do_not_overflow() {
        let memory = fake();
        let cache = PageCache::new(&memory);
        assert!(cache.read(u64::MAX - 3, &mut [0u8; 8]).is_err());
        assert!(cache.read(!(PAGE - 1), &mut [0u8; 8]).is_err());
    }
}
