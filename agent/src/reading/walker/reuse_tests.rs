//! A walk that reuses the last walk's frames gives exactly what a full
//! walk of the same copy gives, through every change a stack can go
//! through between two samples (reuse.rs), on each 3.11+ layout.

use super::frames::{walk_interpreter_frames_hinted, FrameSource, Walk, WalkHints};
use super::reuse::LastWalk;
use super::WalkOptions;
use crate::process::memory::SnapshotMemory;
use crate::reading::cpython::Layout;
use pydeep_cpython::layouts;

/// The data-stack chunk.
const CHUNK: u64 = 0x10_0000;
/// Another thread's chunk.
const OTHER_CHUNK: u64 = 0x18_0000;
/// Generator objects' frames (on the heap).
const HEAP: u64 = 0x40_0000;
/// Entry frames on the C stack (3.12+ shims).
const C_STACK: u64 = 0x7000_0000;
/// Code objects.
const CODES: [u64; 4] = [0x20_0000, 0x20_1000, 0x20_2000, 0x20_3000];
/// Bytes between two frames in a chunk.
const STRIDE: u64 = 160;

fn layout(minor: u32) -> Layout {
    let offsets = match minor {
        11 => layouts::CPYTHON_3_11,
        12 => layouts::CPYTHON_3_12,
        _ => layouts::CPYTHON_3_13,
    };
    Layout::of_version(minor, offsets).unwrap()
}

/// One frame as written in target memory.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    address: u64,
    code: u64,
    /// Bytes from the code's first instruction (negative: not started).
    offset: i64,
    owner: u8,
}

/// A thread's stack in a snapshot: `frames` outermost first, linked
/// through `previous` unless `links` overrides one.
struct Stack {
    layout: Layout,
    memory: SnapshotMemory,
    frames: Vec<Frame>,
    /// (index in `frames`, `previous` written instead of its caller's).
    links: Vec<(usize, u64)>,
    /// The start of an older copy of the chunk, walked first (see `copy`).
    older: Option<Vec<u8>>,
}

impl Stack {
    fn new(minor: u32) -> Stack {
        let mut memory = SnapshotMemory::new();
        for region in [CHUNK, OTHER_CHUNK, HEAP, C_STACK] {
            memory.add_region(region, vec![0u8; 256 << 10]);
        }
        Stack {
            layout: layout(minor),
            memory,
            frames: Vec::new(),
            links: Vec::new(),
            older: None,
        }
    }

    /// The address a frame pushed now on the data stack gets.
    fn next_address(&self, chunk: u64) -> u64 {
        self.frames
            .iter()
            .rev()
            .find(|f| f.address >= chunk && f.address < chunk + (256 << 10))
            .map_or(chunk + 64, |f| f.address + STRIDE)
    }

    fn push(&mut self, code: u64, offset: i64) {
        let address = self.next_address(CHUNK);
        self.push_at(address, code, offset, 0);
    }

    fn push_at(&mut self, address: u64, code: u64, offset: i64, owner: u8) {
        self.frames.push(Frame {
            address,
            code,
            offset,
            owner,
        });
    }

    /// Writes every frame (the bytes of popped frames stay behind, as in
    /// CPython's data stack).
    fn write(&mut self) {
        let at = self.layout.interpreter_frames.unwrap();
        let (code_at, instr_at, co_code) = (at.executable, at.instruction, at.code_adaptive);
        for (i, f) in self.frames.iter().enumerate() {
            let previous = self.links.iter().find(|(at, _)| *at == i).map_or_else(
                || i.checked_sub(1).map_or(0, |c| self.frames[c].address),
                |l| l.1,
            );
            let instr = (f.code + co_code).wrapping_add_signed(f.offset);
            for (at, value) in [
                (at.previous, previous),
                (code_at, f.code),
                (instr_at, instr),
            ] {
                assert!(self.memory.write(f.address + at, &value.to_le_bytes()));
            }
            assert!(self.memory.write(f.address + at.owner, &[f.owner]));
        }
    }

    fn current(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.address)
    }
}

/// The copies a sample walks `stack` in: its chunk as one window, after
/// (when `stack.older` holds one) the start of an older copy of it, which
/// a walk is served from first where both hold a frame (a prefetched
/// window beside one read later, in the sampler).
fn copy(stack: &mut Stack) -> FrameSource {
    stack.write();
    let mut source = FrameSource::with_chunk_layout(stack.layout.offsets.stack_chunk_previous);
    if let Some(older) = &stack.older {
        source.add_window(CHUNK, older.clone());
    }
    let mut copy = vec![0u8; 64 << 10];
    crate::process::memory::RemoteMemory::read(&stack.memory, CHUNK, &mut copy).unwrap();
    source.add_window(CHUNK, copy);
    source.add_chunk(CHUNK);
    source
}

/// Walks `source` as the sampler does, with `last` as the walk to reuse
/// (then remembered), or without.
fn walk(
    stack: &Stack,
    source: &mut FrameSource,
    options: &WalkOptions,
    last: Option<&mut LastWalk>,
) -> Walk {
    let hints = WalkHints {
        expected: 16,
        whole_stack: true,
        reuse: last.as_deref(),
        ..WalkHints::default()
    };
    let mut walk = walk_interpreter_frames_hinted(
        &stack.memory,
        &stack.layout,
        stack.current(),
        source,
        options,
        hints,
    );
    if let Some(last) = last {
        last.remember(&mut walk, options.include_shims, true);
    }
    walk
}

/// Walks `stack` with `last` and without it: the same walk, from the same
/// windows. Returns whether frames were reused.
fn same_walk(stack: &mut Stack, last: &mut LastWalk, options: &WalkOptions, what: &str) -> bool {
    let source = copy(stack);
    let full = walk(stack, &mut source.clone(), options, None);
    let mut reusing_source = source.clone();
    let reusing = walk(stack, &mut reusing_source, options, Some(last));
    let minor = stack.layout.version.minor;
    let shown = |w: &Walk| {
        (
            w.frames.clone(),
            w.visited.clone(),
            w.frame_index.clone(),
            w.broken,
            w.truncated,
            w.looped,
        )
    };
    assert_eq!(shown(&reusing), shown(&full), "3.{minor} {what}");
    // The torn-read check and the next prefetch see the same windows used.
    let mut full_source = source;
    walk(stack, &mut full_source, options, None);
    assert_eq!(
        reusing_source.furthest_used(),
        full_source.furthest_used(),
        "3.{minor} {what}"
    );
    reusing.reused.is_some()
}

const MINORS: [u32; 3] = [11, 12, 13];

fn deep(minor: u32, depth: usize) -> Stack {
    let mut stack = Stack::new(minor);
    for i in 0..depth {
        stack.push(CODES[0], 2 * i as i64 + 10);
    }
    stack
}

#[test]
fn reused_frames_are_those_a_full_walk_of_the_copy_gives() {
    for minor in MINORS {
        let options = WalkOptions::default();
        let mut last = LastWalk::default();
        let mut stack = deep(minor, 50);
        assert!(!same_walk(&mut stack, &mut last, &options, "first walk"));
        assert!(same_walk(&mut stack, &mut last, &options, "unchanged"));

        // Changed top: calls, then returns below where it was.
        for _ in 0..3 {
            stack.push(CODES[1], 4);
        }
        assert!(same_walk(&mut stack, &mut last, &options, "called deeper"));
        stack.frames.truncate(45);
        assert!(same_walk(&mut stack, &mut last, &options, "returned"));

        // The innermost frame moved on (same code, another instruction).
        stack.frames.last_mut().unwrap().offset += 6;
        assert!(same_walk(
            &mut stack,
            &mut last,
            &options,
            "innermost moved on"
        ));

        // A caller in the middle at another instruction, with every frame
        // above it unchanged: it returned below and came back another way.
        stack.frames[20].offset += 2;
        assert!(same_walk(
            &mut stack,
            &mut last,
            &options,
            "middle instruction"
        ));
        stack.frames[20].code = CODES[2];
        assert!(same_walk(&mut stack, &mut last, &options, "middle code"));

        // Frames freed and their slots reused by another code.
        stack.frames.truncate(30);
        for _ in 0..15 {
            stack.push(CODES[3], 8);
        }
        assert!(same_walk(&mut stack, &mut last, &options, "slots reused"));

        // The outermost frame changed: nothing can be taken.
        stack.frames[0].offset += 2;
        assert!(!same_walk(
            &mut stack,
            &mut last,
            &options,
            "outermost changed"
        ));
        assert!(same_walk(&mut stack, &mut last, &options, "again"));
    }
}

#[test]
fn a_caller_that_changed_under_an_unchanged_frame_is_seen() {
    // process -> a -> helper -> leaf, then process -> b -> helper -> leaf:
    // a and b take the same room, so helper's frame has the same address,
    // code, instruction and caller address as before. Only a comparison
    // of every frame below it sees that its caller changed.
    for minor in MINORS {
        let options = WalkOptions::default();
        let mut last = LastWalk::default();
        let mut stack = Stack::new(minor);
        stack.push(CODES[0], 20); // process, calling a
        stack.push(CODES[1], 8); // a
        stack.push(CODES[2], 12); // helper
        stack.push(CODES[3], 30); // leaf
        assert!(!same_walk(&mut stack, &mut last, &options, "a"));
        stack.frames[0].offset = 40; // process, calling b
        stack.frames[1].code = CODES[3]; // b
        stack.frames[3].offset = 2; // leaf, elsewhere
        let mut source = copy(&mut stack);
        let walk = walk(&stack, &mut source, &options, Some(&mut last));
        let codes: Vec<u64> = walk.frames.iter().map(|f| f.code_address).collect();
        assert_eq!(codes, [CODES[3], CODES[2], CODES[3], CODES[0]], "3.{minor}");
        assert_eq!(walk.frames[3].instruction_offset, 40, "3.{minor}");
    }
}

#[test]
fn generator_frames_and_shims_are_reused_only_as_a_full_walk_shows_them() {
    for minor in MINORS {
        let layout = layout(minor);
        let generator = layout.semantics.owned_by_generator;
        let shim = layout.semantics.shim_owner_from;
        for include_shims in [false, true] {
            let options = WalkOptions {
                include_shims,
                ..WalkOptions::default()
            };
            let mut last = LastWalk::default();
            let mut stack = deep(minor, 10);
            // A generator's frame on the heap, called from the stack, and
            // frames it called above it in the chunk.
            stack.push_at(HEAP + 0x400, CODES[1], 6, generator);
            if let Some(shim) = shim {
                stack.push_at(C_STACK + 0x800, 0, -2, shim);
            }
            stack.push(CODES[2], 4);
            stack.push(CODES[2], 4);
            assert!(!same_walk(&mut stack, &mut last, &options, "generator"));
            assert!(same_walk(
                &mut stack,
                &mut last,
                &options,
                "generator again"
            ));
            // Resumed elsewhere: the generator's frame now links another
            // caller (a frame lower in the chunk).
            let gen = stack.frames.iter().position(|f| f.owner == generator);
            stack.links = vec![(gen.unwrap(), stack.frames[5].address)];
            assert!(same_walk(&mut stack, &mut last, &options, "resumed"));
            stack.links.clear();
            // The generator's frame unlinked (it yielded): the whole stack
            // cannot end on it, a full walk breaks there.
            stack.frames.truncate(gen.unwrap() + 1);
            stack.links = vec![(gen.unwrap(), 0)];
            same_walk(&mut stack, &mut last, &options, "yielded");
            stack.links.clear();
            same_walk(&mut stack, &mut last, &options, "linked again");
            // The same walk made with the other shim option takes nothing.
            let other = WalkOptions {
                include_shims: !include_shims,
                ..options
            };
            same_walk(&mut stack, &mut last, &other, "other options");
        }
    }
}

#[test]
fn a_walk_of_another_stack_takes_nothing_it_should_not() {
    for minor in MINORS {
        let options = WalkOptions::default();
        let mut last = LastWalk::default();
        let mut first = deep(minor, 30);
        let mut second = Stack::new(minor);
        for i in 0..20 {
            let address = second.next_address(OTHER_CHUNK);
            second.push_at(address, CODES[1], i, 0);
        }
        // A thread switch: the same last walk for two stacks in turn.
        for round in 0..3 {
            same_walk(&mut first, &mut last, &options, "first thread");
            same_walk(&mut second, &mut last, &options, "second thread");
            // A new thread whose chunk took the first one's addresses,
            // with other frames in it.
            if round == 1 {
                for frame in &mut first.frames {
                    frame.code = CODES[2];
                }
            }
        }
    }
}

#[test]
fn limits_breaks_and_loops_are_those_of_a_full_walk() {
    for minor in MINORS {
        for max_depth in [1, 19, 20, 21, 39, 40, 41] {
            let options = WalkOptions {
                max_depth,
                ..WalkOptions::default()
            };
            let mut last = LastWalk::default();
            let mut stack = deep(minor, 40);
            same_walk(&mut stack, &mut last, &options, "limit");
            stack.frames.truncate(20);
            same_walk(&mut stack, &mut last, &options, "limit, shallower");
            stack.push(CODES[1], 2);
            same_walk(&mut stack, &mut last, &options, "limit, deeper");
        }
        let options = WalkOptions::default();
        let mut last = LastWalk::default();
        let mut stack = deep(minor, 40);
        same_walk(&mut stack, &mut last, &options, "before garbage");
        stack.frames[10].owner = 9;
        same_walk(&mut stack, &mut last, &options, "garbage owner");
        stack.frames[10].owner = 0;
        same_walk(&mut stack, &mut last, &options, "owner again");
        // A loop: frame 5 links back to frame 20.
        stack.links = vec![(5, stack.frames[20].address)];
        same_walk(&mut stack, &mut last, &options, "loop");
        stack.links.clear();
        same_walk(&mut stack, &mut last, &options, "no loop");
        assert!(same_walk(&mut stack, &mut last, &options, "no loop again"));
        // A frame that has not started.
        stack.frames[39].offset = -2;
        same_walk(&mut stack, &mut last, &options, "incomplete");
        // A copy showing it as a caller (frames.rs `Visit::NotStarted`).
        stack.push(CODES[1], 4);
        same_walk(&mut stack, &mut last, &options, "incomplete caller");
    }
}

#[test]
fn a_frame_that_has_not_started_is_hidden_when_innermost_and_breaks_a_walk_as_a_caller() {
    for minor in [11, 12] {
        let options = WalkOptions::default();
        let mut stack = deep(minor, 5);
        // Just pushed: `prev_instr` one code unit before the first
        // instruction.
        stack.push(CODES[2], -2);
        let mut source = copy(&mut stack);
        let innermost = walk(&stack, &mut source, &options, None);
        assert!(!innermost.broken, "3.{minor}");
        assert!(innermost.innermost_not_started, "3.{minor}");
        assert_eq!(
            innermost.frames.len(),
            5,
            "3.{minor}: hidden, its callers shown"
        );
        // A callee's copy linked to it: the copy mixes two moments (the
        // frame was pushed again at an address whose callee predates it).
        stack.push(CODES[3], 6);
        let mut last = LastWalk::default();
        let mut source = copy(&mut stack);
        let caller = walk(&stack, &mut source, &options, Some(&mut last));
        assert!(caller.broken, "3.{minor}");
        assert_eq!(
            caller.frames.len(),
            1,
            "3.{minor}: only the callee above it"
        );
    }
}

#[test]
fn random_changes_never_make_a_reused_walk_differ_from_a_full_one() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n.max(1)
    };
    for minor in MINORS {
        let generator = layout(minor).semantics.owned_by_generator;
        let mut last = LastWalk::default();
        let mut stack = deep(minor, 60);
        let mut reused = 0;
        for round in 0..3000 {
            let depth = stack.frames.len() as u64;
            match next(12) {
                0 | 1 => {
                    let pop = next(depth.min(8) + 1) as usize;
                    stack.frames.truncate(stack.frames.len() - pop);
                }
                2 | 3 => {
                    for _ in 0..next(8) {
                        if stack.frames.len() < 200 {
                            stack.push(CODES[next(4) as usize], 2 * next(20) as i64);
                        }
                    }
                }
                4 if depth > 0 => {
                    let i = next(depth) as usize;
                    stack.frames[i].offset = 2 * next(20) as i64 - 2;
                }
                5 if depth > 0 => {
                    let i = next(depth) as usize;
                    stack.frames[i].code = CODES[next(4) as usize];
                }
                6 if depth > 0 => {
                    let i = next(depth) as usize;
                    // Garbage (7) stays until popped: rarely.
                    stack.frames[i].owner = [0, 0, generator, 3, 4, 7][next(6) as usize];
                }
                7 if depth > 1 => {
                    let i = next(depth) as usize;
                    let to = next(depth) as usize;
                    stack.links = vec![(i, stack.frames[to].address)];
                }
                8 => stack.links.clear(),
                _ => {}
            }
            let options = WalkOptions {
                max_depth: [4096, 30, 61][next(3) as usize],
                include_shims: next(4) == 0,
                ..WalkOptions::default()
            };
            let what = format!("round {round}");
            reused += usize::from(same_walk(&mut stack, &mut last, &options, &what));
            // Sometimes the next walk is served partly from this copy:
            // a frame there may differ from the newer copy's.
            let mut copy = vec![0u8; (next(16) as usize + 1) << 9];
            crate::process::memory::RemoteMemory::read(&stack.memory, CHUNK, &mut copy).unwrap();
            stack.older = (next(3) == 0).then_some(copy);
        }
        eprintln!("3.{minor}: reused in {reused} of 3000 walks");
        assert!(reused > 150, "3.{minor}: reused in {reused} walks");
    }
}

#[test]
fn a_generator_frame_is_joined_only_to_a_caller_holding_its_generator_when_read_fast() {
    for minor in [12, 13] {
        let generator = layout(minor).semantics.owned_by_generator;
        let mut stack = deep(minor, 3);
        // The consumer, then the generator's frame inside its object,
        // linked to it.
        stack.push(CODES[1], 12);
        let consumer = stack.current();
        let o = stack.layout.offsets;
        let iframe = o.generator_gi_iframe.unwrap();
        let generator_object = HEAP + 0x4000;
        stack.push_at(generator_object + iframe, CODES[2], 20, generator);
        let localsplus = stack.layout.interpreter_frames.unwrap().localsplus;
        let stacktop_at = consumer + o.interpreter_frame_stacktop.unwrap();
        let walk_with = |stack: &mut Stack, stacktop: i32, top: u64, check_torn: bool| {
            assert!(stack.memory.write(stacktop_at, &stacktop.to_le_bytes()));
            let top_at = consumer + localsplus + 8 * 2;
            assert!(stack.memory.write(top_at, &top.to_le_bytes()));
            let options = WalkOptions {
                check_torn,
                ..WalkOptions::default()
            };
            let mut source = copy(stack);
            walk(stack, &mut source, &options, None)
        };
        // FOR_ITER_GEN saved the consumer's stack pointer with the
        // generator on top (3 slots: 2 locals and the iterator).
        let joined = walk_with(&mut stack, 3, generator_object, true);
        assert!(!joined.broken, "3.{minor}");
        assert_eq!(joined.frames.len(), 5, "3.{minor}");
        // Another generator on top: a copy of another moment.
        let other = walk_with(&mut stack, 3, generator_object + 0x1000, true);
        assert!(other.broken, "3.{minor}");
        assert_eq!(
            other.frames.len(),
            1,
            "3.{minor}: the generator's frame only"
        );
        // Read paused, or with no stack pointer saved (-1 while a frame
        // runs): nothing to check.
        assert!(!walk_with(&mut stack, 3, generator_object + 0x1000, false).broken);
        assert!(!walk_with(&mut stack, -1, generator_object + 0x1000, true).broken);
    }
}
