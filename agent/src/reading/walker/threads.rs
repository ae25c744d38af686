//! Interpreters and their threads: the runtime's lists, followed once and
//! then re-checked in each sample's first batch.

use std::collections::HashSet;

use super::prefetch::ThreadPrefetch;
use super::{WalkError, WalkOptions};
use crate::process::memory::{field_u32, field_u64, read_u64, MemoryError, RemoteMemory};
use crate::reading::cpython::Layout;

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

/// The interpreter and thread lists of the previous sample, and what each
/// thread's walk read. A sample first re-reads the lists in one batch and
/// checks every link still holds; only if one changed are the lists
/// followed again, one read per link. The same batch re-reads each
/// thread's current-frame pointer and data-stack windows where they were
/// last time (see `prefetch.rs`).
#[derive(Debug, Clone, Default)]
pub struct ThreadListCache {
    pub(super) interpreters: Vec<InterpreterThreads>,
    pub(super) prefetch: Vec<ThreadPrefetch>,
    /// The code objects the last sample's stacks referenced.
    pub(super) codes: Vec<u64>,
    /// Window buffers of the last sample, reused (allocating and zeroing
    /// ~10 KB per sample showed in profiles).
    pub(super) spare: Vec<Vec<u8>>,
    /// The frame vectors of the samples the caller handed back (the
    /// `out` of the last read), filled again with the next sample's
    /// stacks, so no frame vector is allocated per tick. (The recording's
    /// sampler keeps each thread's last stack sent and gives back the one
    /// before: two vectors a thread, warm in its cache; when whole samples
    /// travelled to the sink, a fresh vector for each kept a few hundred
    /// chunks scattered in the heap, ~0.7 us a tick of `malloc` and `free`
    /// at depth 30, notes/benchmarks.md.)
    pub(super) spare_frames: Vec<Vec<crate::FrameSample>>,
}

/// What the first batch read: each thread state (interpreter index,
/// address, bytes), each interpreter's GIL state, whether every link of the
/// lists still held, and how many of the extra pieces were read.
pub(super) struct StateReads {
    pub states: Vec<(u32, u64, Vec<u8>)>,
    pub gils: Vec<Vec<u8>>,
    /// Per interpreter (in `interpreters`' order): its collector was
    /// running (`gcstate->collecting`), read in the same batch.
    pub collecting: Vec<bool>,
    pub consistent: bool,
    pub extra_done: usize,
}

/// Reads the runtime's interpreter-list head, every interpreter's header,
/// every thread state and every GIL in one batch, and checks the links
/// against `interpreters` (main interpreter first). The `extra` pieces go
/// last in the same batch, read as far as they can be.
pub(super) fn read_states(
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
    let gil_len = o
        .gil_locked
        .max(o.gil_last_holder)
        .max(o.gil_enabled)
        .unwrap_or(0)
        + 8;
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
        let spans = interpreter_spans(layout);
        for (interpreter, header) in interpreters.iter().zip(headers.iter_mut()) {
            let mut rest: &mut [u8] = &mut header[..];
            let mut consumed = 0;
            for &(from, to) in &spans {
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(from - consumed);
                let (piece, tail) = tail.split_at_mut(to - from);
                pieces.push((interpreter.address.wrapping_add(from as u64), piece));
                rest = tail;
                consumed = to;
            }
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
    let mut collecting = Vec::with_capacity(interpreters.len());
    for (position, (interpreter, header)) in interpreters.iter().zip(&headers).enumerate() {
        let next_expected = if position == 0 {
            0
        } else {
            interpreters[position - 1].address
        };
        let next = field_u64(header, layout.core.interpreter_next);
        let first = field_u64(header, layout.core.interpreter_threads_head);
        consistent &= next == next_expected;
        consistent &= first == interpreter.threads.first().copied().unwrap_or(0);
        if let Some(at) = o.interpreter_ceval_gil {
            consistent &= field_u64(header, at) == interpreter.gil;
        }
        collecting.push(gc_collecting_at(layout).is_some_and(|at| field_u32(header, at) != 0));
        for j in 0..interpreter.threads.len() {
            let (_, _, state) = &states[state_index];
            let next = field_u64(state, layout.core.thread_next);
            consistent &= next == interpreter.threads.get(j + 1).copied().unwrap_or(0);
            state_index += 1;
        }
    }
    Ok(StateReads {
        states,
        gils,
        collecting,
        consistent,
        extra_done,
    })
}

/// The ranges of an interpreter's header a sample reads, as (start, end)
/// offsets, ascending: its fields, grouped where they lie within
/// [`FIELD_GAP`] of each other. On 3.13 `ceval.gil` lies ~7 KiB past
/// `next` and `threads.head`: one range over all three was 3 pages copied
/// per sample for 24 bytes used.
fn interpreter_spans(layout: &Layout) -> Vec<(usize, usize)> {
    let o = &layout.offsets;
    let mut fields: Vec<usize> = [
        o.interpreter_next,
        o.interpreter_threads_head,
        o.interpreter_ceval_gil,
        gc_collecting_at(layout),
    ]
    .into_iter()
    .flatten()
    .map(|at| at as usize)
    .collect();
    fields.sort_unstable();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for at in fields {
        match spans.last_mut() {
            Some((_, end)) if at <= *end + FIELD_GAP => *end = (*end).max(at + 8),
            _ => spans.push((at, at + 8)),
        }
    }
    spans
}

/// Fields of an interpreter's header closer than this are read as one
/// range (a second piece costs more than copying a few hundred bytes).
const FIELD_GAP: usize = 512;

fn interpreter_len(layout: &Layout) -> u64 {
    let o = &layout.offsets;
    [
        o.interpreter_next,
        o.interpreter_threads_head,
        o.interpreter_ceval_gil,
        gc_collecting_at(layout),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
        + 8
}

/// Offset in `PyInterpreterState` of `gc.collecting` (`int`, set while a
/// collection runs: Python/gc.c `gc_collect_main`, 3.13+ `_PyGC_Collect`),
/// if the layout knows both fields. Read with the interpreter's header in
/// each sample's first batch: no call of its own.
fn gc_collecting_at(layout: &Layout) -> Option<u64> {
    let o = &layout.offsets;
    o.interpreter_gc?.checked_add(o.gc_state_collecting?)
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
    let c = &layout.core;
    let (head_at, next_at) = (c.runtime_interpreters_head, c.interpreter_next);
    let (threads_at, thread_next_at) = (c.interpreter_threads_head, c.thread_next);
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
