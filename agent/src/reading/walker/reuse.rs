//! The outer frames of a thread's last walk, reused when the new copy of
//! its stack holds them unchanged (3.11+ data-stack frames).
//!
//! A deep stack changes at its top: between two samples of a 1,000-deep
//! stack a few frames were pushed or popped, the rest stayed. The copy of
//! the stack must still be made (no outside reader can tell, without
//! reading a frame, that it was not popped and pushed again with other
//! fields: notes/cpython-frames.md, "Reusing the last walk"), but the walk
//! over it need not be redone: a walk is a function of the fields it reads
//! at each frame (owner, code, instruction, previous) and of its options,
//! so where the new copy holds, at every address of the last walk from
//! some frame outwards, the very fields the last walk read there, a walk
//! from that frame gives the last walk's frames from there outwards, and
//! those are taken as they were. Each reused frame is compared, field by
//! field, in the bytes the walk itself would read (the window
//! [`FrameSource::header`] would serve), so the stack is exactly the one
//! walking the copy gives: nothing is trusted that was not read in this
//! sample. What it saves is the walk's per-frame work (checks, offsets,
//! three vectors grown a frame at a time), not the copy.

use super::frames::{FrameSource, Walk};
use super::FrameSample;
use crate::process::memory::{field_u64, field_u8, RemoteMemory};
use crate::reading::cpython::InterpreterFrameOffsets;

/// The fields a walk reads of one frame, as read (code not masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFields {
    /// `previous`.
    pub previous: u64,
    /// `f_executable` / `f_code`, with its tag bits.
    pub code: u64,
    /// `instr_ptr` / `prev_instr`.
    pub instruction: u64,
    /// `owner`.
    pub owner: u8,
}

impl FrameFields {
    /// The fields of the frame header `header`, at `at`'s offsets.
    #[inline]
    pub fn read(at: &InterpreterFrameOffsets, header: &[u8]) -> FrameFields {
        FrameFields {
            previous: field_u64(header, at.previous),
            code: field_u64(header, at.executable),
            instruction: field_u64(header, at.instruction),
            owner: field_u8(header, at.owner),
        }
    }
}

/// Most rising runs of addresses looked through for a frame
/// ([`LastWalk::position`]), innermost first. A data stack has one per
/// chunk, plus two per generator frame and 3.12+ entry frame on the C
/// stack; frames in older runs are walked as usual. (A chain of frames at
/// falling addresses, as garbage might hold, would otherwise cost a search
/// of every run at every frame.)
const MAX_RUNS: usize = 64;

/// A thread's last complete walk (it ended on the outermost frame: not
/// broken, cut short, looped or stopped), outermost frame first.
#[derive(Debug, Clone, Default)]
pub struct LastWalk {
    /// Frame addresses visited, outermost first.
    addresses: Vec<u64>,
    /// The fields read at each.
    fields: Vec<FrameFields>,
    /// Frames shown from the outermost up to and including each visit
    /// (shims and incomplete frames are visited but not shown).
    shown: Vec<u32>,
    /// The frames shown, outermost first.
    frames: Vec<FrameSample>,
    /// Runs of `addresses` that rise (a data-stack chunk's frames lie in
    /// the order they were pushed), as index ranges: where an address is
    /// looked up by binary search.
    runs: Vec<(usize, usize)>,
    /// What decided what the walk showed and where it would break
    /// (`WalkOptions::include_shims`, `WalkHints::whole_stack`, header
    /// bytes read): a walk made otherwise takes nothing from it.
    made_as: (bool, bool, u64),
    /// The innermost frame had not started ([`Walk::innermost_not_started`]):
    /// a walk reaching it from a callee breaks there, so it is not reused
    /// as a caller ([`LastWalk::reusable_as_caller`]).
    innermost_not_started: bool,
}

impl LastWalk {
    /// Forgets the walk.
    pub fn clear(&mut self) {
        self.innermost_not_started = false;
        self.addresses.clear();
        self.fields.clear();
        self.shown.clear();
        self.frames.clear();
        self.runs.clear();
    }

    /// True if the walk was made with these options
    /// (`WalkOptions::include_shims`, `WalkHints::whole_stack`) and read
    /// `header_len` bytes of each frame.
    pub fn made_as(&self, include_shims: bool, whole_stack: bool, header_len: u64) -> bool {
        self.made_as == (include_shims, whole_stack, header_len)
    }

    /// The place (outermost first) of the frame at `address`, if the walk
    /// visited it (and it lies in one of the [`MAX_RUNS`] innermost runs).
    pub fn position(&self, address: u64) -> Option<usize> {
        self.runs
            .iter()
            .rev()
            .take(MAX_RUNS)
            .find_map(|&(start, end)| {
                let run = &self.addresses[start..end];
                if address < run[0] || address > run[run.len() - 1] {
                    return None;
                }
                run.binary_search(&address).ok().map(|i| start + i)
            })
    }

    /// False if the frame at `place` cannot be a caller: it is the
    /// innermost one and had not started. A walk is a function of the
    /// fields it reads and of whether the frame has a callee (a frame that
    /// has not started breaks a walk that reaches it from one).
    pub fn reusable_as_caller(&self, place: usize) -> bool {
        !(self.innermost_not_started && place + 1 == self.addresses.len())
    }

    /// Frames shown from the outermost up to and including place `place`.
    pub fn shown_up_to(&self, place: usize) -> usize {
        self.shown[place] as usize
    }

    /// Compares the fields at places `place` down to the outermost with
    /// the bytes a walk would read there in `source` (reading what it
    /// misses, as a walk would): `Ok` if all are the same, else the place
    /// of the first that is not (or could not be read).
    ///
    /// A walk asks [`FrameSource::header`] for each frame, which serves the
    /// window it served last whenever that holds the frame; so does this,
    /// without asking while the frames stay in that window: the bytes
    /// compared are the ones the walk would read, even where windows
    /// copied at different moments overlap.
    pub(super) fn compare(
        &self,
        place: usize,
        source: &mut FrameSource,
        memory: &dyn RemoteMemory,
        len: u64,
        offsets: &InterpreterFrameOffsets,
    ) -> Result<(), usize> {
        // (start, end, index) of the window served last.
        let mut window: Option<(u64, u64, usize)> = None;
        for i in (0..=place).rev() {
            let address = self.addresses[i];
            let index = match window {
                Some((start, end, index))
                    if address >= start && address.checked_add(len).is_some_and(|e| e <= end) =>
                {
                    index
                }
                _ => {
                    let Some(index) = source.header(memory, address, len) else {
                        return Err(i);
                    };
                    let (start, bytes) = &source.windows()[index];
                    window = Some((*start, start + bytes.len() as u64, index));
                    index
                }
            };
            if FrameFields::read(offsets, source.bytes(index, address, len)) != self.fields[i] {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Appends to `walk` the visits of places `place` down to the
    /// outermost, as a walk from that place would make them.
    pub(super) fn extend(&self, place: usize, walk: &mut Walk) {
        let base = walk.frames.len();
        let shown = self.shown[place] as usize;
        walk.visited
            .extend(self.addresses[..=place].iter().rev().copied());
        // A visit's frame index counts the frames shown before it: those
        // of the places between it and `place`.
        walk.frame_index.extend(
            self.shown[..=place]
                .iter()
                .rev()
                .map(|&up_to| base + shown - up_to as usize),
        );
        walk.frames
            .extend(self.frames[..shown].iter().rev().copied());
    }

    /// Keeps places up to `place` (the outermost ones) only.
    fn keep_outermost(&mut self, place: usize) {
        let len = place + 1;
        self.addresses.truncate(len);
        self.fields.truncate(len);
        self.shown.truncate(len);
        self.frames
            .truncate(self.shown.last().map_or(0, |&n| n as usize));
        while self.runs.last().is_some_and(|&(start, _)| start >= len) {
            self.runs.pop();
        }
        if let Some(run) = self.runs.last_mut() {
            run.1 = run.1.min(len);
        }
    }

    /// Keeps `walk` (just made with this as its `WalkHints::reuse`, with
    /// `include_shims` and `whole_stack` as given) as the thread's last
    /// walk if it was complete: the frames it took from here, then those
    /// it read itself. A walk cut short (broken, too deep, looped,
    /// stopped) is not kept: its outermost frame is not the thread's.
    pub fn remember(&mut self, walk: &mut Walk, include_shims: bool, whole_stack: bool) {
        let fields = std::mem::take(&mut walk.fields);
        let reused = walk.reused.map_or(0, |place| place + 1);
        if walk.broken
            || walk.truncated
            || walk.looped
            || walk.stopped_at.is_some()
            || fields.len() + reused != walk.visited.len()
        {
            self.clear();
            return;
        }
        // Whether the innermost frame had not started: the one this walk
        // visited first, or, if it visited none itself, the last walk's
        // innermost if it took the walk from there.
        let innermost_not_started = if fields.is_empty() {
            self.innermost_not_started
                && walk
                    .reused
                    .is_some_and(|place| place + 1 == self.addresses.len())
        } else {
            walk.innermost_not_started
        };
        match walk.reused {
            Some(place) => self.keep_outermost(place),
            None => self.clear(),
        }
        self.innermost_not_started = innermost_not_started;
        self.made_as = (include_shims, whole_stack, walk.header_len);
        for (i, fields) in fields.iter().enumerate().rev() {
            let first = walk.frame_index[i];
            let next = walk
                .frame_index
                .get(i + 1)
                .copied()
                .unwrap_or(walk.frames.len());
            let frame = (next > first).then(|| walk.frames[first]);
            self.push(walk.visited[i], *fields, frame);
        }
    }

    /// Adds a frame further in (the walk's next one inwards).
    fn push(&mut self, address: u64, fields: FrameFields, frame: Option<FrameSample>) {
        let index = self.addresses.len();
        let rises = self.addresses.last().is_some_and(|&last| address > last);
        match self.runs.last_mut() {
            Some(run) if rises && run.1 == index => run.1 += 1,
            _ => self.runs.push((index, index + 1)),
        }
        let shown = self.shown.last().copied().unwrap_or(0) + u32::from(frame.is_some());
        self.addresses.push(address);
        self.fields.push(fields);
        self.shown.push(shown);
        self.frames.extend(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(previous: u64) -> FrameFields {
        FrameFields {
            previous,
            code: 0x1000,
            instruction: 0x1040,
            owner: 0,
        }
    }

    #[test]
    fn frames_are_found_by_address_across_chunks_and_after_cuts() {
        let mut walk = LastWalk::default();
        // Outermost first: a chunk at 0x10000, then one at 0x8000.
        let addresses = [0x10000, 0x10100, 0x10200, 0x8000, 0x8100];
        let mut previous = 0;
        for &a in &addresses {
            walk.push(a, fields(previous), None);
            previous = a;
        }
        for (i, &a) in addresses.iter().enumerate() {
            assert_eq!(walk.position(a), Some(i));
        }
        assert_eq!(walk.position(0x10080), None);
        assert_eq!(walk.position(0x9000), None);
        walk.keep_outermost(2);
        assert_eq!(walk.addresses.len(), 3);
        assert_eq!(walk.position(0x8000), None);
        assert_eq!(walk.position(0x10200), Some(2));
        walk.push(0x10300, fields(0x10200), None);
        assert_eq!(walk.position(0x10300), Some(3));
        assert_eq!(walk.runs, [(0, 4)]);
    }

    #[test]
    fn reused_visits_count_the_frames_shown_before_them() {
        let mut last = LastWalk::default();
        let frame = |offset| FrameSample {
            code_address: 0x1000,
            instruction_offset: offset,
            is_generator: false,
            is_shim: false,
        };
        last.push(0x100, fields(0), Some(frame(1)));
        last.push(0x200, fields(0x100), None);
        last.push(0x300, fields(0x200), Some(frame(3)));
        assert_eq!(last.shown_up_to(0), 1);
        assert_eq!(last.shown_up_to(1), 1);
        assert_eq!(last.shown_up_to(2), 2);
        let mut walk = Walk {
            frames: vec![frame(9)],
            visited: vec![0x400],
            frame_index: vec![0],
            ..Walk::default()
        };
        last.extend(1, &mut walk);
        assert_eq!(walk.visited, [0x400, 0x200, 0x100]);
        assert_eq!(walk.frame_index, [0, 1, 1]);
        assert_eq!(walk.frames, [frame(9), frame(1)]);
        last.keep_outermost(0);
        assert_eq!(last.frames, [frame(1)]);
    }
}
