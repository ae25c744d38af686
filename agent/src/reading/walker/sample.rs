//! One sample of every thread: the batches of reads, the walk and the
//! torn-read check. A stack that tore is not read again: a later read
//! would be another moment's stack, and which ticks such retries save
//! depends on the code being run (short calls return before the retry).

use super::frames::{
    walk_frame_objects, walk_interpreter_frames_hinted, FrameSource, Walk, WalkHints, STACK_ROOM,
};
use super::prefetch::{ThreadPrefetch, Used, Window, MIN_CHUNK};
use super::reuse::LastWalk;
use super::threads::{list_threads, read_states, StateReads, ThreadListCache};
use super::torn::{top_agrees, walk_callees, Reread};
use super::{ThreadSample, WalkError, WalkOptions};
use crate::process::memory::{field_u64, RemoteMemory, MAX_READ};
use crate::reading::cpython::{FrameKind, FramePointer, Layout};

/// One thread's sample while it is read.
pub(super) struct ThreadRead {
    pub sample: ThreadSample,
    /// Address of the pointer to the current frame (in the thread state on
    /// 3.13+ and 3.9/3.10, in the C-stack `_PyCFrame` on 3.11/3.12).
    pub frame_pointer_at: u64,
    pub current_frame: u64,
    pub chunk: u64,
    pub walk: Walk,
    /// The memory the walk was served from.
    pub source: FrameSource,
    /// How many of `source`'s windows (the first ones) a pointer read
    /// after them may bracket: the first batch's, and the windows the
    /// data-stack batch added before the pointer it read again.
    pub bracketed_windows: usize,
    /// For each of those windows, the current-frame pointer as read again
    /// after the window (None if it was not read).
    pub pointer_after: Vec<Option<u64>>,
    /// For each of those windows, `tstate->datastack_top` as read right
    /// before and right after that pointer, if both reads agree (None if
    /// they were not read, or the thread called or returned between them).
    pub top_after: Vec<Option<u64>>,
    /// The current-frame pointer was read after the first batch (phase 2:
    /// the prefetch missed it), so no later pointer brackets the first
    /// batch's windows.
    pointer_read_late: bool,
    /// Frame headers the thread's last walk visited: room reserved for
    /// this walk.
    expected_frames: usize,
    /// The thread's last complete walk (3.11+, reuse.rs), taken from its
    /// prefetch for this walk and given back updated.
    last_walk: LastWalk,
}

impl ThreadRead {
    /// The current-frame pointer read after every window the walk used, if
    /// the walk used only windows of the first batch and that pointer was
    /// read: the windows were then copied between the two pointer reads.
    fn bracket(&self) -> Option<u64> {
        self.pointer_after
            .get(self.bracketing_window()?)
            .copied()
            .flatten()
    }

    /// The data-stack top read around [`ThreadRead::bracket`]'s pointer,
    /// if both reads of it agreed.
    fn bracket_top(&self) -> Option<u64> {
        self.top_after
            .get(self.bracketing_window()?)
            .copied()
            .flatten()
    }

    /// The furthest window the walk used, if a pointer read after it may
    /// bracket it.
    fn bracketing_window(&self) -> Option<usize> {
        self.source
            .furthest_used()
            .filter(|&used| used < self.bracketed_windows)
    }
}

/// A piece of the first batch read for a thread's prefetch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefetched {
    /// The current-frame pointer (3.11/3.12, before the windows: where the
    /// walk starts).
    Pointer,
    /// A data-stack window at this address.
    Window(u64),
    /// The current-frame pointer again, right after the thread's windows
    /// read before it: if it still names the frame the walk started from
    /// (or a callee of it), those windows were copied while that frame,
    /// and so all its callers, stayed on the stack.
    PointerAfter,
    /// `tstate->datastack_top`, right before and right after the pointer
    /// read again: when both agree, no frame was pushed or popped around
    /// that pointer read, and the innermost data-stack frame ends at or
    /// below that top.
    TopBefore,
    TopAfter,
    /// The fingerprint of the code object at this address.
    Code(u64),
}

/// Copies of target memory: (address, bytes).
type Copies = Vec<(u64, Vec<u8>)>;

/// The prefetch pieces of the cached threads,
/// each with its owner (thread state address; 0 for code objects), in the
/// order the kernel copies them:
/// 1. the code objects to check;
/// 2. the 3.11/3.12 current-frame pointers (`cframe`);
/// 3. the windows, outermost first (`prefetch.rs`): a chunk freed since
///    (CPython 3.11+ unmaps a chunk when its last frame returns) ends the
///    batch, after the chunks below it, which are the ones still alive;
/// 4. after each window of a thread that may be its last one read (from
///    the one below its innermost window of the last samples on), its
///    pointer again: it brackets the windows read before it, and the
///    innermost frames, the ones that change, are copied right before it.
fn prefetch_pieces(
    cache: &mut ThreadListCache,
    cframe: bool,
    code_check: &CodeCheck<'_>,
    top_at: Option<u64>,
) -> (Vec<(u64, Prefetched)>, Copies) {
    let mut owners = Vec::new();
    let mut pieces: Copies = Vec::new();
    for &code in &cache.codes {
        if (code_check.needs_check)(code) {
            owners.push((0, Prefetched::Code(code)));
            pieces.push((code, vec![0u8; code_check.len]));
        }
    }
    for thread in &cache.prefetch {
        if cframe && thread.frame_pointer_at >= 8 {
            owners.push((thread.thread_state, Prefetched::Pointer));
            pieces.push((thread.frame_pointer_at, vec![0u8; 8]));
        }
    }
    // (position, age, thread, window, read the pointer after it).
    let mut windows: Vec<(u32, u32, usize, Window, bool)> = Vec::new();
    for (thread_index, thread) in cache.prefetch.iter().enumerate() {
        for w in &thread.windows {
            // An older chunk window is read whole: the stack may have
            // moved anywhere in it since.
            let len = if w.age > 0 && w.is_chunk {
                w.len.max(MIN_CHUNK)
            } else {
                w.len
            };
            if len as usize <= MAX_READ {
                let window = Window { len, ..*w };
                let bracket = w.position + 1 >= thread.shallowest;
                windows.push((w.position, w.age, thread_index, window, bracket));
            }
        }
    }
    windows.sort_by_key(|w| (w.0, w.1));
    // 3.9/3.10 frame objects, after every thread's chunk windows (there
    // are none on these versions): the walk reads only those not here.
    for (thread_index, thread) in cache.prefetch.iter().enumerate() {
        for (address, end) in thread.frame_object_ranges() {
            let window = Window {
                address,
                len: end - address,
                age: 0,
                position: u32::MAX,
                is_chunk: false,
            };
            windows.push((u32::MAX, 0, thread_index, window, false));
        }
    }
    for (_, _, thread_index, w, bracket) in windows {
        let thread = &cache.prefetch[thread_index];
        owners.push((thread.thread_state, Prefetched::Window(w.address)));
        let mut buffer = cache.spare.pop().unwrap_or_default();
        // Stale bytes are fine: a piece is used only if it was read.
        buffer.resize(w.len as usize, 0);
        pieces.push((w.address, buffer));
        if bracket && thread.frame_pointer_at >= 8 {
            if let Some(at) = top_at {
                owners.push((thread.thread_state, Prefetched::TopBefore));
                pieces.push((thread.thread_state.wrapping_add(at), vec![0u8; 8]));
            }
            owners.push((thread.thread_state, Prefetched::PointerAfter));
            pieces.push((thread.frame_pointer_at, vec![0u8; 8]));
            if let Some(at) = top_at {
                owners.push((thread.thread_state, Prefetched::TopAfter));
                pieces.push((thread.thread_state.wrapping_add(at), vec![0u8; 8]));
            }
        }
    }
    (owners, pieces)
}

/// Reads every thread of every interpreter into `out` (cleared first).
///
/// `cache` carries the thread lists and what each walk read from one
/// sample to the next; `code_check` names code objects whose fingerprint
/// (`code_check_len` bytes) should be re-read in the sample's last batch,
/// and receives those bytes.
///
/// A thread whose stack tore keeps the callers both reads agree on,
/// flagged [`ThreadSample::torn`] (torn.rs).
pub fn sample_interpreters(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    options: &WalkOptions,
    cache: &mut ThreadListCache,
    code_check: &mut CodeCheck<'_>,
    out: &mut Vec<ThreadSample>,
) -> Result<(), WalkError> {
    // The frame vectors of the samples `out` held are filled again (see
    // `ThreadListCache::spare_frames`).
    cache
        .spare_frames
        .extend(out.drain(..).map(|sample| sample.frames));
    cache.spare_frames.truncate(MAX_SPARE_FRAMES);
    let mut codes = attempt(
        memory,
        layout,
        runtime_address,
        options,
        cache,
        code_check,
        out,
    )?;
    codes.sort_unstable();
    codes.dedup();
    cache.codes = codes;
    code_check.ok = true;
    Ok(())
}

/// The most frame vectors kept for reuse ([`ThreadListCache`]'s
/// `spare_frames`): one per thread of a large program.
const MAX_SPARE_FRAMES: usize = 256;

/// What the first batch of a sample read besides the thread states.
struct FirstBatch {
    /// One read per thread, its walk still to come.
    reads: Vec<ThreadRead>,
    /// Threads whose current-frame pointer the batch did not hold (indexes
    /// into `reads`): read in phase 2.
    missing: Vec<usize>,
    /// Code-object fingerprints read in the batch.
    codes: Copies,
    /// The first prefetched piece that could not be read (its memory is
    /// gone), if any: the kernel stopped the batch there.
    failed: Option<(u64, Prefetched)>,
    /// The prefetched pieces after it, not reached: (owner, what, length).
    not_reached: Vec<(u64, Prefetched, u64)>,
}

/// Reads every thread into `out` (appended), and returns the distinct
/// code addresses of their stacks: the first batch (thread states with
/// last sample's pieces), the pointers it missed, the walks, the torn-read
/// check, and what the next sample should prefetch.
fn attempt(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    options: &WalkOptions,
    cache: &mut ThreadListCache,
    code_check: &mut CodeCheck<'_>,
    out: &mut Vec<ThreadSample>,
) -> Result<Vec<u64>, WalkError> {
    let FirstBatch {
        mut reads,
        missing,
        codes: first_batch_codes,
        failed,
        not_reached,
    } = read_first_batch(memory, layout, runtime_address, options, cache, code_check)?;
    take_last_walks(cache, &mut reads);
    read_missing_pointers(memory, &mut reads, &missing);
    walk_threads(memory, layout, options, &mut reads, &not_reached);
    let codes = settle_threads(
        memory,
        layout,
        options,
        code_check,
        &mut reads,
        first_batch_codes,
    );
    remember_reads(layout, cache, &mut reads, failed);
    hand_out_samples(cache, options, reads, out);
    Ok(codes)
}

/// Gives each thread's read its last complete walk (reuse.rs), kept in
/// its prefetch since the last sample.
fn take_last_walks(cache: &mut ThreadListCache, reads: &mut [ThreadRead]) {
    for read in reads.iter_mut() {
        if let Some(prefetch) = cache
            .prefetch
            .iter_mut()
            .find(|p| p.thread_state == read.sample.thread_state)
        {
            read.last_walk = std::mem::take(&mut prefetch.last_walk);
        }
    }
}

/// Last step: each thread's sample, its frames copied out of its walk into
/// a spare frame vector, appended to `out`.
fn hand_out_samples(
    cache: &mut ThreadListCache,
    options: &WalkOptions,
    reads: Vec<ThreadRead>,
    out: &mut Vec<ThreadSample>,
) {
    for read in reads {
        let mut sample = read.sample;
        sample.truncated =
            read.walk.truncated || read.walk.looped || (read.walk.broken && !options.check_torn);
        let mut frames = cache.spare_frames.pop().unwrap_or_default();
        frames.clear();
        frames.extend_from_slice(&read.walk.frames);
        sample.frames = frames;
        out.push(sample);
    }
}

/// Phase 1: the thread states and the GIL of each interpreter, in one
/// batch when the lists did not change since the last sample, and in the
/// same batch each thread's current-frame pointer and data-stack windows
/// (or 3.9/3.10 frame objects) where they were last time.
fn read_first_batch(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    options: &WalkOptions,
    cache: &mut ThreadListCache,
    code_check: &CodeCheck<'_>,
) -> Result<FirstBatch, WalkError> {
    let o = &layout.offsets;
    let mut reads: Vec<ThreadRead> = Vec::new();
    let through_cframe = matches!(layout.frame_pointer, FramePointer::ThroughCFrame { .. });
    let (owners, mut extra) =
        prefetch_pieces(cache, through_cframe, code_check, o.thread_datastack_top);
    let mut batch = read_states(
        memory,
        layout,
        runtime_address,
        &cache.interpreters,
        &mut extra,
    );
    if !matches!(&batch, Ok(b) if b.consistent) {
        cache.interpreters = list_threads(memory, layout, runtime_address, options)?;
        batch = read_states(
            memory,
            layout,
            runtime_address,
            &cache.interpreters,
            &mut extra,
        );
    }
    let StateReads {
        states,
        gils,
        collecting,
        extra_done,
        ..
    } = batch?;
    let Prefetches {
        mut prefetched,
        failed,
        not_reached,
    } = Prefetches::of(owners, extra, extra_done);

    let interpreters = &cache.interpreters;
    let holder_of = |index: u32| -> Option<u64> {
        let position = interpreters.iter().position(|i| i.index == index)?;
        gil_holder(layout, &gils[position])
    };
    let gil_off = |position: usize| -> bool {
        gils.get(position)
            .is_some_and(|gil| gil_is_off(layout, gil))
    };
    // Whether the thread state `address` of interpreter `index` is running
    // its collector. With a GIL, the collector runs on the thread that holds
    // it (and keeps it throughout, finalizers and callbacks included).
    // Without one (free-threaded, GIL off) no field names the collecting
    // thread: Python/gc_free_threading.c runs the collection on the thread
    // that asked for it, and the other threads run between its
    // stop-the-world phases (finalizers, callbacks, tp_clear of the
    // garbage). It is known only when the interpreter has a single thread:
    // that one. With several, no thread is flagged.
    let collector_on = |index: u32, address: u64, holds_gil: bool| -> bool {
        let Some(position) = interpreters.iter().position(|i| i.index == index) else {
            return false;
        };
        if !collecting.get(position).copied().unwrap_or(false) {
            return false;
        }
        holds_gil || (gil_off(position) && interpreters[position].threads == [address])
    };
    let mut missing: Vec<usize> = Vec::new();
    let mut first_batch_codes: Copies = Vec::new();
    prefetched.retain_mut(|(_, what, bytes)| match what {
        Prefetched::Code(address) => {
            first_batch_codes.push((*address, std::mem::take(bytes)));
            false
        }
        _ => true,
    });
    for (interpreter, address, state) in &states {
        let holds_gil = holder_of(*interpreter) == Some(*address);
        let sample = ThreadSample {
            thread_id: field_u64(state, layout.core.thread_thread_id),
            native_id: o
                .thread_native_thread_id
                .map_or(0, |at| field_u64(state, at)),
            interpreter: *interpreter,
            holds_gil,
            collecting: collector_on(*interpreter, *address, holds_gil),
            thread_state: *address,
            ..ThreadSample::default()
        };
        let (read, pointer_missing) =
            assemble_thread_read(layout, sample, state, &mut prefetched, &cache.prefetch);
        if pointer_missing {
            missing.push(reads.len());
        }
        reads.push(read);
    }

    Ok(FirstBatch {
        reads,
        missing,
        codes: first_batch_codes,
        failed,
        not_reached,
    })
}

/// The prefetched pieces of the first batch, by owner: read, failed (the
/// first that could not be read: its memory is gone) or not reached.
struct Prefetches {
    /// Those read: (owner, what, bytes).
    prefetched: Vec<(u64, Prefetched, Vec<u8>)>,
    /// The first that could not be read, if any.
    failed: Option<(u64, Prefetched)>,
    /// Those after it: (owner, what, length).
    not_reached: Vec<(u64, Prefetched, u64)>,
}

impl Prefetches {
    /// Sorts the pieces `extra` (owned as `owners` says), of which the
    /// batch read the first `done`.
    fn of(mut owners: Vec<(u64, Prefetched)>, mut extra: Copies, done: usize) -> Prefetches {
        let failed = owners.get(done).copied();
        let not_reached = owners
            .iter()
            .zip(&extra)
            .skip(done + 1)
            .map(|((owner, what), (_, bytes))| (*owner, *what, bytes.len() as u64))
            .collect();
        owners.truncate(done);
        extra.truncate(done);
        let prefetched = owners
            .into_iter()
            .zip(extra)
            .map(|((owner, what), (_, bytes))| (owner, what, bytes))
            .collect();
        Prefetches {
            prefetched,
            failed,
            not_reached,
        }
    }
}

/// The thread state holding the GIL whose struct `gil` is, if it is held.
fn gil_holder(layout: &Layout, gil: &[u8]) -> Option<u64> {
    let o = &layout.offsets;
    if gil_is_off(layout, gil) {
        return None;
    }
    let locked = field_u64(gil, o.gil_locked?) as u32;
    let holder = field_u64(gil, o.gil_last_holder?);
    (locked != 0).then_some(holder)
}

/// True if `gil` (an interpreter's GIL struct as read) is turned off: a
/// free-threaded build's is (`enabled` 0) unless PYTHON_GIL=1 or a
/// GIL-needing extension turned it on. No thread holds an off GIL.
fn gil_is_off(layout: &Layout, gil: &[u8]) -> bool {
    layout
        .offsets
        .gil_enabled
        .is_some_and(|at| crate::process::memory::field_u32(gil, at) == 0)
}

/// One thread's read from the first batch: its state (`state`, copied),
/// and its pieces among `prefetched` (taken), in batch order: the
/// pointer, windows (into its source) and the pointer again after them,
/// with the data-stack top around it. Also whether its current-frame
/// pointer is still to be read (phase 2).
fn assemble_thread_read(
    layout: &Layout,
    sample: ThreadSample,
    state: &[u8],
    prefetched: &mut [(u64, Prefetched, Vec<u8>)],
    prefetch: &[ThreadPrefetch],
) -> (ThreadRead, bool) {
    let o = &layout.offsets;
    let address = &sample.thread_state;
    // The pointer's offset in the thread state, when it is there (else
    // the prefetch reads it through the cframe).
    let direct = match layout.frame_pointer {
        FramePointer::InThreadState(at) => Some(at),
        FramePointer::ThroughCFrame { .. } => None,
    };
    let frame_pointer_at = match layout.frame_pointer {
        FramePointer::InThreadState(at) => address.wrapping_add(at),
        FramePointer::ThroughCFrame {
            cframe,
            current_frame,
        } => field_u64(state, cframe).wrapping_add(current_frame),
    };
    let mut current_frame = direct.map_or(0, |at| field_u64(state, at));
    let mut source = FrameSource::with_chunk_layout(o.stack_chunk_previous);
    let mut pointer_after: Vec<Option<u64>> = Vec::new();
    let mut top_after: Vec<Option<u64>> = Vec::new();
    let mut top_from = 0;
    let mut top_before: Option<u64> = None;
    let mut pointer_read = direct.is_some();
    // This thread's pieces, in batch order: the pointer, windows (into
    // its source) and the pointer again after them. A pointer read at
    // another address than the thread's pointer now (its C call
    // changed) says nothing.
    let mut bracket_from = 0;
    for (owner, what, bytes) in prefetched.iter_mut() {
        if *owner != *address {
            continue;
        }
        match *what {
            Prefetched::Pointer => {
                current_frame = field_u64(bytes, 0);
                pointer_read = true;
            }
            Prefetched::Window(start) => {
                source.add_window(start, std::mem::take(bytes));
                pointer_after.push(None);
                top_after.push(None);
            }
            Prefetched::PointerAfter => {
                let value = Some(field_u64(bytes, 0));
                for after in &mut pointer_after[bracket_from..] {
                    *after = value;
                }
                top_from = bracket_from;
                bracket_from = pointer_after.len();
            }
            Prefetched::TopBefore => top_before = Some(field_u64(bytes, 0)),
            Prefetched::TopAfter => {
                let read = field_u64(bytes, 0);
                let value = (top_before.take() == Some(read)).then_some(read);
                for top in &mut top_after[top_from..] {
                    *top = value;
                }
            }
            Prefetched::Code(_) => {}
        }
    }
    let (cached_at, last_depth) = prefetch
        .iter()
        .find(|p| p.thread_state == *address)
        .map_or((0, 0), |p| (p.frame_pointer_at, p.last_depth));
    if cached_at != frame_pointer_at {
        pointer_read = direct.is_some();
        pointer_after.iter_mut().for_each(|p| *p = None);
        top_after.iter_mut().for_each(|p| *p = None);
    }
    let chunk = o
        .thread_datastack_chunk
        .map_or(0, |at| field_u64(state, at));
    source.add_chunk(chunk);
    let read = ThreadRead {
        sample,
        frame_pointer_at,
        current_frame,
        chunk,
        walk: Walk::default(),
        bracketed_windows: source.windows().len(),
        source,
        pointer_after,
        top_after,
        expected_frames: last_depth + last_depth / 8 + 16,
        pointer_read_late: false,
        last_walk: LastWalk::default(),
    };
    (read, !pointer_read && frame_pointer_at >= 8)
}

/// Phase 2 (3.11/3.12): the current frame lives in the C-stack
/// `_PyCFrame`; read here only where the prefetch missed (a new thread, or
/// a thread that entered or left a C call since the last sample).
fn read_missing_pointers(memory: &dyn RemoteMemory, reads: &mut [ThreadRead], missing: &[usize]) {
    if !missing.is_empty() {
        let mut values = vec![[0u8; 8]; missing.len()];
        let ok = {
            let mut pieces: Vec<(u64, &mut [u8])> = missing
                .iter()
                .zip(values.iter_mut())
                .map(|(&i, v)| (reads[i].frame_pointer_at, &mut v[..]))
                .collect();
            memory.read_many(&mut pieces).is_ok()
        };
        for (&i, value) in missing.iter().zip(values.iter_mut()) {
            // One unreadable cframe (a thread exiting) must not cost the
            // others their sample: read them one by one.
            if !ok && memory.read(reads[i].frame_pointer_at, value).is_err() {
                *value = [0; 8];
            }
            reads[i].current_frame = u64::from_le_bytes(*value);
            // Read after the first batch: its later pointers prove nothing.
            reads[i].pointer_after.iter_mut().for_each(|p| *p = None);
            reads[i].top_after.iter_mut().for_each(|p| *p = None);
            reads[i].pointer_read_late = true;
        }
    }
}

/// Phase 3: walk. On 3.11+ each thread's data stack is copied first where
/// the prefetch did not cover it ([`copy_unprefetched_stacks`]), then
/// walked in the copies, reusing the thread's last walk where the copy
/// holds it unchanged (reuse.rs).
fn walk_threads(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    options: &WalkOptions,
    reads: &mut [ThreadRead],
    not_reached: &[(u64, Prefetched, u64)],
) {
    match layout.semantics.frame_kind {
        FrameKind::FrameObject => {
            for read in reads.iter_mut() {
                read.walk = walk_frame_objects(
                    memory,
                    layout,
                    read.current_frame,
                    &mut read.source,
                    options,
                );
            }
        }
        FrameKind::InterpreterFrame => {
            let Some(frames) = layout.interpreter_frames else {
                return;
            };
            copy_unprefetched_stacks(memory, frames.size, reads, not_reached);
            for read in reads.iter_mut() {
                read.walk = walk_interpreter_frames_hinted(
                    memory,
                    layout,
                    read.current_frame,
                    &mut read.source,
                    options,
                    WalkHints {
                        expected: read.expected_frames,
                        whole_stack: true,
                        reuse: Some(&read.last_walk),
                        ..WalkHints::default()
                    },
                );
                read.last_walk
                    .remember(&mut read.walk, options.include_shims, true);
            }
        }
    }
}

/// Phase 3a (3.11+): copies, in one batch, the data stack of each thread
/// the first batch's windows did not cover, from its chunk's start up to
/// its innermost frame (`frame_size` bytes each), with the prefetch
/// pieces the first batch did not reach, as far as they read.
fn copy_unprefetched_stacks(
    memory: &dyn RemoteMemory,
    frame_size: u64,
    reads: &mut [ThreadRead],
    not_reached: &[(u64, Prefetched, u64)],
) {
    let mut windows: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut window_owners: Vec<usize> = Vec::new();
    for (i, read) in reads.iter_mut().enumerate() {
        let frame = read.current_frame;
        if frame == 0 || read.chunk == 0 || frame < read.chunk {
            continue;
        }
        if read.source.locate(frame, frame_size).is_some() {
            continue;
        }
        let end = frame.saturating_add(frame_size);
        if end - read.chunk <= 1 << 20 {
            windows.push((read.chunk, vec![0u8; (end - read.chunk) as usize]));
            window_owners.push(i);
        }
    }
    if windows.is_empty() {
        return;
    }
    // After the threads' windows, each thread's pointer again:
    // read after every window its walk may use, it brackets
    // them as the first batch's pointer does its windows
    // (torn.rs), so a stack that grew into a chunk the
    // prefetch did not hold needs no re-read of every frame.
    // Not for a pointer read late (phase 2): the first
    // batch's windows were copied before it.
    // (Each thread has one window here: from its chunk's start
    // to its innermost frame.)
    let mut owners: Vec<(usize, bool)> = window_owners.iter().map(|&i| (i, false)).collect();
    for &i in &window_owners {
        let read = &reads[i];
        if read.frame_pointer_at >= 8 && !read.pointer_read_late {
            windows.push((read.frame_pointer_at, vec![0u8; 8]));
            owners.push((i, true));
        }
    }
    let required = windows.len();
    for (owner, what, len) in not_reached {
        let Prefetched::Window(start) = *what else {
            continue;
        };
        if let Some(i) = reads.iter().position(|r| r.sample.thread_state == *owner) {
            windows.push((start, vec![0u8; *len as usize]));
            owners.push((i, false));
        }
    }
    let done = {
        let mut pieces: Vec<(u64, &mut [u8])> =
            windows.iter_mut().map(|(a, b)| (*a, &mut b[..])).collect();
        memory.read_prefix(&mut pieces).unwrap_or(0)
    };
    // The thread windows are all or nothing (as one batch
    // was before the prefetch); prefetch pieces as far as read.
    let keep = if done >= required { done } else { 0 };
    for ((address, bytes), (owner, is_pointer)) in windows.into_iter().zip(owners).take(keep) {
        let read = &mut reads[owner];
        if is_pointer {
            let value = Some(field_u64(&bytes, 0));
            let count = read.source.windows().len();
            read.pointer_after.resize(count, value);
            read.top_after.resize(count, None);
            read.bracketed_windows = count;
        } else {
            read.source.add_window(address, bytes);
        }
    }
}

/// Phase 4: was each stack one the program really had? See torn.rs. A
/// stack read entirely in the first batch, whose innermost frame the
/// pointer read after its windows still names (or a callee of it, in the
/// same copy), needs no re-read; the others are re-read in one last batch,
/// with the code objects whose fingerprints the first batch did not hold.
/// Returns the code addresses checked.
fn settle_threads(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    options: &WalkOptions,
    code_check: &mut CodeCheck<'_>,
    reads: &mut [ThreadRead],
    mut first_batch_codes: Copies,
) -> Vec<u64> {
    let codes = code_check.select(reads);
    let mut from_first_batch: Vec<u64> = Vec::new();
    for (address, bytes) in code_check.pieces.iter_mut() {
        if let Some((_, read)) = first_batch_codes.iter_mut().find(|(a, _)| a == address) {
            *bytes = std::mem::take(read);
            from_first_batch.push(*address);
        }
    }
    let mut rereads: Vec<Option<Reread>> = Vec::with_capacity(reads.len());
    for read in reads.iter_mut() {
        let reread = if !options.check_torn {
            None
        } else if read.walk.broken {
            if layout.semantics.frame_kind != FrameKind::InterpreterFrame {
                tear(read)
            } else if read.bracket().is_none() {
                Some(Reread::plan(layout, read))
            } else {
                tear(read)
            }
        } else if read.walk.visited.is_empty() {
            // No Python frame: nothing shown can be wrong.
            None
        } else if layout.semantics.frame_kind == FrameKind::InterpreterFrame {
            settle_from_bracket(layout, read, options, code_check.frame_size)
        } else {
            Some(Reread::plan(layout, read))
        };
        rereads.push(reread);
    }
    let last_ok = {
        let mut pieces: Vec<(u64, &mut [u8])> = Vec::new();
        for (read, reread) in reads.iter().zip(rereads.iter_mut()) {
            if let Some(reread) = reread {
                reread.pieces(read, &mut pieces);
            }
        }
        for (address, bytes) in code_check.pieces.iter_mut() {
            if bytes.is_empty() {
                bytes.resize(code_check.len, 0);
                pieces.push((*address, &mut bytes[..]));
            }
        }
        pieces.is_empty() || memory.read_many(&mut pieces).is_ok()
    };
    for (read, reread) in reads.iter_mut().zip(rereads) {
        if let Some(reread) = reread {
            read.sample.torn = !last_ok || !reread.settle(layout, read, options);
        }
    }
    if !last_ok {
        // Only the fingerprints the first batch read are known.
        code_check
            .pieces
            .retain(|(address, _)| from_first_batch.contains(address));
    }

    codes
}

/// Remembers where each thread's walk read, for the next sample's first
/// batch (prefetch.rs), and keeps the buffers for reuse.
fn remember_reads(
    layout: &Layout,
    cache: &mut ThreadListCache,
    reads: &mut [ThreadRead],
    failed: Option<(u64, Prefetched)>,
) {
    let failed_window = match failed {
        Some((owner, Prefetched::Window(address))) => Some((owner, address)),
        _ => None,
    };
    let mut next: Vec<ThreadPrefetch> = Vec::with_capacity(reads.len());
    for read in reads.iter_mut() {
        let address = read.sample.thread_state;
        let mut prefetch = cache
            .prefetch
            .iter()
            .position(|p| p.thread_state == address)
            .map(|i| cache.prefetch.swap_remove(i))
            .unwrap_or_else(|| ThreadPrefetch {
                thread_state: address,
                ..ThreadPrefetch::default()
            });
        prefetch.frame_pointer_at = read.frame_pointer_at;
        prefetch.last_depth = read.walk.visited.len();
        prefetch.last_walk = std::mem::take(&mut read.last_walk);
        let used = if layout.semantics.frame_kind == FrameKind::InterpreterFrame {
            used_windows(&mut read.source, &read.walk)
        } else {
            Vec::new()
        };
        let failed: Vec<u64> = failed_window
            .filter(|(owner, _)| *owner == address)
            .map(|(_, a)| a)
            .into_iter()
            .collect();
        prefetch.update(&used, &failed);
        if layout.semantics.frame_kind == FrameKind::FrameObject {
            prefetch.update_frame_objects(&read.walk.visited, read.walk.header_len, &failed);
        }
        next.push(prefetch);
    }
    cache.prefetch = next;
    cache.spare.clear();
    for read in reads.iter_mut() {
        cache.spare.extend(read.source.take_windows());
    }
}

/// Settles a 3.11+ thread's sample from its first batch where the pointer
/// read right after the windows its walk used (`t1`, the bracket) allows;
/// otherwise says what to re-read. The sample shows the stack at `t1`:
///
/// * the pointer names the innermost frame read: that stack;
/// * it names a caller of it (the thread returned): the stack from that
///   caller outwards;
/// * its chain in the same copy reaches a frame of the stack read (the
///   thread called deeper, perhaps after returning): those callees on top
///   of the frames from that one outwards;
/// * a stack that does not end where the data-stack top read beside the
///   pointer says (its innermost frame was copied before the frame there
///   now was pushed), or a pointer that cannot be joined to the stack
///   read (its callees were pushed after their bytes were copied): torn.
///
/// Only a walk that needed memory the first batch did not hold (a new
/// chunk, a pointer read after the batch) is re-read, whatever it shows:
/// a re-read chosen because the first read looked wrong would land on
/// another moment's stack, chosen by the code being run (issue #13).
///
/// Every frame shown was on the stack at `t0`, before the copy, and at
/// `t1`, after it (or was pushed between and linked to such a frame in the
/// copy), so its callers' copies were taken while they could not change
/// (notes/cpython-frames.md, "Torn reads"). Which stacks are kept does not
/// depend on what the thread did in between: a return, a call or both
/// each give the stack at `t1`.
fn settle_from_bracket(
    layout: &Layout,
    read: &mut ThreadRead,
    options: &WalkOptions,
    frame_size: &dyn Fn(u64) -> Option<u64>,
) -> Option<Reread> {
    let Some(after) = read.bracket() else {
        return Some(Reread::plan(layout, read));
    };
    read.sample.moved = after != read.current_frame;
    if read.walk.looped && (read.sample.moved || loops_through_generators(&read.walk)) {
        // A loop read while the stack moved may be the copy's, not the
        // target's; so may one through generator frames, whatever the
        // pointer says ([`loops_through_generators`]).
        return tear(read);
    }
    let top = read.bracket_top();
    let len = read.walk.header_len;
    // The stack `frames` (addresses, innermost first) ends where the top
    // says it may.
    let agrees = |read: &ThreadRead, frames: &[u64]| {
        let frames = frames.iter().copied();
        top_agrees(
            layout,
            &[&read.source],
            &read.source,
            frames,
            len,
            top,
            frame_size,
        )
    };
    if after == read.current_frame {
        if !agrees(read, &read.walk.visited) {
            return tear(read);
        }
        return None;
    }
    if let Some(index) = read.walk.visited.iter().position(|&a| a == after) {
        if !agrees(read, &read.walk.visited[index..]) {
            return tear(read);
        }
        read.walk.cut_at(index);
        return None;
    }
    // The thread called deeper, perhaps after returning: its callees on
    // top of the frames from the one their chain joins outwards, which
    // were on the stack throughout. (Leaving the callees out would give
    // their caller the tick: with a return, a call or both, the stack
    // shown would always be the shallower one.) A caller among them copied
    // before it made its call shows the instruction it had saved before
    // (notes/cpython-frames.md, "What it cannot prove").
    if let Some((callees, index)) =
        walk_callees(layout, &mut read.source, after, &read.walk.visited, options)
    {
        read.walk.graft(callees, index);
        return None;
    }
    tear(read)
}

/// True if `walk` looped through a generator's frame. Generator frames
/// live in their generator objects (`gi_iframe`), which are freed and
/// allocated again, in another order, each time a pipeline of generators
/// is made anew: copies of two such frames taken a moment apart can link
/// each to the other (3.11.7 reading `numbers` → `squares` → `numbers`,
/// 3.12.1 `squares` → `squares`, on a pipeline of 3 items made every
/// ~2 µs), while the current-frame pointer names the same frame before
/// and after. So a loop through one is not taken for the target's own,
/// even when the pointer did not move: it is torn.
pub(super) fn loops_through_generators(walk: &Walk) -> bool {
    walk.looped && walk.frames.iter().any(|f| f.is_generator)
}

/// Flags `read`'s sample torn: its stack could not be settled from its
/// own read. It is not read again: a later read would be another moment's
/// stack, and which ticks it saves would depend on the code being run
/// (short calls return before it). Torn ticks are counted by
/// [`crate::recording::exactness`], which reads the next ticks paused when they are
/// more than one in a hundred.
fn tear(read: &mut ThreadRead) -> Option<Reread> {
    read.sample.torn = true;
    None
}

/// The windows of `source` the walk read frames from, outermost first,
/// each with the end of the last frame header read in it.
///
/// A chunk's window starts at the chunk (its header links the older
/// chunk). Any other window (the entry frame 3.12+ keeps on the C stack,
/// or a frame outside the known chunks) starts at the lowest frame the walk
/// read in it: such a window was first read 8 KiB below its frame
/// (`frames.rs`), 3 pages of which the walk used one frame header, and
/// each page read costs the kernel a pin (~0.3 µs) and a copy.
fn used_windows(source: &mut FrameSource, walk: &Walk) -> Vec<Used> {
    // (start of the window in `source`, what the walk used of it).
    let mut used: Vec<(u64, Used)> = Vec::new();
    // A walk visits a window's frames one after another: a window is
    // looked up only when a frame lies outside the last one's (at depth
    // 1,000, looking up each frame cost ~8% of a sample).
    // (index in `used`, window start, window end).
    let mut current: Option<(usize, u64, u64)> = None;
    for &address in walk.visited.iter().rev() {
        let end = address + walk.header_len;
        let slot = match current {
            Some((slot, start, window_end)) if address >= start && end <= window_end => slot,
            _ => {
                let Some(index) = source.locate(address, walk.header_len) else {
                    current = None;
                    continue;
                };
                let (start, bytes) = &source.windows()[index];
                let (start, window_end) = (*start, *start + bytes.len() as u64);
                let slot = match used.iter().position(|(window, _)| *window == start) {
                    Some(slot) => slot,
                    None => {
                        let is_chunk = source.is_chunk(start);
                        let from = if is_chunk { start } else { address };
                        used.push((
                            start,
                            Used {
                                address: from,
                                end,
                                is_chunk,
                            },
                        ));
                        used.len() - 1
                    }
                };
                current = Some((slot, start, window_end));
                slot
            }
        };
        let u = &mut used[slot].1;
        u.end = u.end.max(end);
        if !u.is_chunk {
            u.address = u.address.min(address);
            // The frame's value stack too, as far as this copy held it
            // (frames.rs `STACK_ROOM`: readable then).
            let window_end = current.map_or(end, |(_, _, window_end)| window_end);
            u.end = u.end.max((end + STACK_ROOM).min(window_end));
        }
    }
    used.into_iter().map(|(_, u)| u).collect()
}

/// Code objects to re-check in a sample's last batch read.
pub struct CodeCheck<'a> {
    /// Which code addresses need checking.
    pub needs_check: &'a dyn Fn(u64) -> bool,
    /// Bytes to read of each.
    pub len: usize,
    /// The addresses chosen and the bytes read (only the pieces read are
    /// kept).
    pub pieces: Vec<(u64, Vec<u8>)>,
    /// True if `pieces` were read (kept for callers: always true now that
    /// unread pieces are dropped).
    pub ok: bool,
    /// Bytes a frame of the code object at an address takes on the data
    /// stack, where known ([`crate::reading::cpython::CodeObject::frame_size`]):
    /// with the data-stack top read beside the current-frame pointer it
    /// tells whether the innermost frame copied is the one the pointer
    /// names (torn.rs [`top_agrees`]).
    pub frame_size: &'a dyn Fn(u64) -> Option<u64>,
}

impl<'a> CodeCheck<'a> {
    /// A check of the code objects `needs_check` accepts.
    pub fn new(needs_check: &'a dyn Fn(u64) -> bool, len: usize) -> CodeCheck<'a> {
        CodeCheck {
            needs_check,
            len,
            pieces: Vec::new(),
            ok: false,
            frame_size: &|_| None,
        }
    }

    /// The same check, knowing the frame sizes `frame_size` gives.
    pub fn with_frame_sizes(self, frame_size: &'a dyn Fn(u64) -> Option<u64>) -> CodeCheck<'a> {
        CodeCheck { frame_size, ..self }
    }

    /// Chooses the code objects of `reads`' stacks to check (with empty
    /// buffers); returns every distinct code address of the stacks.
    fn select(&mut self, reads: &[ThreadRead]) -> Vec<u64> {
        // Distinct addresses first, then the (hash lookup) filter: a deep
        // recursion is 1,000 frames of one code object.
        let mut addresses: Vec<u64> = reads
            .iter()
            .flat_map(|r| r.walk.frames.iter().map(|f| f.code_address))
            .collect();
        // Runs of one code object (recursion) first: sorting 1,000
        // addresses per sample showed in profiles.
        addresses.dedup();
        addresses.sort_unstable();
        addresses.dedup();
        self.pieces = addresses
            .iter()
            .filter(|a| (self.needs_check)(**a))
            .map(|&a| (a, Vec::new()))
            .collect();
        addresses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_outside_the_chunks_is_kept_from_its_lowest_frame_with_room_and_a_chunk_from_its_start(
    ) {
        let mut source = FrameSource::new();
        // The chunk, and an 8 KiB window read below a frame on the C stack.
        source.add_window(0x10000, vec![0u8; 4096]);
        source.add_chunk(0x10000);
        source.add_window(0x7000_0000, vec![0u8; 8192]);
        let walk = Walk {
            // Innermost first: two frames in the chunk, then the entry
            // frame near the top of the C-stack window and one below it.
            visited: vec![0x10400, 0x10100, 0x7000_1f00, 0x7000_1e00],
            header_len: 72,
            ..Walk::default()
        };
        let used = used_windows(&mut source, &walk);
        let spans: Vec<(u64, u64, bool)> = used
            .iter()
            .map(|u| (u.address, u.end, u.is_chunk))
            .collect();
        assert_eq!(
            spans,
            [
                // With room for the frame's value stack above its header
                // (STACK_ROOM), as far as the copy went.
                (
                    0x7000_1e00,
                    (0x7000_1f00 + 72 + STACK_ROOM).min(0x7000_2000),
                    false
                ),
                (0x10000, 0x10400 + 72, true),
            ]
        );
    }
}
