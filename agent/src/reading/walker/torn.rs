//! Settling a non-blocking sample that its first batch could not: the
//! re-read, and what it proves.
//!
//! The first batch copies each thread's stack and reads its current-frame
//! pointer right after (`t1`); sample.rs settles most samples from that
//! alone, as the stack at `t1`. A walk that needed memory the first batch
//! did not hold (a chunk the prefetch missed, a 3.11/3.12 pointer read
//! after the batch, 3.9/3.10 frame objects read one by one) is re-read
//! here: every frame header it used, with room above the innermost one
//! for its callees, then the pointer again (`t2`). The innermost frame's
//! instruction moves on while it runs, but its code and caller may not
//! change, and no caller's frame may change at all while its callee runs:
//! the frames both copies agree on from the outermost one in stayed put.
//! The sample is then the stack at `t2`: the pointer names one of those
//! frames (the thread returned to it, or never left it), or its chain in
//! the re-read copy reaches one (callees on top of it). A frame popped
//! since leaves its bytes behind above the stack top, so equal bytes alone
//! prove nothing about the innermost one: the pointer must name or reach
//! it. (Checking only the innermost frame was not enough: on 3.10 frames
//! recycled at the same addresses let a churning thread show an untorn,
//! impossible stack.)
//!
//! The re-read is made whatever the first batch showed of the stack, so
//! which ticks it settles does not depend on the code being run; a stack
//! that looked wrong in the first batch is torn there and not read again
//! (issue #13). What the checks prove, and what they cannot (a frame
//! popped and pushed again at the same address), is in
//! notes/cpython-frames.md.

use super::frames::{walk_copied_frames, FrameSource, Walk, WalkHints};
use super::prefetch::MIN_CHUNK;
use super::sample::{loops_through_generators, ThreadRead};
use super::WalkOptions;
use crate::process::memory::field_u64;
use crate::reading::cpython::Layout;

/// Callee frames followed from a pointer down to a frame of the stack read.
const MAX_NEW_CALLEES: usize = 64;

/// Bytes re-read above the innermost frame, where the frames it called
/// since the first read are found, when its window is not a data-stack
/// chunk's (each page re-read costs ~0.25 us).
const CALLEE_ROOM: u64 = 1 << 10;

/// Most bytes re-read above the innermost frame in its data-stack chunk.
/// A recursion of small frames (~150 bytes each) calls tens of frames
/// deeper during one sample's reads: the re-read goes up to the chunk's
/// end, and past it the callees are in a new chunk, which the check
/// cannot follow.
const MAX_CALLEE_ROOM: u64 = 32 << 10;

/// What one thread's check re-reads, then the current-frame pointer
/// after it (`t2`): the sample becomes the stack at `t2`.
pub(super) struct Reread {
    /// Copies of target memory: (address, bytes).
    windows: Vec<(u64, Vec<u8>)>,
    pointer: [u8; 8],
}

impl Reread {
    /// The whole stack: each window the walk used, trimmed to the frames
    /// read in it, and in the innermost frame's window room above it (its
    /// callees since the first read are found there).
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
        // Outermost first: the innermost frames, the ones that change, are
        // copied last, right before the pointer.
        Reread {
            windows: ranges
                .into_iter()
                .rev()
                .map(|(start, end)| (start, vec![0u8; (end - start) as usize]))
                .collect(),
            pointer: [0; 8],
        }
    }

    /// Adds the pieces to re-read to a batch: the windows, then the
    /// pointer, which so brackets them with the first read.
    pub fn pieces<'a>(&'a mut self, read: &ThreadRead, pieces: &mut Vec<(u64, &'a mut [u8])>) {
        for (address, bytes) in self.windows.iter_mut() {
            pieces.push((*address, &mut bytes[..]));
        }
        if read.frame_pointer_at >= 8 {
            pieces.push((read.frame_pointer_at, &mut self.pointer[..]));
        }
    }

    /// Settles `read`'s sample with the re-read pieces (the batch holding
    /// them was read): true if `read.walk` now holds the stack the thread
    /// had when the pointer was read last (`t2`), false if it tore.
    ///
    /// * The pointer names a frame of the stack read that both copies
    ///   agree on from there outwards (the thread returned to it, or
    ///   never left it): the stack from that frame outwards.
    /// * Its chain in the re-read copy reaches such a frame: those callees
    ///   on top of it.
    /// * The first walk broke off (a frame popped before it was copied):
    ///   the stack from the pointer in the re-read copy, if from some frame
    ///   outwards both copies agree on it.
    ///
    /// A torn sample keeps the frames both copies agree on from the
    /// outermost one in: its callers that stayed put.
    pub fn settle(self, layout: &Layout, read: &mut ThreadRead, options: &WalkOptions) -> bool {
        let mut after = FrameSource::new();
        for (address, bytes) in self.windows {
            after.add_window(address, bytes);
        }
        if read.frame_pointer_at < 8 {
            return stable_from(layout, read, &mut after) == 0;
        }
        let pointer = u64::from_le_bytes(self.pointer);
        read.sample.moved = pointer != read.current_frame;
        if loops_through_generators(&read.walk) {
            read.walk.frames.clear();
            return false;
        }
        if read.walk.broken {
            // Nothing to join: the first walk broke off on a frame popped
            // before it was copied (sample.rs `rewalk_from_bracket`).
            match verified_walk(layout, &mut read.source, &mut after, pointer, options) {
                Some(walk) => {
                    read.walk = walk;
                    return true;
                }
                None => {
                    read.walk.frames.clear();
                    return false;
                }
            }
        }
        let stable = stable_from(layout, read, &mut after);
        let stable_frames = &read.walk.visited[stable..];
        if let Some(index) = stable_frames.iter().position(|&a| a == pointer) {
            read.walk.cut_at(stable + index);
            return true;
        }
        if let Some((callees, index)) =
            walk_callees(layout, &mut after, pointer, stable_frames, options)
        {
            read.walk.graft(callees, stable + index);
            return true;
        }
        if let Some(walk) = verified_walk(layout, &mut read.source, &mut after, pointer, options) {
            read.walk = walk;
            return true;
        }
        read.walk.cut_at(stable.min(read.walk.visited.len()));
        false
    }
}

/// The index of the innermost frame from which outwards both copies of
/// `read`'s stack agree: every frame the same call at the same
/// instruction, but that one, whose instruction may have moved on if it
/// became the innermost frame. `visited.len()` if even the outermost
/// differs.
fn stable_from(layout: &Layout, read: &mut ThreadRead, after: &mut FrameSource) -> usize {
    agreeing_from(
        layout,
        &read.walk.visited,
        read.walk.header_len,
        &mut read.source,
        after,
    )
}

/// The index in `frames` (addresses, innermost first) of the innermost
/// frame from which outwards `first` and `second` hold the same frames
/// (that one's instruction may differ); `frames.len()` if none.
fn agreeing_from(
    layout: &Layout,
    frames: &[u64],
    len: u64,
    first: &mut FrameSource,
    second: &mut FrameSource,
) -> usize {
    let mut stable = frames.len();
    for i in (0..frames.len()).rev() {
        let address = frames[i];
        let (Some(before), Some(now)) = (first.locate(address, len), second.locate(address, len))
        else {
            break;
        };
        let before = first.bytes(before, address, len);
        let now = second.bytes(now, address, len);
        if same_frame(layout, before, now, false) {
            stable = i;
        } else {
            if same_frame(layout, before, now, true) {
                stable = i;
            }
            break;
        }
    }
    stable
}

/// The stack from `pointer` in the re-read copy `second`, from the frame
/// on which both copies agree outwards (they stayed put between the two
/// copies), if the frames above it link to it in the re-read copy: used
/// when the first walk cannot be joined (it broke off on a frame popped
/// before it was copied).
fn verified_walk(
    layout: &Layout,
    first: &mut FrameSource,
    second: &mut FrameSource,
    pointer: u64,
    options: &WalkOptions,
) -> Option<Walk> {
    if pointer == 0 {
        return None;
    }
    let hints = WalkHints {
        whole_stack: true,
        ..WalkHints::default()
    };
    let walk = walk_copied_frames(layout, pointer, second, options, hints)?;
    if walk.broken || walk.looped || walk.visited.is_empty() {
        return None;
    }
    let stable = agreeing_from(layout, &walk.visited, walk.header_len, first, second);
    if stable >= walk.visited.len() {
        return None;
    }
    // Only the frames both copies hold alike: those above were pushed in
    // between, and their callers' copies may predate the calls.
    let mut walk = walk;
    walk.cut_at(stable);
    Some(walk)
}

/// False if the data-stack top read right before and right after the
/// current-frame pointer (`top`: both reads agreed, so no frame was pushed
/// or popped around the pointer read) proves that the innermost data-stack frame of `frames`
/// (addresses, innermost first; generator frames and shims live
/// elsewhere) was copied before the frame the program has there now was
/// pushed. A frame pushed at `F` ends at `F + frame_size(code)`
/// (pycore_frame.h `_PyFrame_PushUnchecked`), and `datastack_top` is
/// never below the end of the innermost frame: it is that end, or past it
/// by the frame a call is pushing or a return is clearing (CPython
/// updates the current-frame pointer after pushing and before popping).
/// A copy older than the frame now at `F` shows the frame that was there
/// before (the same depth reached again by another call: the usual
/// mistake on method-heavy code); when that one was longer, the top
/// shows it. `sources` hold the frames' bytes, newest copy first;
/// `chunks` knows the chunks.
pub(super) fn top_agrees(
    layout: &Layout,
    sources: &[&FrameSource],
    chunks: &FrameSource,
    frames: impl IntoIterator<Item = u64>,
    len: u64,
    top: Option<u64>,
    frame_size: &dyn Fn(u64) -> Option<u64>,
) -> bool {
    let (Some(top), Some(code_at)) = (top, layout.interpreter_frames.map(|at| at.executable))
    else {
        return true;
    };
    let chunk_of = |address: u64| {
        chunks.windows().iter().find_map(|(start, bytes)| {
            let end = chunk_end(layout, *start, bytes);
            (chunks.is_chunk(*start) && *start <= address && address < end).then_some((*start, end))
        })
    };
    let Some((address, (start, end))) = frames
        .into_iter()
        .find_map(|a| chunk_of(a).map(|chunk| (a, chunk)))
    else {
        return true;
    };
    // A top in another chunk: a call is pushing a new chunk, or returning
    // from one.
    if !(start..end).contains(&top) {
        return true;
    }
    let Some(header) = sources.iter().find_map(|s| s.find(address, len)) else {
        return true;
    };
    let code = field_u64(header, code_at) & !layout.semantics.executable_tag_mask;
    frame_size(code).is_none_or(|size| address.saturating_add(size) <= top)
}

/// Walks from `from` through `memory` only (nothing is read from the
/// target) until a frame of `stack` (addresses of a walk, innermost first):
/// the frames before it, and its index in `stack`. `None` if the chain
/// breaks, leaves `memory` or runs [`MAX_NEW_CALLEES`] frames first.
pub(super) fn walk_callees(
    layout: &Layout,
    memory: &mut FrameSource,
    from: u64,
    stack: &[u64],
    options: &WalkOptions,
) -> Option<(Walk, usize)> {
    let options = WalkOptions {
        max_depth: MAX_NEW_CALLEES,
        ..*options
    };
    let hints = WalkHints {
        expected: 16,
        stop_at: Some(&|address| stack.contains(&address)),
        reuse: None,
        whole_stack: true,
    };
    let callees = walk_copied_frames(layout, from, memory, &options, hints)?;
    let joined = callees.stopped_at?;
    if callees.broken || callees.looped {
        return None;
    }
    let index = stack.iter().position(|&a| a == joined)?;
    Some((callees, index))
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

/// True if two copies of a frame header describe the same call: same code
/// and caller and, except for the innermost frame (whose instruction
/// pointer moves on while it runs), the same instruction.
fn same_frame(layout: &Layout, before: &[u8], after: &[u8], innermost: bool) -> bool {
    // (caller, code, instruction) of either family.
    let (previous, code, instruction) = match (layout.interpreter_frames, layout.frame_objects) {
        (Some(at), _) => (at.previous, at.executable, at.instruction),
        (None, Some(at)) => (at.back, at.code, at.lasti),
        (None, None) => return true,
    };
    let instruction = (!innermost).then_some(instruction);
    [Some(previous), Some(code), instruction]
        .into_iter()
        .flatten()
        .all(|at| field_u64(before, at) == field_u64(after, at))
}
