//! Frame chains of both families: `PyFrameObject` (3.9/3.10) and
//! `_PyInterpreterFrame` (3.11+).
//!
//! Both walks are capped (depth, bytes read per window), detect cycles, and
//! treat anything implausible as the end of the chain (flagged `broken`),
//! never as a reason to panic or loop.

use super::reuse::{FrameFields, LastWalk};
use super::{FrameSample, WalkOptions};
use crate::process::memory::{field_u32, field_u64, field_u8, RemoteMemory, SnapshotMemory};
use crate::reading::cpython::{FrameKind, InstructionPointer, InterpreterFrameOffsets, Layout};

/// Largest data-stack window copied in one read.
const MAX_WINDOW: u64 = 1 << 20;
/// Window read below a frame whose chunk is unknown (an older chunk or a
/// generator's frame): the frames of its callers usually sit just below.
const SPECULATIVE_WINDOW: u64 = 8 << 10;

/// Bytes copied above the header of a frame outside the data-stack chunks
/// (a generator's frame, a 3.12+ entry frame): the top of its value stack,
/// where a frame resuming a generator keeps it ([`resumes`]).
pub(super) const STACK_ROOM: u64 = 256;

/// Cycle detection along a frame chain without a set (Brent's
/// algorithm): one comparison per frame. A hash set of the addresses seen
/// was 14% of a depth-1,000 sample; a chain is a function of the address,
/// so a repeat shows as the walk meeting a remembered address, set at
/// doubling distances, within a few cycle lengths of entering it.
struct CycleCheck {
    remembered: Option<u64>,
    remembered_at: usize,
    power: usize,
    steps: usize,
}

impl CycleCheck {
    fn new() -> CycleCheck {
        CycleCheck {
            remembered: None,
            remembered_at: 0,
            power: 1,
            steps: 0,
        }
    }

    /// Visit number `index` is at `address`: the cycle's length if the
    /// chain is looping.
    fn visit(&mut self, address: u64, index: usize) -> Option<usize> {
        if self.remembered == Some(address) {
            return Some(index - self.remembered_at);
        }
        self.steps += 1;
        if self.steps == self.power {
            self.remembered = Some(address);
            self.remembered_at = index;
            self.power = self.power.saturating_mul(2);
            self.steps = 0;
        }
        None
    }
}

/// Cuts a walk found looping with cycle length `length` back to its first
/// repeated frame, as if repeats were caught at once, and flags it
/// [`Walk::looped`].
fn cut_cycle(walk: &mut Walk, length: usize) {
    let visited = &walk.visited;
    let start = (0..visited.len().saturating_sub(length))
        .find(|&i| visited[i] == visited[i + length])
        .unwrap_or(visited.len().saturating_sub(length));
    let first_repeat = (start + length).min(visited.len());
    walk.visited.truncate(first_repeat);
    if let Some(&frames) = walk.frame_index.get(first_repeat) {
        walk.frames.truncate(frames);
    }
    walk.frame_index.truncate(first_repeat);
    walk.looped = true;
}

/// Most bytes of a frame header the walker reads (the fields it reads all
/// lie in the first 128 bytes in every layout).
pub const MAX_HEADER: usize = 128;

/// Copies of target memory the walker reads frames from: data-stack
/// windows read in a batch (3.11+), or single frame headers. Every frame a
/// walk visits is served from here, so the torn-read check can compare
/// them with a re-read without copying each header.
#[derive(Debug, Default, Clone)]
pub struct FrameSource {
    windows: Vec<(u64, Vec<u8>)>,
    /// Starts of data-stack chunks known so far: the thread's current chunk
    /// and, when the layout says where `_PyStackChunk.previous` is, the
    /// older chunks read from each window's chunk header.
    chunks: Vec<u64>,
    /// Offset of `_PyStackChunk.previous`, if known.
    chunk_previous_at: Option<u64>,
    /// The window of the last hit: a walk asks for neighbouring frames.
    last: usize,
    /// The highest index of a window the walk read a frame from.
    furthest: Option<usize>,
}

impl FrameSource {
    /// No prefetched memory.
    pub fn new() -> FrameSource {
        FrameSource::default()
    }

    /// Copies of target memory are served from here; `chunk_previous_at`
    /// is the offset of `_PyStackChunk.previous` when the layout knows it.
    pub fn with_chunk_layout(chunk_previous_at: Option<u64>) -> FrameSource {
        FrameSource {
            chunk_previous_at,
            ..FrameSource::default()
        }
    }

    /// Adds a copied range of target memory starting at `address`.
    pub fn add_window(&mut self, address: u64, bytes: Vec<u8>) {
        self.note_chunk(address, &bytes);
        self.windows.push((address, bytes));
    }

    /// The copied ranges: (address, bytes).
    pub fn windows(&self) -> &[(u64, Vec<u8>)] {
        &self.windows
    }

    /// Empties the source, handing back the buffers of its windows (to be
    /// reused by the next sample).
    pub fn take_windows(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.chunks.clear();
        self.last = 0;
        self.furthest = None;
        self.windows.drain(..).map(|(_, bytes)| bytes)
    }

    /// Records `chunk` as the start of a data-stack chunk, and the chunks
    /// linked below it whose headers are already copied.
    pub fn add_chunk(&mut self, chunk: u64) {
        let mut next = Some(chunk);
        // Each round adds one chunk, so this ends after at most one round
        // per window.
        for _ in 0..=self.windows.len() {
            let Some(chunk) = next.take() else { break };
            if chunk == 0 || self.chunks.contains(&chunk) {
                break;
            }
            self.chunks.push(chunk);
            if let (Some(at), Some((_, bytes))) = (
                self.chunk_previous_at,
                self.windows.iter().find(|(start, _)| *start == chunk),
            ) {
                let previous = field_u64(bytes, at);
                if previous != 0 && previous.is_multiple_of(8) {
                    next = Some(previous);
                }
            }
        }
    }

    /// True if `address` is the start of a known data-stack chunk.
    pub fn is_chunk(&self, address: u64) -> bool {
        self.chunks.contains(&address)
    }

    fn note_chunk(&mut self, address: u64, bytes: &[u8]) {
        if let Some(at) = self.chunk_previous_at {
            if self.chunks.contains(&address) {
                let previous = field_u64(bytes, at);
                if previous != 0 && previous.is_multiple_of(8) {
                    self.add_chunk(previous);
                }
            }
        }
    }

    /// The index of a window holding the `len` bytes at `address`.
    pub fn locate(&mut self, address: u64, len: u64) -> Option<usize> {
        let holds = |(start, bytes): &(u64, Vec<u8>)| {
            address
                .checked_sub(*start)
                .and_then(|offset| offset.checked_add(len))
                .is_some_and(|end| end <= bytes.len() as u64)
        };
        let last = self.last;
        // A walk goes from window to window in order, a comparison of two
        // copies in the reverse order.
        for index in [last, last + 1, last.wrapping_sub(1)] {
            if self.windows.get(index).is_some_and(holds) {
                self.last = index;
                return Some(index);
            }
        }
        let index = self.windows.iter().position(holds)?;
        self.last = index;
        Some(index)
    }

    /// The highest index of a window the walk served a frame from (windows
    /// are numbered in the order they were added).
    pub fn furthest_used(&self) -> Option<usize> {
        self.furthest
    }

    /// The `len` bytes at `address` if a window holds them.
    pub fn find(&self, address: u64, len: u64) -> Option<&[u8]> {
        self.windows.iter().find_map(|(start, bytes)| {
            let offset = address.checked_sub(*start)?;
            let end = offset.checked_add(len)?;
            (end <= bytes.len() as u64).then(|| &bytes[offset as usize..end as usize])
        })
    }

    /// The `len` bytes at `address` in window `index`.
    pub fn bytes(&self, index: usize, address: u64, len: u64) -> &[u8] {
        let (start, bytes) = &self.windows[index];
        let offset = (address - start) as usize;
        &bytes[offset..offset + len as usize]
    }

    /// The window holding the `len` bytes at `address`: a copied one if
    /// any holds them, otherwise one read now reaching down to the nearest
    /// known chunk start (or a little below the frame), since callers'
    /// frames sit below their callees', else the exact bytes.
    pub(super) fn header(
        &mut self,
        memory: &dyn RemoteMemory,
        address: u64,
        len: u64,
    ) -> Option<usize> {
        let index = self.read_header(memory, address, len)?;
        self.furthest = Some(self.furthest.map_or(index, |f| f.max(index)));
        Some(index)
    }

    fn read_header(&mut self, memory: &dyn RemoteMemory, address: u64, len: u64) -> Option<usize> {
        if len as usize > MAX_HEADER {
            return None;
        }
        if let Some(index) = self.locate(address, len) {
            return Some(index);
        }
        let end = address.checked_add(len)?;
        let chunk = self
            .chunks
            .iter()
            .copied()
            .filter(|&c| c <= address && end - c <= MAX_WINDOW)
            .max();
        let start = chunk.unwrap_or_else(|| end.saturating_sub(SPECULATIVE_WINDOW.max(len)));
        // Outside a chunk, the frame's value stack too ([`STACK_ROOM`]),
        // if that much is readable.
        let room_end = end.saturating_add(STACK_ROOM);
        let mut bytes = vec![0u8; (room_end - start) as usize];
        if chunk.is_none() && memory.read(start, &mut bytes).is_ok() {
            self.add_window(start, bytes);
            return self.locate(address, len);
        }
        bytes.truncate((end - start) as usize);
        if memory.read(start, &mut bytes).is_ok() {
            self.add_window(start, bytes);
            return self.locate(address, len);
        }
        let mut exact = vec![0u8; len as usize];
        memory.read(address, &mut exact).ok()?;
        self.add_window(address, exact);
        self.locate(address, len)
    }
}

/// The result of walking one thread's frame chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Frames, innermost first.
    pub frames: Vec<FrameSample>,
    /// More frames than the depth limit.
    pub truncated: bool,
    /// The chain ended on something implausible (unreadable, a cycle, a
    /// garbage field): in a running target, a sign of a torn read.
    pub broken: bool,
    /// The chain led back to a frame it had visited: the walk stopped
    /// before the first repeat. A read of a stack that did not move
    /// showing a loop shows the target's own chain (corrupt or hostile),
    /// not a torn copy: its sample keeps the frames up to the loop and is
    /// flagged cut short ([`crate::ThreadSample::truncated`]), so the
    /// thread stays in the profile.
    pub looped: bool,
    /// Address of every frame header read, innermost first, for the
    /// torn-read check; the bytes are in the walk's [`FrameSource`].
    pub visited: Vec<u64>,
    /// Bytes read of each frame header.
    pub header_len: u64,
    /// For each entry of `visited`, how many of `frames` come before it
    /// (shims and incomplete frames are visited but not shown).
    pub frame_index: Vec<usize>,
    /// The address the walk stopped at because its hints said so
    /// ([`WalkHints::stop_at`]), not visited.
    pub stopped_at: Option<u64>,
    /// With [`WalkHints::reuse`]: the place in that last walk from which
    /// its frames were taken (the new copy held the same fields from there
    /// outwards), if they were.
    pub reused: Option<usize>,
    /// With [`WalkHints::reuse`]: the fields read at each frame the walk
    /// visited itself (the first ones of `visited`).
    pub fields: Vec<FrameFields>,
    /// The innermost frame visited had not started (pushed, its first
    /// instruction not yet run; not shown). Only the innermost may be one:
    /// a walk reaching such a frame from a callee breaks there, and one
    /// reusing this walk must not take it as a caller (reuse.rs).
    pub innermost_not_started: bool,
}

impl Walk {
    /// Keeps only the frames from `visited[index]` outwards: the stack
    /// after its innermost frames returned down to that one.
    pub fn cut_at(&mut self, index: usize) {
        let Some(&first_frame) = self.frame_index.get(index) else {
            return;
        };
        self.frames.drain(..first_frame);
        self.visited.drain(..index);
        self.frame_index.drain(..index);
        self.frame_index.iter_mut().for_each(|i| *i -= first_frame);
    }

    /// Puts `callees` (a walk that stopped at `visited[index]`) on top of
    /// the frames from `visited[index]` outwards: the stack after the
    /// thread returned down to that frame (or not at all) and called the
    /// frames `callees` holds.
    pub fn graft(&mut self, callees: Walk, index: usize) {
        self.cut_at(index);
        let shift = callees.frames.len();
        let mut frames = callees.frames;
        frames.append(&mut self.frames);
        self.frames = frames;
        let mut visited = callees.visited;
        visited.append(&mut self.visited);
        self.visited = visited;
        let mut frame_index = callees.frame_index;
        frame_index.extend(self.frame_index.iter().map(|i| i + shift));
        self.frame_index = frame_index;
        self.truncated |= callees.truncated;
    }
}

/// What a walk of 3.11+ frames may know in advance.
#[derive(Clone, Copy)]
pub struct WalkHints<'a> {
    /// Room reserved for this many frames (the sampler passes the thread's
    /// last depth): a walk of 1,000 frames that grows its vectors from 64
    /// copies them four times, ~8% of a sample's CPU at that depth.
    pub expected: usize,
    /// The walk stops before visiting an address for which this is true
    /// ([`Walk::stopped_at`]); a walk that may stop takes nothing from
    /// [`WalkHints::reuse`].
    pub stop_at: Option<&'a dyn Fn(u64) -> bool>,
    /// The walk reads a thread's whole stack, which never ends on a
    /// generator's frame: a generator's frame links its caller while it
    /// runs and is unlinked (`previous = NULL`) when it yields
    /// (Python/bytecodes.c YIELD_VALUE), so a chain ending on one was read
    /// from a copy taken after it yielded, and is flagged `broken`.
    pub whole_stack: bool,
    /// The thread's last walk: where the copy holds its fields unchanged
    /// from a frame outwards, its frames from there are taken as they were
    /// (reuse.rs).
    pub reuse: Option<&'a LastWalk>,
}

impl Default for WalkHints<'_> {
    fn default() -> Self {
        WalkHints {
            expected: 64,
            stop_at: None,
            whole_stack: false,
            reuse: None,
        }
    }
}

/// Walks 3.9/3.10 `PyFrameObject`s from `first` along `f_back` (one read
/// per frame: frame objects live anywhere on the heap); the headers read
/// are kept in `source`.
pub fn walk_frame_objects(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    first: u64,
    source: &mut FrameSource,
    options: &WalkOptions,
) -> Walk {
    let Some(at) = layout.frame_objects else {
        return Walk {
            broken: true,
            ..Walk::default()
        };
    };
    let len = at.header_len();
    let mut walk = Walk {
        header_len: len,
        frames: Vec::with_capacity(64),
        visited: Vec::with_capacity(64),
        ..Walk::default()
    };
    let mut cycle = CycleCheck::new();
    let mut address = first;
    while address != 0 {
        if walk.frames.len() >= options.max_depth {
            walk.truncated = true;
            break;
        }
        if !address.is_multiple_of(8) {
            walk.broken = true;
            break;
        }
        if let Some(length) = cycle.visit(address, walk.visited.len()) {
            cut_cycle(&mut walk, length);
            break;
        }
        // Prefetched in the sample's first batch (prefetch.rs), or read now.
        let index = match source.locate(address, len) {
            Some(index) => index,
            None => {
                let mut header = vec![0u8; len as usize];
                if memory.read(address, &mut header).is_err() {
                    walk.broken = true;
                    break;
                }
                source.add_window(address, header);
                source.windows.len() - 1
            }
        };
        let header = source.bytes(index, address, len);
        walk.visited.push(address);
        walk.frame_index.push(walk.frames.len());
        let code = field_u64(header, at.code);
        let lasti = field_u32(header, at.lasti) as i32;
        // Whether the frame object runs (it or a callee): a frame object
        // reached through a stale pointer (a code's zombie frame or the
        // free list, whose `f_back` links the free list) does not.
        let running = at.running.runs(field_u8(header, at.running.offset()));
        // Read paused, the frame the thread state names is the thread's
        // current frame even while it is entering (3.10 sets `f_state` to
        // FRAME_EXECUTING, 3.9 `f_executing` to 1, a few instructions
        // after the thread state names it) or leaving (RETURN_VALUE marks
        // it returned before the thread state names its caller): its
        // callers must run. Read running, such a frame may be one popped
        // before the copy, and ends the walk.
        let running = running || (walk.visited.len() == 1 && !options.check_torn);
        if code == 0 || !code.is_multiple_of(8) || !running {
            walk.broken = true;
            break;
        }
        let offset = match layout.semantics.instruction {
            InstructionPointer::LastiCodeUnits => lasti.saturating_mul(2),
            _ => lasti,
        };
        let is_generator = field_u64(header, at.gen) != 0;
        let back = field_u64(header, at.back);
        // A running generator's frame has a caller: the frame that resumed
        // it (`gen_send_ex` sets `f_back` before the frame runs and clears
        // it after). Read running, one with none is a header copied across
        // a resume: `f_back` before it (the generator suspended, `f_back`
        // cleared), `f_executing`/`f_state` after (running again). Seen on
        // an idle 3.9 reading a generator pipeline: the stack was the
        // generator alone. (A generator resumed from C with no Python frame
        // has none either: read paused, it is kept.)
        if is_generator && back == 0 && options.check_torn {
            walk.broken = true;
            break;
        }
        walk.frames.push(FrameSample {
            code_address: code,
            instruction_offset: offset.max(0) as u32,
            is_generator,
            is_shim: false,
        });
        address = back;
    }
    walk
}

/// Walks 3.11+ `_PyInterpreterFrame`s from `current` along `previous`,
/// serving frames from `source` (a copy of the data stack) where possible.
/// `source` should know the thread's current data-stack chunk
/// ([`FrameSource::add_chunk`]).
pub fn walk_interpreter_frames(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    current: u64,
    source: &mut FrameSource,
    options: &WalkOptions,
) -> Walk {
    walk_interpreter_frames_hinted(
        memory,
        layout,
        current,
        source,
        options,
        WalkHints::default(),
    )
}

/// Walks 3.11+ frames from `current` in copies already made (`source`),
/// reading nothing from the target: how a sample re-walks its stack from a
/// later pointer. `None` for 3.9/3.10 frame objects, which are read one at
/// a time and never copied ahead.
pub(super) fn walk_copied_frames(
    layout: &Layout,
    current: u64,
    source: &mut FrameSource,
    options: &WalkOptions,
    hints: WalkHints<'_>,
) -> Option<Walk> {
    if layout.semantics.frame_kind != FrameKind::InterpreterFrame {
        return None;
    }
    let nothing = SnapshotMemory::new();
    Some(walk_interpreter_frames_hinted(
        &nothing, layout, current, source, options, hints,
    ))
}

/// [`walk_interpreter_frames`] with [`WalkHints`]. Each visit goes
/// through the same steps: the walk's limits, the rest of the stack as
/// the last walk saw it ([`Reuse::rest`]), the cycle check, the frame's
/// header from the copy ([`FrameSource::header`]), and what it shows
/// ([`visit`]).
pub(super) fn walk_interpreter_frames_hinted(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    current: u64,
    source: &mut FrameSource,
    options: &WalkOptions,
    hints: WalkHints<'_>,
) -> Walk {
    let Some(at) = layout.interpreter_frames else {
        return Walk {
            broken: true,
            ..Walk::default()
        };
    };
    // Read only the header of each frame, not its locals and stack.
    let len = at.header_len();
    let expected = hints.expected.clamp(16, options.max_depth.max(16));
    let mut walk = Walk {
        header_len: len,
        frames: Vec::with_capacity(expected),
        visited: Vec::with_capacity(expected),
        frame_index: Vec::with_capacity(expected),
        ..Walk::default()
    };
    let mut cycle = CycleCheck::new();
    let mut address = current;
    // The frame visited last (address, owner): a generator's frame is
    // checked against the frame it links as its caller ([`resumes`]).
    let mut callee: Option<(u64, u8)> = None;
    // Frames are visited, including skipped shims, at most this often.
    let mut budget = options.max_depth.saturating_mul(2).saturating_add(16);
    // The last walk is reused only if it was made as this one is: the
    // same options decide what is shown and where a walk breaks.
    let mut reuse = Reuse {
        last: hints.reuse.filter(|last| {
            hints.stop_at.is_none() && last.made_as(options.include_shims, hints.whole_stack, len)
        }),
        below: usize::MAX,
        len,
        at: &at,
    };
    while address != 0 {
        if hints.stop_at.is_some_and(|stop| stop(address)) {
            walk.stopped_at = Some(address);
            break;
        }
        if walk.frames.len() >= options.max_depth {
            walk.truncated = true;
            break;
        }
        budget = budget.saturating_sub(1);
        if budget == 0 || !address.is_multiple_of(8) {
            walk.broken = true;
            break;
        }
        // Before the last walk's frames are taken from here: the link to
        // them is this walk's.
        if let Some((generator_frame, owner)) = callee {
            if options.check_torn
                && owner == layout.semantics.owned_by_generator
                && !resumes(layout, &at, source, memory, address, len, generator_frame)
            {
                walk.broken = true;
                break;
            }
        }
        if reuse.rest(
            address,
            &mut walk,
            source,
            memory,
            options.max_depth,
            budget,
        ) {
            break;
        }
        if let Some(length) = cycle.visit(address, walk.visited.len()) {
            cut_cycle(&mut walk, length);
            break;
        }
        let Some(window) = source.header(memory, address, len) else {
            walk.broken = true;
            break;
        };
        let fields = FrameFields::read(&at, source.bytes(window, address, len));
        if hints.reuse.is_some() {
            walk.fields.push(fields);
        }
        callee = Some((address, fields.owner));
        walk.visited.push(address);
        walk.frame_index.push(walk.frames.len());
        match visit(layout, &at, options, hints.whole_stack, fields) {
            Visit::Next(shown) => {
                if let Some(frame) = shown {
                    walk.frames.push(frame);
                }
                address = fields.previous;
            }
            Visit::NotStarted if walk.visited.len() == 1 => {
                walk.innermost_not_started = true;
                address = fields.previous;
            }
            // A frame that has not started has no callee: the copy of the
            // frame(s) above it predates its push. See [`Visit::NotStarted`].
            Visit::NotStarted => {
                walk.broken = true;
                break;
            }
            Visit::Broken(shown) => {
                if let Some(frame) = shown {
                    walk.frames.push(frame);
                }
                walk.broken = true;
                break;
            }
        }
    }
    walk
}

/// False if the copy proves that the frame at `caller` (header `len`
/// bytes, in `source`) is not the one resuming the generator whose frame
/// is at `generator_frame`, which links it as its caller. Read running,
/// a false link comes from copies of two moments of generator objects
/// freed and allocated again: a pipeline made anew swaps its generators'
/// addresses (the same size class, freed and taken back in reverse
/// order), so a copy of `numbers` from the new pipeline links its
/// `squares` at an address whose older copy, from the old pipeline,
/// shows `evens` (3.12.1, 3.13.0: `numbers` → `evens` → `consume`, up to
/// 1 in 3,000 back-to-back fast reads of churn.py's pipeline) while the
/// current-frame pointer names the same `numbers` frame before and after.
///
/// A frame resuming a generator inline (3.12+ `FOR_ITER_GEN`,
/// `SEND_GEN`: `DISPATCH_INLINED` saves its stack pointer in `stacktop`
/// before linking the generator's frame, Python/bytecodes.c) holds the
/// generator on top of its value stack (`iter`, `receiver`; the slot
/// below is allowed too, for an output slot counted before the call).
/// A running frame keeps `stacktop` at -1 (`_PyFrame_GetStackPointer`),
/// and 3.11 resumes generators from C (`gen_send_ex2`), leaving it so:
/// nothing is checked then, nor when the copy lacks those bytes or the
/// layout the offsets.
fn resumes(
    layout: &Layout,
    at: &InterpreterFrameOffsets,
    source: &mut FrameSource,
    memory: &dyn RemoteMemory,
    caller: u64,
    len: u64,
    generator_frame: u64,
) -> bool {
    let o = &layout.offsets;
    let (Some(stacktop_at), Some(iframe_at)) =
        (o.interpreter_frame_stacktop, o.generator_gi_iframe)
    else {
        return true;
    };
    if stacktop_at + 4 > len || !caller.is_multiple_of(8) {
        return true;
    }
    // The bytes the walk reads there next (the same window).
    let Some(window) = source.header(memory, caller, len) else {
        return true;
    };
    let header = source.bytes(window, caller, len);
    let owner = field_u8(header, at.owner);
    if layout
        .semantics
        .shim_owner_from
        .is_some_and(|from| owner >= from)
    {
        return true;
    }
    let stacktop = field_u32(header, stacktop_at) as i32;
    if !(1..=1 << 16).contains(&stacktop) {
        return true;
    }
    let generator = generator_frame.wrapping_sub(iframe_at);
    let top = caller
        .wrapping_add(at.localsplus)
        .wrapping_add(8 * (stacktop as u64 - 1));
    let slot = |address: u64| source.find(address, 8).map(|bytes| field_u64(bytes, 0));
    match slot(top) {
        None => true,
        Some(value) if value == generator => true,
        Some(_) => stacktop >= 2 && slot(top.wrapping_sub(8)) == Some(generator),
    }
}

/// The last walk of the thread, as one walk may reuse it.
struct Reuse<'a> {
    /// The last walk, if made as this one is.
    last: Option<&'a LastWalk>,
    /// Places of the last walk worth comparing: below the first that
    /// differed in an earlier comparison (it would differ again).
    below: usize,
    /// Header bytes read of each frame.
    len: u64,
    at: &'a InterpreterFrameOffsets,
}

impl Reuse<'_> {
    /// Ends `walk` with the last walk's frames from `address` outwards,
    /// as the last walk saw them, if the copy holds the same fields at
    /// every one of them and a walk of them would end on the outermost
    /// frame: within the depth limit (conservatively: fewer frames than
    /// it) and the visit `budget` (this visit is counted already). True
    /// if it did.
    #[inline]
    fn rest(
        &mut self,
        address: u64,
        walk: &mut Walk,
        source: &mut FrameSource,
        memory: &dyn RemoteMemory,
        max_depth: usize,
        budget: usize,
    ) -> bool {
        let Some(last) = self.last else {
            return false;
        };
        let Some(place) = last.position(address).filter(|&place| place < self.below) else {
            return false;
        };
        if !walk.visited.is_empty() && !last.reusable_as_caller(place) {
            return false;
        }
        let fits = walk.frames.len() + last.shown_up_to(place) < max_depth && place < budget;
        match last.compare(place, source, memory, self.len, self.at) {
            Ok(()) if fits => {
                last.extend(place, walk);
                walk.reused = Some(place);
                return true;
            }
            Ok(()) => self.below = 0,
            Err(differs) => self.below = differs,
        }
        false
    }
}

/// What one frame header tells a walk.
enum Visit {
    /// The walk goes on to the caller, after showing this frame (`None`: a
    /// shim not shown).
    Next(Option<FrameSample>),
    /// A frame that has not started: its instruction pointer is still
    /// before its first instruction (3.11/3.12 `prev_instr` one unit
    /// before it, `_PyFrame_InitializeSpecials`), so it is not shown
    /// (CPython hides such "incomplete" frames from sys._current_frames,
    /// `_PyFrame_IsIncomplete`). It is the innermost frame or the walk is
    /// broken there: a frame calls nothing before its first instruction
    /// (ceval.c CALL pushes it, links it as the current frame and runs it;
    /// 3.11's call trace event first moves `prev_instr` to its RESUME,
    /// DO_TRACING), so a caller that has not started was copied just after
    /// it was pushed again at an address whose callee's copy is from an
    /// earlier or later descent (a return and a new call in between: the
    /// ABA of notes/cpython-frames.md, "What it cannot prove"). Walked on,
    /// such a copy joined a generator to its consumer's caller on 3.11
    /// (`evens` → `work`, the fresh `consume` hidden).
    NotStarted,
    /// Not a frame of a stack: the walk ends, flagged broken, after
    /// showing this frame if any.
    Broken(Option<FrameSample>),
}

/// What the frame whose header holds `fields` shows, and whether its
/// chain goes on.
#[inline]
fn visit(
    layout: &Layout,
    at: &InterpreterFrameOffsets,
    options: &WalkOptions,
    whole_stack: bool,
    fields: FrameFields,
) -> Visit {
    let s = &layout.semantics;
    let owner = fields.owner;
    let code = fields.code & !s.executable_tag_mask;
    // FRAME_OWNED_BY_THREAD..FRAME_OWNED_BY_CSTACK are 0..=4 in every
    // version (pycore_frame.h); anything else is not a frame.
    if owner > 4 {
        return Visit::Broken(None);
    }
    let is_shim = s.shim_owner_from.is_some_and(|from| owner >= from);
    if is_shim && !options.include_shims {
        return Visit::Next(None);
    }
    if code == 0 || !code.is_multiple_of(8) {
        if is_shim {
            return Visit::Next(None);
        }
        return Visit::Broken(None);
    }
    let offset = fields
        .instruction
        .wrapping_sub(code.wrapping_add(at.code_adaptive)) as i64;
    if !(-2..=i64::from(i32::MAX)).contains(&offset) {
        return Visit::Broken(None);
    }
    // A frame whose instruction pointer is still before the first
    // instruction has not started ([`Visit::NotStarted`]).
    let shown = (offset >= 0 || is_shim).then(|| FrameSample {
        code_address: code,
        instruction_offset: offset.max(0) as u32,
        is_generator: owner == s.owned_by_generator,
        is_shim,
    });
    // A whole stack never ends on a generator's frame ([`WalkHints`]).
    if fields.previous == 0 && whole_stack && owner == s.owned_by_generator {
        return Visit::Broken(shown);
    }
    match shown {
        Some(_) => Visit::Next(shown),
        None => Visit::NotStarted,
    }
}
