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
}

/// Reads every thread of every interpreter into `out` (cleared first).
pub fn sample_interpreters(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    runtime_address: u64,
    options: &WalkOptions,
    out: &mut Vec<ThreadSample>,
) -> Result<(), WalkError> {
    out.clear();
    let interpreters = list_threads(memory, layout, runtime_address, options)?;
    let o = &layout.offsets;
    let mut reads: Vec<ThreadRead> = Vec::new();

    // Phase 1: the thread states, and the GIL of each interpreter.
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
    let gil_len = o.gil_locked.max(o.gil_last_holder).unwrap_or(0) + 8;
    let mut states: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    let mut gils: Vec<Vec<u8>> = Vec::new();
    {
        for interpreter in &interpreters {
            for &thread in &interpreter.threads {
                states.push((interpreter.index, thread, vec![0u8; thread_len as usize]));
            }
            gils.push(vec![
                0u8;
                if interpreter.gil != 0 {
                    gil_len as usize
                } else {
                    0
                }
            ]);
        }
        let mut pieces: Vec<(u64, &mut [u8])> = Vec::new();
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
    let gil_holder = |index: u32| -> Option<u64> {
        let position = interpreters.iter().position(|i| i.index == index)?;
        let buf = &gils[position];
        let locked = field_u64(buf, o.gil_locked?) as u32;
        let holder = field_u64(buf, o.gil_last_holder?);
        (locked != 0).then_some(holder)
    };
    for (interpreter, address, state) in &states {
        let frame_pointer_at = match (o.thread_current_frame.or(o.thread_frame), o.thread_cframe) {
            (Some(at), _) => address + at,
            (None, Some(cframe_at)) => {
                field_u64(state, cframe_at) + o.cframe_current_frame.unwrap_or(0)
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
                sources.push(FrameSource::new());
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
            for (read, source) in reads.iter_mut().zip(sources.iter_mut()) {
                read.walk = walk_interpreter_frames(
                    memory,
                    layout,
                    read.current_frame,
                    read.chunk,
                    source,
                    options,
                );
            }
        }
    }

    // Phase 4: did any stack change while it was read? Re-read each
    // thread's current-frame pointer and its innermost frame's header; a
    // caller's frame cannot change while its callee still runs, so equal
    // values mean the copy was of one moment.
    if options.check_torn {
        let mut pointers = vec![[0u8; 8]; reads.len()];
        let mut tops: Vec<Vec<u8>> = reads
            .iter()
            .map(|r| vec![0u8; r.walk.top.as_ref().map_or(0, |t| t.1.len())])
            .collect();
        let mut pieces: Vec<(u64, &mut [u8])> = Vec::new();
        for ((read, pointer), top) in reads.iter().zip(pointers.iter_mut()).zip(tops.iter_mut()) {
            if read.frame_pointer_at >= 8 {
                pieces.push((read.frame_pointer_at, &mut pointer[..]));
            }
            if let Some((address, _)) = &read.walk.top {
                pieces.push((*address, &mut top[..]));
            }
        }
        let reread_ok = memory.read_many(&mut pieces).is_ok();
        for ((read, pointer), top) in reads.iter_mut().zip(pointers).zip(tops) {
            let frame_moved =
                read.frame_pointer_at >= 8 && u64::from_le_bytes(pointer) != read.current_frame;
            let top_changed = read
                .walk
                .top
                .as_ref()
                .is_some_and(|(_, before)| !same_frame(layout, before, &top));
            read.sample.torn = !reread_ok || frame_moved || top_changed || read.walk.broken;
        }
    }

    for read in reads {
        let mut sample = read.sample;
        sample.truncated = read.walk.truncated || (read.walk.broken && !options.check_torn);
        sample.frames = read.walk.frames;
        out.push(sample);
    }
    Ok(())
}

/// True if two copies of a frame header describe the same call: same code
/// and same caller (the instruction pointer of the innermost frame moves
/// on while it runs and is read as of the first copy).
fn same_frame(layout: &Layout, before: &[u8], after: &[u8]) -> bool {
    let o = &layout.offsets;
    let fields = [
        o.interpreter_frame_previous.or(o.frame_object_f_back),
        o.interpreter_frame_f_executable
            .or(o.interpreter_frame_f_code)
            .or(o.frame_object_f_code),
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
    let interp_len = [Some(next_at), Some(threads_at), gil_pointer_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
        + 8;
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
            thread = read_u64(memory, thread + thread_next_at)?;
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
