//! Interpreters and their threads: the outer loop of a sample.

use std::collections::HashSet;

use super::frames::{walk_frame_objects, walk_interpreter_frames, FrameSource, Walk};
use super::prefetch::{ThreadPrefetch, Used};
use super::torn::{reaches, Reread};
use super::{ThreadSample, WalkError, WalkOptions};
use crate::cpython::{FrameKind, Layout};
use crate::memory::{field_u64, read_u64, MemoryError, RemoteMemory, MAX_READ};

/// Most interpreters followed in the runtime's list.
const MAX_INTERPRETERS: usize = 256;

/// The thread states of one interpreter, as found in the runtime's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpreterThreads {
    /// Address of the `PyInterpreterState`.
    pub address: u64,
    /// Index in sampling order: 0 is the main interpreter (the list's last).
    pub index: u32,
    /// Addresses of its `PyThreadState`s, newest first.
    pub threads: Vec<u64>,
    /// Address of its GIL state (`_gil_runtime_state`), 0 if unknown.
    pub gil: u64,
}

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
    /// How many of `source`'s windows came from the first batch.
    pub first_batch_windows: usize,
    /// The current-frame pointer read again at the end of the first batch.
    pub pointer_after: Option<u64>,
}

/// The interpreter and thread lists of the previous sample, and what each
/// thread's walk read. A sample first re-reads the lists in one batch and
/// checks every link still holds; only if one changed are the lists
/// followed again, one read per link. The same batch re-reads each
/// thread's current-frame pointer and data-stack windows where they were
/// last time (see `prefetch.rs`).
#[derive(Debug, Clone, Default)]
pub struct ThreadListCache {
    interpreters: Vec<InterpreterThreads>,
    prefetch: Vec<ThreadPrefetch>,
    /// The code objects the last sample's stacks referenced.
    codes: Vec<u64>,
    /// Window buffers of the last sample, reused (allocating and zeroing
    /// ~10 KB per sample showed in profiles).
    spare: Vec<Vec<u8>>,
}

struct StateReads {
    states: Vec<(u32, u64, Vec<u8>)>,
    gils: Vec<Vec<u8>>,
    consistent: bool,
    /// How many of the extra pieces were read.
    extra_done: usize,
}

/// Reads the runtime's interpreter-list head, every interpreter's header,
/// every thread state and every GIL in one batch, and checks the links
/// against `interpreters` (main interpreter first). The `extra` pieces go
/// last in the same batch, read as far as they can be.
fn read_states(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    interpreters: &[InterpreterThreads],
    extra: &mut [(u64, Vec<u8>)],
) -> Result<StateReads, WalkError> {
    let o = &layout.offsets;
    let thread_len = [
        o.thread_next,
        o.thread_thread_id,
        o.thread_native_thread_id,
        o.thread_frame,
        o.thread_cframe,
        o.thread_current_frame,
        o.thread_datastack_chunk,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
        + 8;
    let interp_len = interpreter_len(layout);
    let gil_len = o.gil_locked.max(o.gil_last_holder).unwrap_or(0) + 8;
    let mut head = [0u8; 8];
    let mut headers: Vec<Vec<u8>> = vec![vec![0u8; interp_len as usize]; interpreters.len()];
    let mut states: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    let mut gils: Vec<Vec<u8>> = Vec::new();
    for interpreter in interpreters {
        for &thread in &interpreter.threads {
            states.push((interpreter.index, thread, vec![0u8; thread_len as usize]));
        }
        let len = if interpreter.gil != 0 { gil_len } else { 0 };
        gils.push(vec![0u8; len as usize]);
    }
    let extra_done = {
        let mut pieces: Vec<(u64, &mut [u8])> = Vec::new();
        if let Some(at) = o.runtime_interpreters_head {
            pieces.push((runtime_address.wrapping_add(at), &mut head[..]));
        }
        for (interpreter, header) in interpreters.iter().zip(headers.iter_mut()) {
            pieces.push((interpreter.address, &mut header[..]));
        }
        for (_, address, buf) in states.iter_mut() {
            pieces.push((*address, &mut buf[..]));
        }
        for (interpreter, buf) in interpreters.iter().zip(gils.iter_mut()) {
            if !buf.is_empty() {
                pieces.push((interpreter.gil, &mut buf[..]));
            }
        }
        let required = pieces.len();
        for (address, buf) in extra.iter_mut() {
            pieces.push((*address, &mut buf[..]));
        }
        let done = memory.read_prefix(&mut pieces)?;
        if done < required {
            let (address, buf) = &pieces[done];
            return Err(MemoryError::Unreadable {
                address: *address,
                len: buf.len(),
            }
            .into());
        }
        done - required
    };
    // Check every link: head -> newest interpreter -> ... -> main; each
    // interpreter's threads_head -> its threads -> 0; the GIL pointer.
    let mut consistent = !interpreters.is_empty()
        && u64::from_le_bytes(head) == interpreters.last().map_or(0, |i| i.address);
    let mut state_index = 0;
    for (position, (interpreter, header)) in interpreters.iter().zip(&headers).enumerate() {
        let next_expected = if position == 0 {
            0
        } else {
            interpreters[position - 1].address
        };
        let next = o.interpreter_next.map_or(0, |at| field_u64(header, at));
        let first = o
            .interpreter_threads_head
            .map_or(0, |at| field_u64(header, at));
        consistent &= next == next_expected;
        consistent &= first == interpreter.threads.first().copied().unwrap_or(0);
        if let Some(at) = o.interpreter_ceval_gil {
            consistent &= field_u64(header, at) == interpreter.gil;
        }
        for j in 0..interpreter.threads.len() {
            let (_, _, state) = &states[state_index];
            let next = o.thread_next.map_or(0, |at| field_u64(state, at));
            consistent &= next == interpreter.threads.get(j + 1).copied().unwrap_or(0);
            state_index += 1;
        }
    }
    Ok(StateReads {
        states,
        gils,
        consistent,
        extra_done,
    })
}

fn interpreter_len(layout: &Layout) -> u64 {
    let o = &layout.offsets;
    [
        o.interpreter_next,
        o.interpreter_threads_head,
        o.interpreter_ceval_gil,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
        + 8
}

/// A piece of the first batch read for a thread's prefetch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefetched {
    /// The current-frame pointer at this address (3.11/3.12, before the
    /// windows: where the walk starts).
    Pointer(u64),
    /// A data-stack window at this address.
    Window(u64),
    /// The current-frame pointer at this address, after the windows: if
    /// it still names the frame the walk started from, the windows were
    /// read while that frame and so all its callers stayed on the stack.
    PointerAfter(u64),
    /// The fingerprint of the code object at this address.
    Code(u64),
}

/// Copies of target memory: (address, bytes).
type Copies = Vec<(u64, Vec<u8>)>;

/// The prefetch pieces of every cached thread, each with its owner (thread
/// state address; 0 for code objects): the 3.11/3.12 pointers (`cframe`),
/// then the windows, most recently used first (see `prefetch.rs`), then
/// every pointer again and the code objects to check.
fn prefetch_pieces(
    cache: &mut ThreadListCache,
    cframe: bool,
    code_check: &CodeCheck<'_>,
) -> (Vec<(u64, Prefetched)>, Copies) {
    let mut owners = Vec::new();
    let mut pieces = Vec::new();
    for thread in &cache.prefetch {
        if cframe && thread.frame_pointer_at >= 8 {
            owners.push((
                thread.thread_state,
                Prefetched::Pointer(thread.frame_pointer_at),
            ));
            pieces.push((thread.frame_pointer_at, vec![0u8; 8]));
        }
    }
    let mut windows: Vec<(u32, u64, u64, u64)> = cache
        .prefetch
        .iter()
        .flat_map(|t| {
            t.windows
                .iter()
                .map(|w| (w.age, t.thread_state, w.address, w.len))
        })
        .collect();
    windows.sort_by_key(|w| w.0);
    for (_, thread_state, address, len) in windows {
        if len as usize <= MAX_READ {
            owners.push((thread_state, Prefetched::Window(address)));
            let mut buffer = cache.spare.pop().unwrap_or_default();
            // Stale bytes are fine: a piece is used only if it was read.
            buffer.resize(len as usize, 0);
            pieces.push((address, buffer));
        }
    }
    for thread in &cache.prefetch {
        if thread.frame_pointer_at >= 8 {
            owners.push((
                thread.thread_state,
                Prefetched::PointerAfter(thread.frame_pointer_at),
            ));
            pieces.push((thread.frame_pointer_at, vec![0u8; 8]));
        }
    }
    for &code in &cache.codes {
        if (code_check.needs_check)(code) {
            owners.push((0, Prefetched::Code(code)));
            pieces.push((code, vec![0u8; code_check.len]));
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
pub fn sample_interpreters(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    options: &WalkOptions,
    cache: &mut ThreadListCache,
    code_check: &mut CodeCheck<'_>,
    out: &mut Vec<ThreadSample>,
) -> Result<(), WalkError> {
    out.clear();
    let o = &layout.offsets;
    let mut reads: Vec<ThreadRead> = Vec::new();

    // Phase 1: the thread states and the GIL of each interpreter, in one
    // batch when the lists did not change since the last sample, and in
    // the same batch each thread's current-frame pointer and data-stack
    // windows where they were last time.
    let direct = o.thread_current_frame.or(o.thread_frame);
    let (mut owners, mut extra) = prefetch_pieces(cache, direct.is_none(), code_check);
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
        extra_done,
        ..
    } = batch?;
    // The prefetched pieces, by owner: read, failed (the first that could
    // not be read: its memory is gone) or not reached.
    let failed: Option<(u64, Prefetched)> = owners.get(extra_done).copied();
    let not_reached: Vec<(u64, Prefetched, u64)> = owners
        .iter()
        .zip(&extra)
        .skip(extra_done + 1)
        .map(|((owner, what), (_, bytes))| (*owner, *what, bytes.len() as u64))
        .collect();
    owners.truncate(extra_done);
    extra.truncate(extra_done);
    let mut prefetched: Vec<(u64, Prefetched, Vec<u8>)> = owners
        .into_iter()
        .zip(extra)
        .map(|((owner, what), (_, bytes))| (owner, what, bytes))
        .collect();

    let interpreters = &cache.interpreters;
    let gil_holder = |index: u32| -> Option<u64> {
        let position = interpreters.iter().position(|i| i.index == index)?;
        let buf = &gils[position];
        let locked = field_u64(buf, o.gil_locked?) as u32;
        let holder = field_u64(buf, o.gil_last_holder?);
        (locked != 0).then_some(holder)
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
        let frame_pointer_at = match (direct, o.thread_cframe) {
            (Some(at), _) => address.wrapping_add(at),
            (None, Some(cframe_at)) => {
                field_u64(state, cframe_at).wrapping_add(o.cframe_current_frame.unwrap_or(0))
            }
            (None, None) => 0,
        };
        let sample = ThreadSample {
            thread_id: o.thread_thread_id.map_or(0, |at| field_u64(state, at)),
            native_id: o
                .thread_native_thread_id
                .map_or(0, |at| field_u64(state, at)),
            interpreter: *interpreter,
            holds_gil: gil_holder(*interpreter) == Some(*address),
            thread_state: *address,
            ..ThreadSample::default()
        };
        let mut current_frame = direct.map_or(0, |at| field_u64(state, at));
        if direct.is_none() && frame_pointer_at >= 8 {
            match prefetched.iter().find(|(owner, what, _)| {
                *owner == *address && *what == Prefetched::Pointer(frame_pointer_at)
            }) {
                Some((_, _, bytes)) => current_frame = field_u64(bytes, 0),
                None => missing.push(reads.len()),
            }
        }
        let mut source = FrameSource::with_chunk_layout(o.stack_chunk_previous);
        // This thread's prefetched windows move into its source.
        let mut index = 0;
        while index < prefetched.len() {
            if prefetched[index].0 == *address
                && matches!(prefetched[index].1, Prefetched::Window(_))
            {
                let (_, what, bytes) = prefetched.swap_remove(index);
                if let Prefetched::Window(start) = what {
                    source.add_window(start, bytes);
                }
            } else {
                index += 1;
            }
        }
        let chunk = o
            .thread_datastack_chunk
            .map_or(0, |at| field_u64(state, at));
        source.add_chunk(chunk);
        let pointer_after = prefetched
            .iter()
            .find(|(owner, what, _)| {
                *owner == *address && *what == Prefetched::PointerAfter(frame_pointer_at)
            })
            .map(|(_, _, bytes)| field_u64(bytes, 0));
        reads.push(ThreadRead {
            sample,
            frame_pointer_at,
            current_frame,
            chunk,
            walk: Walk::default(),
            first_batch_windows: source.windows().len(),
            source,
            pointer_after,
        });
    }

    // Phase 2 (3.11/3.12): the current frame lives in the C-stack
    // _PyCFrame; read here only where the prefetch missed (a new thread,
    // or a thread that entered or left a C call since the last sample).
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
            // Read after the first batch: its later pointer proves nothing.
            reads[i].pointer_after = None;
        }
    }

    // Phase 3: walk. On 3.11+ each thread's data stack is copied from its
    // chunk's start up to its innermost frame, in one batch for the
    // threads the prefetch did not cover (with the prefetch pieces the
    // first batch did not reach, as far as they read).
    match layout.semantics.frame_kind {
        FrameKind::FrameObject => {
            for read in &mut reads {
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
            let frame_size = o.interpreter_frame_size.unwrap_or(0);
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
            if !windows.is_empty() {
                let required = windows.len();
                for (owner, what, len) in &not_reached {
                    let Prefetched::Window(start) = *what else {
                        continue;
                    };
                    if let Some(i) = reads.iter().position(|r| r.sample.thread_state == *owner) {
                        windows.push((start, vec![0u8; *len as usize]));
                        window_owners.push(i);
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
                for ((address, bytes), owner) in windows.into_iter().zip(window_owners).take(keep) {
                    reads[owner].source.add_window(address, bytes);
                }
            }
            for read in &mut reads {
                read.walk = walk_interpreter_frames(
                    memory,
                    layout,
                    read.current_frame,
                    &mut read.source,
                    options,
                );
            }
        }
    }

    // Phase 4: was each stack one the program really had? See torn.rs.
    // A stack read entirely in the first batch, whose innermost frame the
    // pointer read after the windows still names, needs no re-read; the
    // others are re-read in one last batch, with the code objects whose
    // fingerprints the first batch did not hold.
    let codes = code_check.select(&reads);
    let mut from_first_batch: Vec<u64> = Vec::new();
    for (address, bytes) in code_check.pieces.iter_mut() {
        if let Some((_, read)) = first_batch_codes.iter_mut().find(|(a, _)| a == address) {
            *bytes = std::mem::take(read);
            from_first_batch.push(*address);
        }
    }
    let mut rereads: Vec<Option<Reread>> = Vec::with_capacity(reads.len());
    for read in &mut reads {
        let bracketed = layout.semantics.frame_kind == FrameKind::InterpreterFrame
            && read.source.windows().len() == read.first_batch_windows;
        rereads.push(match read.pointer_after {
            _ if !options.check_torn => None,
            Some(after) if bracketed => {
                read.sample.torn = read.walk.broken
                    || (after != read.current_frame
                        && !reaches(
                            layout,
                            &mut read.source,
                            after,
                            read.current_frame,
                            read.walk.header_len,
                        ));
                None
            }
            _ => Some(Reread::plan(read)),
        });
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
            read.sample.torn = !last_ok || read.walk.broken || reread.torn(layout, read);
        }
    }
    if !last_ok {
        // Only the fingerprints the first batch read are known.
        code_check
            .pieces
            .retain(|(address, _)| from_first_batch.contains(address));
    }
    code_check.ok = true;
    cache.codes = codes;

    // Remember where each thread's walk read, for the next sample.
    let failed_window = match failed {
        Some((owner, Prefetched::Window(address))) => Some((owner, address)),
        _ => None,
    };
    let mut next: Vec<ThreadPrefetch> = Vec::with_capacity(reads.len());
    for read in &mut reads {
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
        next.push(prefetch);
    }
    cache.prefetch = next;
    cache.spare.clear();
    for read in &mut reads {
        cache.spare.extend(read.source.take_windows());
    }

    for read in reads {
        let mut sample = read.sample;
        sample.truncated = read.walk.truncated || (read.walk.broken && !options.check_torn);
        sample.frames = read.walk.frames;
        out.push(sample);
    }
    Ok(())
}

/// The windows of `source` the walk read frames from, outermost first,
/// each with the end of the last frame header read in it.
fn used_windows(source: &mut FrameSource, walk: &Walk) -> Vec<Used> {
    let mut used: Vec<Used> = Vec::new();
    for &address in walk.visited.iter().rev() {
        let Some(index) = source.locate(address, walk.header_len) else {
            continue;
        };
        let start = source.windows()[index].0;
        let end = address + walk.header_len;
        match used.iter_mut().find(|u| u.address == start) {
            Some(u) => u.end = u.end.max(end),
            None => used.push(Used {
                address: start,
                end,
                is_chunk: source.is_chunk(start),
            }),
        }
    }
    used
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
}

impl<'a> CodeCheck<'a> {
    /// A check of the code objects `needs_check` accepts.
    pub fn new(needs_check: &'a dyn Fn(u64) -> bool, len: usize) -> CodeCheck<'a> {
        CodeCheck {
            needs_check,
            len,
            pieces: Vec::new(),
            ok: false,
        }
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

/// Follows the runtime's interpreter list and each interpreter's thread
/// list (newest first, as CPython links them).
pub fn list_threads(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    options: &WalkOptions,
) -> Result<Vec<InterpreterThreads>, WalkError> {
    let o = &layout.offsets;
    let head_at = o
        .runtime_interpreters_head
        .ok_or(WalkError::NoInterpreter)?;
    let next_at = o.interpreter_next.ok_or(WalkError::NoInterpreter)?;
    let threads_at = o.interpreter_threads_head.ok_or(WalkError::NoInterpreter)?;
    let thread_next_at = o.thread_next.ok_or(WalkError::NoInterpreter)?;
    let gil_pointer_at = o.interpreter_ceval_gil;
    let interp_len = interpreter_len(layout);
    let mut address = read_u64(memory, runtime_address + head_at)?;
    if address == 0 {
        return Err(WalkError::NoInterpreter);
    }
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    while address != 0 && found.len() < MAX_INTERPRETERS && seen.insert(address) {
        let mut header = vec![0u8; interp_len as usize];
        memory.read(address, &mut header)?;
        let gil = match (gil_pointer_at, o.runtime_gil) {
            (Some(at), _) => field_u64(&header, at),
            (None, Some(at)) => runtime_address + at,
            (None, None) => 0,
        };
        let mut threads = Vec::new();
        let mut thread = field_u64(&header, threads_at);
        let mut seen_threads = HashSet::new();
        while thread != 0 && threads.len() < options.max_threads && seen_threads.insert(thread) {
            threads.push(thread);
            thread = read_u64(memory, thread.wrapping_add(thread_next_at))?;
        }
        found.push(InterpreterThreads {
            address,
            index: 0,
            threads,
            gil,
        });
        address = field_u64(&header, next_at);
    }
    // The list is newest first; the main interpreter is the last.
    let count = found.len() as u32;
    for (i, interpreter) in found.iter_mut().enumerate() {
        interpreter.index = count - 1 - i as u32;
    }
    found.reverse();
    Ok(found)
}
