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
//!
//! This re-read is needed only where the first batch cannot vouch for the
//! stack (sample.rs): a walk served entirely from first-batch windows whose
//! pointer, read right after them, still names the innermost frame or a
//! callee linked to it in the same copy. When that pointer cannot be
//! linked (the thread returned, or called deeper than the copy shows),
//! the stack is re-read here rather than declared torn, with room above
//! the innermost frame up to its chunk's end for the callees pushed since;
//! a stack torn here is read again at once (sample.rs `MAX_RETRIES`).
//!
//! One case needs far less: the pointer read after the copy names a frame
//! above the innermost one in its chunk, which the copy cannot link to it
//! because the callee was written after its bytes were copied (a thread
//! calling deeper, the common case of a deep recursion). Then only the
//! frames from the innermost one up to the named one are re-read
//! ([`Reread::callees`]), and their chain must lead down to the innermost
//! frame: it then stayed on the stack from the first pointer read, before
//! the copy, to the re-read, after it, and so did all its callers (a frame
//! cannot change while its callee runs). At depth 1,000 that is a few
//! hundred bytes instead of the ~150 KB of the whole stack.
//! What the two checks prove, and what they cannot (a frame popped and
//! pushed again at the same address), is in notes/cpython-frames.md.

use super::frames::FrameSource;
use super::prefetch::MIN_CHUNK;
use super::sample::ThreadRead;
use crate::cpython::Layout;
use crate::memory::field_u64;

/// Callee frames followed from the re-read pointer down to the frame read
/// as innermost.
const MAX_NEW_CALLEES: usize = 64;

/// Bytes re-read above the innermost frame, where the frames it called
/// since the first read are found, when its window is not a data-stack
/// chunk's (each page re-read costs ~0.25 us).
const CALLEE_ROOM: u64 = 1 << 10;

/// Most bytes re-read above the innermost frame in its data-stack chunk.
/// A recursion of small frames (~150 bytes each) calls tens of frames
/// deeper during one sample's reads: the re-read goes up to the chunk's
/// end, and past it the callees are in a new chunk, which the check
/// cannot follow (the sample is then retried).
const MAX_CALLEE_ROOM: u64 = 32 << 10;

/// What one thread's check re-reads.
pub(super) enum Reread {
    /// The whole stack: each window the walk used, trimmed to the frames
    /// read in it, and in the innermost frame's window [`CALLEE_ROOM`]
    /// above it (its callees since the first read are found there), with
    /// the current-frame pointer.
    Stack {
        pointer: [u8; 8],
        windows: Vec<(u64, Vec<u8>)>,
    },
    /// Only the memory from the innermost frame read up to the end of the
    /// frame the pointer named right after the copy (`pointer_after`).
    Callees {
        pointer_after: u64,
        window: (u64, Vec<u8>),
    },
}

impl Reread {
    /// The ranges to re-read for `read`'s walk: the whole stack.
    pub fn plan(layout: &Layout, read: &mut ThreadRead) -> Reread {
        let len = read.walk.header_len;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (i, &address) in read.walk.visited.iter().enumerate() {
            let Some(index) = read.source.locate(address, len) else {
                continue;
            };
            let (start, bytes) = &read.source.windows()[index];
            let end = if i == 0 {
                let room_end = if read.source.is_chunk(*start) {
                    chunk_end(layout, *start, bytes).min(address + len + MAX_CALLEE_ROOM)
                } else {
                    (address + len + CALLEE_ROOM).min(start + bytes.len() as u64)
                };
                room_end.max(address + len)
            } else {
                address + len
            };
            match ranges.iter_mut().find(|(s, _)| s == start) {
                Some((_, e)) => *e = (*e).max(end),
                None => ranges.push((*start, end)),
            }
        }
        Reread::Stack {
            pointer: [0; 8],
            windows: ranges
                .into_iter()
                .map(|(start, end)| (start, vec![0u8; (end - start) as usize]))
                .collect(),
        }
    }

    /// The re-read of the callees of `read`'s innermost frame when the
    /// pointer read right after the copy (`pointer_after`) names a frame
    /// above it, at most [`MAX_CALLEE_ROOM`] away: that frame's chain of
    /// callers must lead down to the innermost frame in a copy made after
    /// the pointer was read. `None` if `pointer_after` is not above the
    /// innermost frame (the thread returned) or too far from it.
    pub fn callees(read: &ThreadRead, pointer_after: u64) -> Option<Reread> {
        let start = read.current_frame;
        let end = pointer_after.checked_add(read.walk.header_len)?;
        if pointer_after <= start || end - start > MAX_CALLEE_ROOM {
            return None;
        }
        Some(Reread::Callees {
            pointer_after,
            window: (start, vec![0u8; (end - start) as usize]),
        })
    }

    /// Adds the pieces to re-read to a batch.
    pub fn pieces<'a>(&'a mut self, read: &ThreadRead, pieces: &mut Vec<(u64, &'a mut [u8])>) {
        match self {
            Reread::Stack { pointer, windows } => {
                if read.frame_pointer_at >= 8 {
                    pieces.push((read.frame_pointer_at, &mut pointer[..]));
                }
                for (address, bytes) in windows.iter_mut() {
                    pieces.push((*address, &mut bytes[..]));
                }
            }
            Reread::Callees { window, .. } => pieces.push((window.0, &mut window.1[..])),
        }
    }

    /// True if the stack `read` holds changed while it was read (the batch
    /// holding the re-read pieces was read).
    pub fn torn(self, layout: &Layout, read: &mut ThreadRead) -> bool {
        let len = read.walk.header_len;
        let (pointer, windows) = match self {
            Reread::Stack { pointer, windows } => (pointer, windows),
            Reread::Callees {
                pointer_after,
                window,
            } => {
                let mut after = FrameSource::new();
                after.add_window(window.0, window.1);
                return !reaches(layout, &mut after, pointer_after, read.current_frame, len);
            }
        };
        let mut after = FrameSource::new();
        for (address, bytes) in windows {
            after.add_window(address, bytes);
        }
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
        let pointer = u64::from_le_bytes(pointer);
        pointer != read.current_frame
            && !reaches(layout, &mut after, pointer, read.current_frame, len)
    }
}

/// The end of the data-stack chunk starting at `start` whose first bytes
/// are `header`: its `size` field if plausible, else the least any chunk
/// has.
fn chunk_end(layout: &Layout, start: u64, header: &[u8]) -> u64 {
    let size = layout
        .offsets
        .stack_chunk_size
        .filter(|at| at + 8 <= header.len() as u64)
        .map_or(0, |at| field_u64(header, at));
    if (MIN_CHUNK..=MAX_CHUNK).contains(&size) {
        start.saturating_add(size)
    } else {
        start.saturating_add(MIN_CHUNK)
    }
}

/// Chunk sizes above this are taken for garbage (a chunk holds one frame
/// at least, and frames are bounded by `co_framesize`).
const MAX_CHUNK: u64 = 64 << 20;

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
