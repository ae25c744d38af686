//! The outer frames of a thread's last walk, reused when the new copy of
//! its stack holds them unchanged (3.11+ data-stack frames).
//!
//! A deep stack changes at its top: between two samples of a 1,000-deep
//! stack a few frames were pushed or popped, the rest stayed. The copy of
//! the stack must still be made (no outside reader can tell, without
//! reading a frame, that it was not popped and pushed again with other
//! fields: notes/cpython-frames.md, "What it cannot prove"), but the walk
//! over it need not be redone: a walk is a function of the fields it reads
//! at each frame (owner, code, instruction, previous), so where the new
//! copy holds, at every address of the last walk from some frame outwards,
//! the very fields the last walk read there, a walk from that frame would
//! give the last walk's frames from there outwards, and those are taken
//! as they were. Each reused frame is compared, field by field, in the new
//! copy (served by the same [`FrameSource::header`] the walk uses), so
//! the stack is exactly the one walking the copy would give: nothing is
//! trusted that was not read in this sample.

use super::frames::FrameSource;
use super::FrameSample;
use crate::memory::{field_u64, field_u8, RemoteMemory};

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

/// Where a walk reads the fields of a frame header.
#[derive(Debug, Clone, Copy)]
pub(super) struct FieldOffsets {
    pub previous: u64,
    pub code: u64,
    pub instruction: u64,
    pub owner: u64,
}

impl FieldOffsets {
    /// The fields of the frame header `header`.
    pub fn read(&self, header: &[u8]) -> FrameFields {
        FrameFields {
            previous: field_u64(header, self.previous),
            code: field_u64(header, self.code),
            instruction: field_u64(header, self.instruction),
            owner: field_u8(header, self.owner),
        }
    }
}

/// A thread's last complete walk (it ended on the outermost frame: not
/// broken, cut short, looped or stopped), outermost frame first.
#[derive(Debug, Clone, Default)]
pub struct LastWalk {
    /// Frame addresses visited, outermost first.
    addresses: Vec<u64>,
    /// The fields read at each.
    fields: Vec<FrameFields>,
    /// The frame each gave, if it was shown (shims and incomplete frames
    /// are visited but not shown).
    frames: Vec<Option<FrameSample>>,
    /// Frames shown from the outermost up to and including each.
    shown: Vec<u32>,
    /// Runs of `addresses` that rise (a data-stack chunk's frames lie in
    /// the order they were pushed), as index ranges: where an address is
    /// looked up by binary search.
    runs: Vec<(usize, usize)>,
}

impl LastWalk {
    /// Forgets the walk.
    pub fn clear(&mut self) {
        self.addresses.clear();
        self.fields.clear();
        self.frames.clear();
        self.shown.clear();
        self.runs.clear();
    }

    /// Frames visited.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// True if no walk is kept.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// The place (outermost first) of the frame at `address`, if the walk
    /// visited it.
    pub fn position(&self, address: u64) -> Option<usize> {
        self.runs.iter().rev().find_map(|&(start, end)| {
            let run = &self.addresses[start..end];
            if address < run[0] || address > run[run.len() - 1] {
                return None;
            }
            run.binary_search(&address).ok().map(|i| start + i)
        })
    }

    /// Frames shown from the outermost up to and including place `place`.
    pub fn shown_up_to(&self, place: usize) -> usize {
        self.shown[place] as usize
    }

    /// Compares the fields at places `place` down to the outermost with
    /// what `source` holds now (reading what it misses, as a walk would):
    /// `Ok` if all are the same, else the place of the first that is not
    /// (or could not be read).
    pub(super) fn compare(
        &self,
        place: usize,
        source: &mut FrameSource,
        memory: &dyn RemoteMemory,
        len: u64,
        offsets: &FieldOffsets,
    ) -> Result<(), usize> {
        for i in (0..=place).rev() {
            let address = self.addresses[i];
            let Some(window) = source.header(memory, address, len) else {
                return Err(i);
            };
            if offsets.read(source.bytes(window, address, len)) != self.fields[i] {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Visits places `place` down to the outermost, innermost first:
    /// (address, frame shown).
    pub fn visit_from(
        &self,
        place: usize,
    ) -> impl Iterator<Item = (u64, Option<FrameSample>)> + '_ {
        self.addresses[..=place]
            .iter()
            .copied()
            .zip(self.frames[..=place].iter().copied())
            .rev()
    }

    /// Keeps places up to `place` (the outermost ones) only.
    pub fn keep_outermost(&mut self, place: usize) {
        let len = place + 1;
        self.addresses.truncate(len);
        self.fields.truncate(len);
        self.frames.truncate(len);
        self.shown.truncate(len);
        while self.runs.last().is_some_and(|&(start, _)| start >= len) {
            self.runs.pop();
        }
        if let Some(run) = self.runs.last_mut() {
            run.1 = run.1.min(len);
        }
    }

    /// Adds a frame further in (the walk's next one inwards).
    pub fn push(&mut self, address: u64, fields: FrameFields, frame: Option<FrameSample>) {
        let index = self.addresses.len();
        let rises = self.addresses.last().is_some_and(|&last| address > last);
        match self.runs.last_mut() {
            Some(run) if rises && run.1 == index => run.1 += 1,
            _ => self.runs.push((index, index + 1)),
        }
        let shown = self.shown.last().copied().unwrap_or(0) + u32::from(frame.is_some());
        self.addresses.push(address);
        self.fields.push(fields);
        self.frames.push(frame);
        self.shown.push(shown);
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
        assert_eq!(walk.len(), 3);
        assert_eq!(walk.position(0x8000), None);
        assert_eq!(walk.position(0x10200), Some(2));
        walk.push(0x10300, fields(0x10200), None);
        assert_eq!(walk.position(0x10300), Some(3));
        assert_eq!(walk.runs, [(0, 4)]);
    }

    #[test]
    fn shown_frames_are_counted_from_the_outermost() {
        let mut walk = LastWalk::default();
        let frame = FrameSample {
            code_address: 0x1000,
            instruction_offset: 4,
            is_generator: false,
            is_shim: false,
        };
        walk.push(0x100, fields(0), Some(frame));
        walk.push(0x200, fields(0x100), None);
        walk.push(0x300, fields(0x200), Some(frame));
        assert_eq!(walk.shown_up_to(0), 1);
        assert_eq!(walk.shown_up_to(1), 1);
        assert_eq!(walk.shown_up_to(2), 2);
        let visited: Vec<u64> = walk.visit_from(1).map(|(a, _)| a).collect();
        assert_eq!(visited, [0x200, 0x100]);
    }
}
