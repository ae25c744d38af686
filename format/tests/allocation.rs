//! Lengths in a file are never trusted for allocation: a chunk claiming
//! 64 MiB in a file of a few bytes allocates no more than the file holds.
//! (A test binary of its own, since it installs a counting allocator.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use pydeep_format::{version_check, FormatError, Reader, FORMAT_VERSION, MAGIC, MAX_CHUNK_LEN};

/// The system allocator, remembering the largest single request.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

#[test]
fn a_huge_declared_chunk_in_a_short_file_allocates_little() {
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    data.extend_from_slice(&version_check(FORMAT_VERSION).to_le_bytes());
    data.extend_from_slice(&MAX_CHUNK_LEN.to_le_bytes()); // compressed: the largest allowed
    data.extend_from_slice(&MAX_CHUNK_LEN.to_le_bytes()); // uncompressed
    data.extend_from_slice(&[0; 8]);
    data.extend_from_slice(&[0x55; 1000]);
    LARGEST.store(0, Ordering::Relaxed);
    let mut reader = Reader::new(&data[..]).unwrap();
    let result = reader.next_chunk();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        matches!(
            result,
            Err(FormatError::Truncated {
                offset: 16,
                complete_chunks: 0
            })
        ),
        "{result:?}"
    );
    assert!(largest < 64 << 10, "largest allocation {largest} bytes");
}
