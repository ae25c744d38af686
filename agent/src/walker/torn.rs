//! The torn-read check of non-blocking samples.
//!
//! A sample's last batch re-reads each thread's current-frame pointer and
//! the memory of every frame header its walk used. The innermost frame's
//! instruction moves on while it runs, but its code and caller may not
//! change, and no caller's frame may change at all while its callee runs:
//! if every header compares equal, the stack read was one the program
//! really had. The innermost frame must also still be on the stack: the
//! pointer re-read names it, or names a frame whose chain of callers (in
//! the re-read copy) reaches it, i.e. the thread called deeper meanwhile,
//! which leaves the stack read intact. A frame popped since leaves its
//! bytes behind above the stack top, so equal bytes alone prove nothing
//! about it. Checking only the innermost frame was not enough: on 3.10
//! frames recycled at the same addresses let a churning thread show an
//! untorn, impossible stack.

use super::frames::FrameSource;
use super::threads::ThreadRead;
use crate::cpython::Layout;
use crate::memory::field_u64;

/// Callee frames followed from the re-read pointer down to the frame read
/// as innermost.
const MAX_NEW_CALLEES: usize = 64;

/// Bytes re-read above the innermost frame, where the frames it called
/// since the first read are found (each page re-read costs ~0.25 us).
const CALLEE_ROOM: u64 = 1 << 10;

/// What one thread's check re-reads.
pub(super) struct Reread {
    pointer: [u8; 8],
    /// Each window the walk used, trimmed to the frames read in it, and in
    /// the innermost frame's window [`CALLEE_ROOM`] above it: its callees
    /// since the first read are found there.
    windows: Vec<(u64, Vec<u8>)>,
}

impl Reread {
    /// The ranges to re-read for `read`'s walk.
    pub fn plan(read: &mut ThreadRead) -> Reread {
        let len = read.walk.header_len;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (i, &address) in read.walk.visited.iter().enumerate() {
            let Some(index) = read.source.locate(address, len) else {
                continue;
            };
            let (start, bytes) = &read.source.windows()[index];
            let end = if i == 0 {
                (address + len + CALLEE_ROOM).min(start + bytes.len() as u64)
            } else {
                address + len
            };
            match ranges.iter_mut().find(|(s, _)| s == start) {
                Some((_, e)) => *e = (*e).max(end),
                None => ranges.push((*start, end)),
            }
        }
        Reread {
            pointer: [0; 8],
            windows: ranges
                .into_iter()
                .map(|(start, end)| (start, vec![0u8; (end - start) as usize]))
                .collect(),
        }
    }

    /// Adds the pieces to re-read to a batch.
    pub fn pieces<'a>(&'a mut self, read: &ThreadRead, pieces: &mut Vec<(u64, &'a mut [u8])>) {
        if read.frame_pointer_at >= 8 {
            pieces.push((read.frame_pointer_at, &mut self.pointer[..]));
        }
        for (address, bytes) in self.windows.iter_mut() {
            pieces.push((*address, &mut bytes[..]));
        }
    }

    /// True if the stack `read` holds changed while it was read (the batch
    /// holding the re-read pieces was read).
    pub fn torn(self, layout: &Layout, read: &mut ThreadRead) -> bool {
        let mut after = FrameSource::new();
        for (address, bytes) in self.windows {
            after.add_window(address, bytes);
        }
        let len = read.walk.header_len;
        for (i, &address) in read.walk.visited.iter().enumerate() {
            let (Some(before), Some(now)) =
                (read.source.locate(address, len), after.locate(address, len))
            else {
                return true;
            };
            let before = read.source.bytes(before, address, len);
            let now = after.bytes(now, address, len);
            if !same_frame(layout, before, now, i == 0) {
                return true;
            }
        }
        if read.frame_pointer_at < 8 {
            return false;
        }
        let pointer = u64::from_le_bytes(self.pointer);
        pointer != read.current_frame
            && !reaches(layout, &mut after, pointer, read.current_frame, len)
    }
}

/// True if following callers from `from` through `memory` reaches `target`
/// within [`MAX_NEW_CALLEES`] frames.
pub(super) fn reaches(
    layout: &Layout,
    memory: &mut FrameSource,
    from: u64,
    target: u64,
    len: u64,
) -> bool {
    let Some(previous_at) = layout.offsets.interpreter_frame_previous else {
        return false;
    };
    let mut address = from;
    for _ in 0..MAX_NEW_CALLEES {
        if address == target {
            return true;
        }
        let Some(index) = memory.locate(address, len) else {
            return false;
        };
        address = field_u64(memory.bytes(index, address, len), previous_at);
    }
    false
}

/// True if two copies of a frame header describe the same call: same code
/// and caller and, except for the innermost frame (whose instruction
/// pointer moves on while it runs), the same instruction.
fn same_frame(layout: &Layout, before: &[u8], after: &[u8], innermost: bool) -> bool {
    let o = &layout.offsets;
    let instruction = if innermost {
        None
    } else {
        o.interpreter_frame_instr_ptr
            .or(o.interpreter_frame_prev_instr)
            .or(o.frame_object_f_lasti)
    };
    let fields = [
        o.interpreter_frame_previous.or(o.frame_object_f_back),
        o.interpreter_frame_f_executable
            .or(o.interpreter_frame_f_code)
            .or(o.frame_object_f_code),
        instruction,
    ];
    fields
        .into_iter()
        .flatten()
        .all(|at| field_u64(before, at) == field_u64(after, at))
}
