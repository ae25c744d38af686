//! Access to another process's memory, behind one trait.
//!
//! Everything pydeep learns about a target goes through [`RemoteMemory`]: the
//! live implementation ([`LiveMemory`]) reads with `process_vm_readv`, and the
//! in-memory one ([`SnapshotMemory`]) serves reads from byte regions, so the
//! walkers are unit tested and fuzzed without any process. Remote memory is
//! untrusted: every read has a caller-chosen size, and the helpers here cap
//! the lengths they accept.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest single read pydeep ever asks for (a bytecode array, a source
/// string, a data-stack chunk). Anything claiming to be larger is garbage.
pub const MAX_READ: usize = 16 << 20;

/// Why a read of the target's memory failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The range is not mapped (or not readable) in the target.
    #[error("address 0x{address:x} (+{len} bytes) is not readable in the target")]
    Unreadable {
        /// Start of the failed range.
        address: u64,
        /// Its length.
        len: usize,
    },
    /// The kernel refused access to the process (EPERM).
    #[error("permission denied reading the memory of process {pid}")]
    PermissionDenied {
        /// The target.
        pid: i32,
    },
    /// The process no longer exists (ESRCH).
    #[error("process {pid} has exited")]
    ProcessGone {
        /// The target.
        pid: i32,
    },
    /// A length read from the target exceeds what pydeep accepts.
    #[error("refusing to read {len} bytes at 0x{address:x}: larger than the {limit} byte limit")]
    TooLarge {
        /// Start of the range.
        address: u64,
        /// Requested length.
        len: usize,
        /// The limit it exceeded.
        limit: usize,
    },
}

/// Reads of another process's memory.
pub trait RemoteMemory {
    /// Fills `buf` with the bytes at `address`, entirely or not at all.
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Fills every `(address, buffer)` piece, with as few system calls as the
    /// implementation can manage (one `process_vm_readv` for up to 1024
    /// pieces). Fails if any piece cannot be read.
    fn read_many(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        for (address, buf) in pieces.iter_mut() {
            self.read(*address, buf)?;
        }
        Ok(())
    }

    /// Like [`RemoteMemory::read_many`], but a piece that cannot be read
    /// ends the batch instead of failing it: returns how many leading
    /// pieces were filled (`process_vm_readv` itself stops at the first
    /// unreadable piece). For batches that end with speculative pieces
    /// (ranges that were readable last sample, and may be freed now).
    /// Errors only when the process cannot be read at all (permission,
    /// process gone).
    fn read_prefix(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<usize, MemoryError> {
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

    /// How many read system calls (or simulated ones) were made so far.
    fn read_calls(&self) -> u64;

    /// Bytes those calls asked for (0 where not counted).
    fn read_bytes(&self) -> u64 {
        0
    }
}

/// Reads a little-endian `u64` at `address`.
pub fn read_u64(memory: &dyn RemoteMemory, address: u64) -> Result<u64, MemoryError> {
    let mut buf = [0u8; 8];
    memory.read(address, &mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// Reads `len` bytes at `address` into a new vector, refusing more than `limit`.
pub fn read_vec(
    memory: &dyn RemoteMemory,
    address: u64,
    len: usize,
    limit: usize,
) -> Result<Vec<u8>, MemoryError> {
    let limit = limit.min(MAX_READ);
    if len > limit {
        return Err(MemoryError::TooLarge {
            address,
            len,
            limit,
        });
    }
    let mut buf = vec![0u8; len];
    memory.read(address, &mut buf)?;
    Ok(buf)
}

/// Little-endian field access into a struct copied out of the target. Reads
/// past the end yield 0, so a short or garbage copy never panics.
pub fn field_u64(bytes: &[u8], offset: u64) -> u64 {
    field(bytes, offset, 8)
}

/// Like [`field_u64`] for a 4-byte field.
pub fn field_u32(bytes: &[u8], offset: u64) -> u32 {
    field(bytes, offset, 4) as u32
}

/// Like [`field_u64`] for a 2-byte field.
pub fn field_u16(bytes: &[u8], offset: u64) -> u16 {
    field(bytes, offset, 2) as u16
}

/// Like [`field_u64`] for a 1-byte field.
pub fn field_u8(bytes: &[u8], offset: u64) -> u8 {
    field(bytes, offset, 1) as u8
}

fn field(bytes: &[u8], offset: u64, size: usize) -> u64 {
    let Ok(start) = usize::try_from(offset) else {
        return 0;
    };
    let Some(slice) = start
        .checked_add(size)
        .and_then(|end| bytes.get(start..end))
    else {
        return 0;
    };
    let mut buf = [0u8; 8];
    buf[..size].copy_from_slice(slice);
    u64::from_le_bytes(buf)
}

/// Reads a live process with `process_vm_readv(2)`, counting system calls.
#[derive(Debug)]
pub struct LiveMemory {
    pid: i32,
    calls: AtomicU64,
    bytes: AtomicU64,
}

/// Most iovecs one `process_vm_readv` accepts (IOV_MAX on Linux).
const IOV_MAX: usize = 1024;

impl LiveMemory {
    /// Memory of process `pid`. Nothing is checked until the first read.
    pub fn new(pid: i32) -> LiveMemory {
        LiveMemory {
            pid,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn readv(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        if let Some((address, buf)) = pieces.iter().find(|(_, buf)| buf.len() > MAX_READ) {
            return Err(MemoryError::TooLarge {
                address: *address,
                len: buf.len(),
                limit: MAX_READ,
            });
        }
        let done = self.readv_prefix(pieces)?;
        match pieces.get(done) {
            None => Ok(()),
            Some((address, buf)) => Err(MemoryError::Unreadable {
                address: *address,
                len: buf.len(),
            }),
        }
    }

    /// One `process_vm_readv` of at most [`IOV_MAX`] pieces: how many
    /// leading pieces were filled. A piece larger than [`MAX_READ`] ends
    /// the batch unread.
    fn readv_prefix(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<usize, MemoryError> {
        let count = pieces
            .iter()
            .position(|(_, buf)| buf.len() > MAX_READ)
            .unwrap_or(pieces.len());
        if count == 0 {
            return Ok(0);
        }
        let pieces = &mut pieces[..count];
        let mut local: Vec<libc::iovec> = Vec::with_capacity(pieces.len());
        let mut remote: Vec<libc::iovec> = Vec::with_capacity(pieces.len());
        let mut total = 0usize;
        for (address, buf) in pieces.iter_mut() {
            total += buf.len();
            local.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            remote.push(libc::iovec {
                iov_base: *address as usize as *mut libc::c_void,
                iov_len: buf.len(),
            });
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(total as u64, Ordering::Relaxed);
        // SAFETY: every local iovec points into a live, exclusively borrowed
        // buffer of exactly iov_len bytes; the remote ones are only read by
        // the kernel, which validates them against the target's mappings.
        let read = unsafe {
            libc::process_vm_readv(
                self.pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if read < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return match errno {
                libc::EPERM => Err(MemoryError::PermissionDenied { pid: self.pid }),
                libc::ESRCH => Err(MemoryError::ProcessGone { pid: self.pid }),
                // EFAULT: the first piece is unreadable.
                _ => Ok(0),
            };
        }
        if read as usize == total {
            return Ok(pieces.len());
        }
        // A partial read stops at the first piece that failed.
        let mut left = read as usize;
        for (done, (_, buf)) in pieces.iter().enumerate() {
            if left < buf.len() {
                return Ok(done);
            }
            left -= buf.len();
        }
        Ok(pieces.len())
    }
}

impl RemoteMemory for LiveMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.readv(&mut [(address, buf)])
    }

    fn read_many(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        for batch in pieces.chunks_mut(IOV_MAX) {
            self.readv(batch)?;
        }
        Ok(())
    }

    fn read_prefix(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<usize, MemoryError> {
        let mut total = 0;
        for batch in pieces.chunks_mut(IOV_MAX) {
            let done = self.readv_prefix(batch)?;
            total += done;
            if done < batch.len() {
                break;
            }
        }
        Ok(total)
    }

    fn read_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn read_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Memory served from byte regions: the test double of [`LiveMemory`].
///
/// Reads must fall inside one region (as a real mapping would), and each
/// `read`/`read_many` counts as one call, like the live implementation.
#[derive(Debug, Default, Clone)]
pub struct SnapshotMemory {
    regions: BTreeMap<u64, Vec<u8>>,
    calls: Cell<u64>,
}

impl SnapshotMemory {
    /// An empty address space.
    pub fn new() -> SnapshotMemory {
        SnapshotMemory::default()
    }

    /// Maps `bytes` at `address` (replacing any region starting there).
    pub fn add_region(&mut self, address: u64, bytes: Vec<u8>) {
        self.regions.insert(address, bytes);
    }

    /// Writes `bytes` at `address` inside an existing region; returns false
    /// (and writes nothing) if the range is not mapped.
    pub fn write(&mut self, address: u64, bytes: &[u8]) -> bool {
        let Some((start, region)) = self.regions.range_mut(..=address).next_back() else {
            return false;
        };
        let offset = (address - start) as usize;
        match region.get_mut(offset..offset + bytes.len()) {
            Some(target) => {
                target.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    fn copy(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let unreadable = MemoryError::Unreadable {
            address,
            len: buf.len(),
        };
        if buf.is_empty() {
            return Ok(());
        }
        let (start, region) = self
            .regions
            .range(..=address)
            .next_back()
            .ok_or(unreadable.clone())?;
        let offset = usize::try_from(address - start).map_err(|_| unreadable.clone())?;
        let source = offset
            .checked_add(buf.len())
            .and_then(|end| region.get(offset..end))
            .ok_or(unreadable)?;
        buf.copy_from_slice(source);
        Ok(())
    }
}

impl RemoteMemory for SnapshotMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.calls.set(self.calls.get() + 1);
        self.copy(address, buf)
    }

    fn read_many(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        self.calls
            .set(self.calls.get() + pieces.len().div_ceil(IOV_MAX) as u64);
        for (address, buf) in pieces.iter_mut() {
            self.copy(*address, buf)?;
        }
        Ok(())
    }

    fn read_prefix(&self, pieces: &mut [(u64, &mut [u8])]) -> Result<usize, MemoryError> {
        let mut done = 0;
        for batch in pieces.chunks_mut(IOV_MAX) {
            self.calls.set(self.calls.get() + 1);
            for (address, buf) in batch.iter_mut() {
                if self.copy(*address, buf).is_err() {
                    return Ok(done);
                }
                done += 1;
            }
        }
        Ok(done)
    }

    fn read_calls(&self) -> u64 {
        self.calls.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_inside_a_region_and_refuses_reads_across_its_end() {
        let mut memory = SnapshotMemory::new();
        memory.add_region(0x1000, (0u8..16).collect());
        let mut buf = [0u8; 4];
        memory.read(0x1004, &mut buf).unwrap();
        assert_eq!(buf, [4, 5, 6, 7]);
        assert!(memory.read(0x100e, &mut buf).is_err());
        assert!(memory.read(0x0fff, &mut buf).is_err());
        assert_eq!(memory.read_calls(), 3);
    }

    #[test]
    fn field_access_past_the_end_of_a_copy_yields_zero() {
        let bytes = [1u8, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(field_u64(&bytes, 0), 1);
        assert_eq!(field_u64(&bytes, 4), 0);
        assert_eq!(field_u8(&bytes, 8), 2);
        assert_eq!(field_u32(&bytes, u64::MAX), 0);
    }

    #[test]
    fn live_memory_reads_this_process_in_one_call_for_many_pieces() {
        let a = 0x1122334455667788u64.to_le_bytes();
        let b = [9u8; 3];
        let memory = LiveMemory::new(std::process::id() as i32);
        let mut x = [0u8; 8];
        let mut y = [0u8; 3];
        memory
            .read_many(&mut [
                (a.as_ptr() as u64, &mut x[..]),
                (b.as_ptr() as u64, &mut y[..]),
            ])
            .unwrap();
        assert_eq!((x, y), (a, b));
        assert_eq!(memory.read_calls(), 1);
        assert!(memory.read(8, &mut x).is_err());
    }

    #[test]
    fn a_prefix_read_stops_at_the_first_unreadable_piece_in_one_call() {
        let a = 7u64.to_le_bytes();
        let memory = LiveMemory::new(std::process::id() as i32);
        let (mut x, mut y, mut z) = ([0u8; 8], [0u8; 8], [0u8; 8]);
        let done = memory
            .read_prefix(&mut [
                (a.as_ptr() as u64, &mut x[..]),
                (8, &mut y[..]),
                (a.as_ptr() as u64, &mut z[..]),
            ])
            .unwrap();
        assert_eq!((done, x, z), (1, a, [0u8; 8]));
        assert_eq!(memory.read_calls(), 1);
        let mut pieces = [(8u64, &mut y[..])];
        assert_eq!(memory.read_prefix(&mut pieces).unwrap(), 0);

        let mut snapshot = SnapshotMemory::new();
        snapshot.add_region(0x1000, vec![1u8; 16]);
        let done = snapshot
            .read_prefix(&mut [
                (0x1000, &mut x[..]),
                (0x2000, &mut y[..]),
                (0x1008, &mut z[..]),
            ])
            .unwrap();
        assert_eq!((done, x, z), (1, [1u8; 8], [0u8; 8]));
        assert_eq!(snapshot.read_calls(), 1);
    }
}
