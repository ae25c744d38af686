//! The tracer's control block and event ring as the agent sees them: read
//! with `process_vm_readv` like every other read of the target (bounded,
//! never trusted), written (heartbeat, command, read position) with
//! `process_vm_writev`, word by word.

use super::abi::{self, offset};
use crate::Target;

/// The control block, decoded.
#[derive(Debug, Clone, Default)]
pub struct ControlBlock {
    /// One of the `STATE_*` words.
    pub state: u32,
    /// Threads that got the hook.
    pub threads_hooked: u32,
    /// Events written.
    pub write_pos: u64,
    /// Events dropped, and the times of the first and last drop.
    pub dropped: u64,
    /// See `dropped`.
    pub first_drop_ns: u64,
    /// See `dropped`.
    pub last_drop_ns: u64,
    /// Address of the ring.
    pub ring_address: u64,
    /// When the hooks were installed and removed (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// See `start_ns`.
    pub stop_ns: u64,
    /// Address of the selection table (`--functions`).
    pub select_address: u64,
    /// Threads that got the line hook (`--lines`).
    pub threads_line_hooked: u32,
    /// Address of the count table (`--opcodes`).
    pub counts_address: u64,
    /// Instruction executions the tracer could not count.
    pub counts_lost: u64,
    /// Code objects (3.12+) or frames (before) whose instructions were
    /// counted.
    pub counted_codes: u32,
    /// The clock of the event times (`abi::CLOCK_*`).
    pub clock: u32,
    /// How the window records calls (`abi::CALLS_BY_*`).
    pub calls_by: u32,
    /// Functions CPython could have called past the window's call events,
    /// found as it ended (`abi::offset::UNWATCHED`).
    pub unwatched: u32,
    /// The code objects of the first of them (at most
    /// `abi::UNWATCHED_CODES_CAPACITY`, distinct; kept alive by the tracer
    /// until the release): [`unwatched_codes`]'s reading.
    pub unwatched_codes: Vec<u64>,
    /// Why the tracer refused or failed.
    pub message: String,
}

fn u32_at(block: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(block[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(block: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(block[at..at + 8].try_into().unwrap_or_default())
}

/// Reads the control block at `address`; an error if it is not one (wrong
/// magic or layout version).
pub fn read_control(target: &Target, address: u64) -> anyhow::Result<ControlBlock> {
    let mut block = vec![0u8; offset::SIZE as usize];
    target.memory().read(address, &mut block)?;
    if u64_at(&block, offset::MAGIC) != abi::MAGIC
        || u32_at(&block, offset::VERSION) != abi::LAYOUT_VERSION
    {
        anyhow::bail!("no pydeep tracer control block at {address:#x}");
    }
    let message = &block[offset::MESSAGE as usize..];
    let end = message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(message.len());
    Ok(ControlBlock {
        state: u32_at(&block, offset::STATE),
        threads_hooked: u32_at(&block, offset::THREADS_HOOKED),
        write_pos: u64_at(&block, offset::WRITE_POS),
        dropped: u64_at(&block, offset::DROPPED),
        first_drop_ns: u64_at(&block, offset::FIRST_DROP_NS),
        last_drop_ns: u64_at(&block, offset::LAST_DROP_NS),
        ring_address: u64_at(&block, offset::RING_ADDRESS),
        start_ns: u64_at(&block, offset::START_NS),
        stop_ns: u64_at(&block, offset::STOP_NS),
        select_address: u64_at(&block, offset::SELECT_ADDRESS),
        threads_line_hooked: u32_at(&block, offset::THREADS_LINE_HOOKED),
        counts_address: u64_at(&block, offset::COUNTS_ADDRESS),
        counts_lost: u64_at(&block, offset::COUNTS_LOST),
        counted_codes: u32_at(&block, offset::COUNTED_CODES),
        clock: u32_at(&block, offset::CLOCK),
        calls_by: u32_at(&block, offset::CALLS_BY),
        unwatched: u32_at(&block, offset::UNWATCHED),
        unwatched_codes: unwatched_codes(&block),
        message: String::from_utf8_lossy(&message[..end]).into_owned(),
    })
}

/// The unwatched functions' code object addresses a control block names
/// (`offset::UNWATCHED_CODES`), as far as they can be addresses of
/// objects: up to the first 0 (the tracer fills the slots in order), each
/// 8-byte aligned, each once. What they point at is still the target's
/// word: the code object reader checks each (its type) like any other.
fn unwatched_codes(block: &[u8]) -> Vec<u64> {
    let mut codes = Vec::new();
    for i in 0..abi::UNWATCHED_CODES_CAPACITY as u64 {
        let code = u64_at(block, offset::UNWATCHED_CODES + 8 * i);
        if code == 0 {
            break;
        }
        if code.is_multiple_of(8) && !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// True if `address` holds a tracer control block of this layout.
pub fn is_tracer(target: &Target, address: u64) -> bool {
    read_control(target, address).is_ok()
}

pub(crate) fn write(pid: i32, address: u64, bytes: &[u8]) -> std::io::Result<()> {
    let local = libc::iovec {
        iov_base: bytes.as_ptr() as *mut _,
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut _,
        iov_len: bytes.len(),
    };
    // SAFETY: both iovecs describe valid buffers of the same length.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n == bytes.len() as isize {
        Ok(())
    } else if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Err(std::io::Error::other("short write"))
    }
}

/// Writes one u32 word of the control block.
pub fn write_u32(pid: i32, address: u64, value: u32) -> std::io::Result<()> {
    write(pid, address, &value.to_le_bytes())
}

/// Writes one u64 word of the control block.
pub fn write_u64(pid: i32, address: u64, value: u64) -> std::io::Result<()> {
    write(pid, address, &value.to_le_bytes())
}

/// The name of the C function object at `address` (`PyCFunctionObject`:
/// `m_ml` after the object header, whose first field is `ml_name`).
pub fn c_function_name(target: &Target, address: u64) -> Option<String> {
    let memory = target.memory();
    let mut word = [0u8; 8];
    memory.read(address + 16, &mut word).ok()?;
    let method_def = u64::from_le_bytes(word);
    memory.read(method_def, &mut word).ok()?;
    let name = u64::from_le_bytes(word);
    let mut bytes = [0u8; 128];
    memory.read(name, &mut bytes).ok()?;
    let end = bytes.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&bytes[..end]).ok()?;
    name.chars()
        .all(|c| c.is_ascii_graphic())
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_naming(codes: &[u64]) -> Vec<u8> {
        let mut block = vec![0u8; offset::SIZE as usize];
        for (i, code) in codes.iter().enumerate() {
            let at = offset::UNWATCHED_CODES as usize + 8 * i;
            block[at..at + 8].copy_from_slice(&code.to_le_bytes());
        }
        block
    }

    #[test]
    fn unwatched_code_addresses_end_at_the_first_zero_and_misaligned_or_repeated_ones_are_left_out()
    {
        let block = block_naming(&[0x7f00_0010, 0x7f00_0013, 0x7f00_0010, 0x7f00_0020, 0, 0x40]);
        assert_eq!(unwatched_codes(&block), [0x7f00_0010, 0x7f00_0020]);
        let full: Vec<u64> = (1..=abi::UNWATCHED_CODES_CAPACITY as u64 + 4)
            .map(|i| i << 4)
            .collect();
        let block = block_naming(&full[..abi::UNWATCHED_CODES_CAPACITY]);
        assert_eq!(unwatched_codes(&block).len(), abi::UNWATCHED_CODES_CAPACITY);
        assert!(unwatched_codes(&block_naming(&[])).is_empty());
    }
}
