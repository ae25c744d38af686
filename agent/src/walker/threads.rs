//! Interpreters and their threads: the outer loop of a sample.

use std::collections::HashSet;

use super::frames::{walk_frame_objects, walk_interpreter_frames, FrameSource, Walk};
use super::{ThreadSample, WalkError, WalkOptions};
use crate::cpython::{FrameKind, Layout};
use crate::memory::{field_u64, read_u64, RemoteMemory};

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

struct ThreadRead {
    sample: ThreadSample,
    /// Address of the pointer to the current frame (in the thread state on
    /// 3.13+ and 3.9/3.10, in the C-stack `_PyCFrame` on 3.11/3.12).
    frame_pointer_at: u64,
    current_frame: u64,
    chunk: u64,
    walk: Walk,
    /// The data-stack windows the walk was served from (3.11+).
    source: FrameSource,
}

/// The interpreter and thread lists of the previous sample. A sample first
/// re-reads them all in one batch and checks every link still holds; only
/// if one changed are the lists followed again, one read per link.
#[derive(Debug, Clone, Default)]
pub struct ThreadListCache {
    interpreters: Vec<InterpreterThreads>,
}

struct StateReads {
    states: Vec<(u32, u64, Vec<u8>)>,
    gils: Vec<Vec<u8>>,
    consistent: bool,
}

/// Reads the runtime's interpreter-list head, every interpreter's header,
/// every thread state and every GIL in one batch, and checks the links
/// against `interpreters` (main interpreter first).
fn read_states(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    interpreters: &[InterpreterThreads],
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
    {
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
        memory.read_many(&mut pieces)?;
    }
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

/// Reads every thread of every interpreter into `out` (cleared first).
///
/// `cache` carries the thread lists from one sample to the next; `code_check`
/// names code objects whose fingerprint (`code_check_len` bytes) should be
/// re-read in the sample's last batch, and receives those bytes.
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
    // batch when the lists did not change since the last sample.
    let mut batch = read_states(memory, layout, runtime_address, &cache.interpreters);
    if !matches!(&batch, Ok(b) if b.consistent) {
        cache.interpreters = list_threads(memory, layout, runtime_address, options)?;
        batch = read_states(memory, layout, runtime_address, &cache.interpreters);
    }
    let StateReads { states, gils, .. } = batch?;
    let interpreters = &cache.interpreters;
    let gil_holder = |index: u32| -> Option<u64> {
        let position = interpreters.iter().position(|i| i.index == index)?;
        let buf = &gils[position];
        let locked = field_u64(buf, o.gil_locked?) as u32;
        let holder = field_u64(buf, o.gil_last_holder?);
        (locked != 0).then_some(holder)
    };
    for (interpreter, address, state) in &states {
        let frame_pointer_at = match (o.thread_current_frame.or(o.thread_frame), o.thread_cframe) {
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
        let direct = o.thread_current_frame.or(o.thread_frame);
        reads.push(ThreadRead {
            sample,
            frame_pointer_at,
            current_frame: direct.map_or(0, |at| field_u64(state, at)),
            chunk: o
                .thread_datastack_chunk
                .map_or(0, |at| field_u64(state, at)),
            walk: Walk::default(),
            source: FrameSource::new(),
        });
    }

    // Phase 2 (3.11/3.12): the current frame lives in the C-stack _PyCFrame.
    if o.thread_current_frame.or(o.thread_frame).is_none() {
        let mut values = vec![[0u8; 8]; reads.len()];
        let mut pieces: Vec<(u64, &mut [u8])> = reads
            .iter()
            .zip(values.iter_mut())
            .filter(|(r, _)| r.frame_pointer_at >= 8)
            .map(|(r, v)| (r.frame_pointer_at, &mut v[..]))
            .collect();
        if memory.read_many(&mut pieces).is_err() {
            // One unreadable cframe (a thread exiting) must not cost the
            // others their sample: read them one by one.
            for (read, value) in reads.iter().zip(values.iter_mut()) {
                if read.frame_pointer_at < 8 || memory.read(read.frame_pointer_at, value).is_err() {
                    *value = [0; 8];
                }
            }
        }
        for (read, value) in reads.iter_mut().zip(values) {
            read.current_frame = u64::from_le_bytes(value);
        }
    }

    // Phase 3: walk. On 3.11+ each thread's data stack is first copied in
    // one batch, from its chunk's start up to its innermost frame.
    match layout.semantics.frame_kind {
        FrameKind::FrameObject => {
            for read in &mut reads {
                read.walk = walk_frame_objects(memory, layout, read.current_frame, options);
            }
        }
        FrameKind::InterpreterFrame => {
            let frame_size = o.interpreter_frame_size.unwrap_or(0);
            let mut sources: Vec<FrameSource> = Vec::with_capacity(reads.len());
            let mut windows: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut owners: Vec<usize> = Vec::new();
            for (i, read) in reads.iter().enumerate() {
                let mut source = FrameSource::with_chunk_layout(o.stack_chunk_previous);
                source.add_chunk(read.chunk);
                sources.push(source);
                let frame = read.current_frame;
                if frame == 0 || read.chunk == 0 || frame < read.chunk {
                    continue;
                }
                let end = frame.saturating_add(frame_size);
                if end - read.chunk <= 1 << 20 {
                    windows.push((read.chunk, vec![0u8; (end - read.chunk) as usize]));
                    owners.push(i);
                }
            }
            let batch_ok = {
                let mut pieces: Vec<(u64, &mut [u8])> =
                    windows.iter_mut().map(|(a, b)| (*a, &mut b[..])).collect();
                memory.read_many(&mut pieces).is_ok()
            };
            if batch_ok {
                for ((address, bytes), owner) in windows.into_iter().zip(owners) {
                    sources[owner].add_window(address, bytes);
                }
            }
            for (read, mut source) in reads.iter_mut().zip(sources) {
                read.walk = walk_interpreter_frames(
                    memory,
                    layout,
                    read.current_frame,
                    &mut source,
                    options,
                );
                read.source = source;
            }
        }
    }

    // Phase 4: did any stack change while it was read? Re-read, in one
    // batch, each thread's current-frame pointer and every frame header
    // the walk used. The innermost frame's instruction moves on while it
    // runs, but its code and caller may not change, and no caller's frame
    // may change at all while its callee runs: if everything compares
    // equal, the stack read was one the program really had.
    if options.check_torn {
        // Frames served from a data-stack window are re-read by re-reading
        // the window (one iovec); others one header each.
        struct Reread {
            pointer: [u8; 8],
            windows: Vec<(u64, Vec<u8>)>,
            headers: Vec<Option<Vec<u8>>>,
        }
        let mut rereads: Vec<Reread> = reads
            .iter()
            .map(|r| Reread {
                pointer: [0; 8],
                windows: r
                    .source
                    .windows()
                    .iter()
                    .map(|(a, b)| (*a, vec![0u8; b.len()]))
                    .collect(),
                headers: r
                    .walk
                    .visited
                    .iter()
                    .map(|(a, h)| {
                        let len = h.as_slice().len();
                        r.source
                            .find(*a, len as u64)
                            .is_none()
                            .then(|| vec![0u8; len])
                    })
                    .collect(),
            })
            .collect();
        let mut pieces: Vec<(u64, &mut [u8])> = Vec::new();
        for (read, reread) in reads.iter().zip(rereads.iter_mut()) {
            if read.frame_pointer_at >= 8 {
                pieces.push((read.frame_pointer_at, &mut reread.pointer[..]));
            }
            for (address, buf) in reread.windows.iter_mut() {
                pieces.push((*address, &mut buf[..]));
            }
            for ((address, _), buf) in read.walk.visited.iter().zip(reread.headers.iter_mut()) {
                if let Some(buf) = buf {
                    pieces.push((*address, &mut buf[..]));
                }
            }
        }
        code_check.select(&reads);
        for (address, buf) in code_check.pieces.iter_mut() {
            pieces.push((*address, &mut buf[..]));
        }
        let reread_ok = memory.read_many(&mut pieces).is_ok();
        code_check.ok = reread_ok;
        for (read, reread) in reads.iter_mut().zip(rereads) {
            let frame_moved = read.frame_pointer_at >= 8
                && u64::from_le_bytes(reread.pointer) != read.current_frame;
            let mut after = FrameSource::new();
            for (address, bytes) in reread.windows {
                after.add_window(address, bytes);
            }
            let changed = read
                .walk
                .visited
                .iter()
                .zip(&reread.headers)
                .enumerate()
                .any(|(i, ((address, before), own))| {
                    let now = match own {
                        Some(bytes) => Some(&bytes[..]),
                        None => after.find(*address, before.as_slice().len() as u64),
                    };
                    now.is_none_or(|now| !same_frame(layout, before.as_slice(), now, i == 0))
                });
            read.sample.torn = !reread_ok || frame_moved || changed || read.walk.broken;
        }
    }

    if !options.check_torn {
        code_check.select(&reads);
        let mut pieces: Vec<(u64, &mut [u8])> = code_check
            .pieces
            .iter_mut()
            .map(|(a, b)| (*a, &mut b[..]))
            .collect();
        code_check.ok = pieces.is_empty() || memory.read_many(&mut pieces).is_ok();
    }

    for read in reads {
        let mut sample = read.sample;
        sample.truncated = read.walk.truncated || (read.walk.broken && !options.check_torn);
        sample.frames = read.walk.frames;
        out.push(sample);
    }
    Ok(())
}

/// Code objects to re-check in a sample's last batch read.
pub struct CodeCheck<'a> {
    /// Which code addresses need checking.
    pub needs_check: &'a dyn Fn(u64) -> bool,
    /// Bytes to read of each.
    pub len: usize,
    /// The addresses chosen and the bytes read.
    pub pieces: Vec<(u64, Vec<u8>)>,
    /// True if the batch holding them was read.
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

    fn select(&mut self, reads: &[ThreadRead]) {
        // Distinct addresses first, then the (hash lookup) filter: a deep
        // recursion is 1,000 frames of one code object.
        let mut addresses: Vec<u64> = reads
            .iter()
            .flat_map(|r| r.walk.frames.iter().map(|f| f.code_address))
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses.retain(|a| (self.needs_check)(*a));
        self.pieces = addresses
            .into_iter()
            .map(|a| (a, vec![0u8; self.len]))
            .collect();
    }
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
