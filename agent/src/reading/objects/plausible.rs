//! Sizes and lengths a target's memory claims, checked against what that
//! memory can hold before they are shown as facts.
//!
//! An object's header says how many items or digits it has (`ob_size`,
//! `lv_tag`, a str's length, a list's `allocated`), and a hostile or
//! corrupt target can say anything there: a tuple of 2**40 items, an int
//! of 2**40 digits. Such an object's items would fill terabytes that the
//! process does not have. So a claim of more than [`TRUSTED_UP_TO`] bytes
//! is checked: the memory it names must be readable at evenly spaced
//! points through to its last byte (one `process_vm_readv`), and never
//! more than a 64-bit process can address. A claim that fails is shown as
//! "implausible", with what it claimed, never as a size.

use serde::Serialize;

use crate::process::memory::RemoteMemory;

/// Claims up to this many bytes are taken as read: a pymalloc arena, or a
/// small mapping, can always hold them, and checking every object would
/// cost a read each.
pub const TRUSTED_UP_TO: u64 = 1 << 20;

/// No object of an x86-64 Linux process is larger than its user address
/// space (128 TiB).
pub const ADDRESS_SPACE: u64 = 1 << 47;

/// Points read through a large claim: the last byte and 15 others.
const PROBES: u64 = 16;

/// A size read from a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Size {
    /// A size the target's memory can hold, in bytes.
    Bytes(u64),
    /// What the object claimed, in bytes, which its memory cannot hold.
    Implausible(u64),
}

impl Size {
    /// The size in bytes, if plausible.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Size::Bytes(n) => Some(n),
            Size::Implausible(_) => None,
        }
    }

    /// The claimed size in bytes, if implausible.
    pub fn implausible(self) -> Option<u64> {
        match self {
            Size::Bytes(_) => None,
            Size::Implausible(n) => Some(n),
        }
    }

    /// "1234" or "implausible (claims N bytes)", for text outputs.
    pub fn describe(self) -> String {
        match self {
            Size::Bytes(n) => n.to_string(),
            Size::Implausible(n) => describe_implausible(n, "bytes"),
        }
    }
}

/// "implausible (claims N UNIT)".
pub fn describe_implausible(claimed: u64, unit: &str) -> String {
    format!("implausible (claims {claimed} {unit})")
}

/// True if `len` bytes from `start` could be memory of the target: always
/// for [`TRUSTED_UP_TO`] bytes or less; else the range must stay below
/// [`ADDRESS_SPACE`] and be readable at [`PROBES`] points through to its
/// last byte.
pub fn can_hold(memory: &dyn RemoteMemory, start: u64, len: u64) -> bool {
    if len <= TRUSTED_UP_TO {
        return true;
    }
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    if len > ADDRESS_SPACE || end > ADDRESS_SPACE {
        return false;
    }
    let mut bytes = [[0u8; 1]; PROBES as usize];
    let step = len / PROBES;
    let mut pieces: Vec<(u64, &mut [u8])> = bytes
        .iter_mut()
        .enumerate()
        .map(|(i, byte)| (start + step * (i as u64 + 1) - 1, &mut byte[..]))
        .collect();
    if let Some(last) = pieces.last_mut() {
        last.0 = end - 1;
    }
    memory.read_many(&mut pieces).is_ok()
}

/// `size` for an object whose memory of that many bytes (or, where they
/// are stored apart, its items') starts at `start`.
pub fn checked(memory: &dyn RemoteMemory, start: u64, size: u64) -> Size {
    if can_hold(memory, start, size) {
        Size::Bytes(size)
    } else {
        Size::Implausible(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::SnapshotMemory;

    fn memory() -> SnapshotMemory {
        let mut memory = SnapshotMemory::new();
        memory.add_region(0x10_0000, vec![0u8; 4 << 20]);
        memory
    }

    #[test]
    fn small_claims_are_taken_as_read() {
        assert!(can_hold(&memory(), 0xdead_0000, 4096));
    }

    #[test]
    fn a_claim_inside_the_memory_is_plausible() {
        assert_eq!(checked(&memory(), 0x10_0000, 3 << 20), Size::Bytes(3 << 20));
    }

    #[test]
    fn a_claim_past_the_memory_is_implausible() {
        // The last byte is one past the mapping.
        let size = (4 << 20) + 1;
        assert_eq!(checked(&memory(), 0x10_0000, size), Size::Implausible(size));
        assert_eq!(
            checked(&memory(), 0x10_0000, 1 << 43).describe(),
            "implausible (claims 8796093022208 bytes)"
        );
    }

    #[test]
    fn claims_beyond_the_address_space_are_implausible_unread() {
        assert!(!can_hold(&memory(), u64::MAX - 10, 1 << 21));
        assert!(!can_hold(&memory(), 0x10_0000, 1 << 50));
    }
}
