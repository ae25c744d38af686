//! A trace window's events as drained (addresses, native thread ids) and
//! their interning into a `TraceEventBatch` by the recording's
//! [`Recorder`]: the same recorder, and so the same threads, code objects
//! and frames, as the samples of that recording.
//!
//! The drain ([`super::Drain`]) runs where the target is read (the sampler
//! thread, or `pydeep trace`'s own loop); it sends [`RawBatch`]es. The
//! [`Interner`] runs where the recorder is (the sink thread): it turns
//! addresses into frame ids through a [`CodeSource`] (the sink's mirror of
//! what the sampler resolved, or for `pydeep trace` the mirror its own
//! loop resolved into, [`crate::recording::codes::ReadThenRecord`]).

use std::collections::HashMap;

use crate::process::address_hash::AddressMap;

use pydeep_format::proto;

use crate::recording::recorder::{CodeSource, Recorder};
use crate::{PythonVersion, ThreadSample};

/// One event as the tracer wrote it.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent {
    /// The target's monotonic clock.
    pub time_ns: u64,
    /// The OS thread id of the thread it happened on.
    pub native_id: u32,
    /// What happened.
    pub kind: proto::TraceEventKind,
    /// The code object (Python events) or the C function object.
    pub object: u64,
    /// Line events: the instruction offset (0 before 3.11).
    pub offset: u32,
    /// Line events: the line reported.
    pub line: u32,
}

/// Events drained since the last batch, with what is needed to intern them.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// The window's counters and settings (every field but the event and
    /// count columns).
    pub meta: proto::TraceEventBatch,
    /// The events, in ring order.
    pub events: Vec<RawEvent>,
    /// Threads first seen in this batch: native id, as read, name.
    pub threads: Vec<(u32, ThreadSample, Option<String>)>,
    /// C functions first seen in this batch: object address, name.
    pub c_functions: Vec<(u64, String)>,
    /// `--opcodes` (the window's last batch): code object, instruction
    /// offset, executions.
    pub counts: Vec<(u64, u32, u64)>,
    /// The window's last batch: the code objects of the functions CPython
    /// could have called past the window's call events, as the tracer
    /// named them (`TraceEventBatch.unwatched_frame`).
    pub unwatched: Vec<u64>,
    /// The window's first batch: addresses may name other objects than in
    /// an earlier window.
    pub first: bool,
}

impl RawBatch {
    /// Every code object address the batch names (to be resolved for the
    /// sink before it is sent).
    pub fn code_addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.events
            .iter()
            .filter(|e| {
                !matches!(
                    e.kind,
                    proto::TraceEventKind::TraceCCall | proto::TraceEventKind::TraceCReturn
                )
            })
            .map(|e| e.object)
            .chain(self.counts.iter().map(|c| c.0))
            .chain(self.unwatched.iter().copied())
    }

    /// [`RawBatch::code_addresses`], each once: a batch names a few code
    /// objects thousands of times.
    pub fn distinct_code_addresses(&self) -> Vec<u64> {
        let mut addresses = self.code_addresses().collect::<Vec<_>>();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }
}

/// The interning state of one recording's trace events: per process,
/// which thread, frame and C function ids were given, and the time of the
/// last event written (events' times are deltas).
#[derive(Default)]
pub struct Interner {
    // Looked up once or twice per event (millions a second at full rate):
    // hashed by address, not SipHash, which was a third of the drain's time.
    threads: AddressMap<(i32, u32), u32>,
    frames: AddressMap<(i32, u64, u32, u32, u8), u64>,
    c_functions: AddressMap<(i32, u64), u64>,
    native_names: HashMap<String, u64>,
    last_time_ns: Option<u64>,
}

impl Interner {
    /// Forgets what was derived from process `pid`'s addresses (an exec, a
    /// new file of a stream).
    pub fn forget_process(&mut self, pid: i32) {
        self.threads.retain(|k, _| k.0 != pid);
        self.frames.retain(|k, _| k.0 != pid);
        self.c_functions.retain(|k, _| k.0 != pid);
    }

    /// Forgets everything (a new file: its ids start afresh).
    pub fn forget_all(&mut self) {
        *self = Interner::default();
    }

    /// The record of `raw`, interned by `recorder` with code objects from
    /// `source`.
    pub fn batch<W: std::io::Write>(
        &mut self,
        recorder: &mut Recorder<W>,
        source: &mut impl CodeSource,
        pid: i32,
        version: &PythonVersion,
        raw: RawBatch,
    ) -> proto::TraceEventBatch {
        let RawBatch {
            mut meta,
            events,
            threads,
            c_functions,
            counts,
            unwatched,
            first,
        } = raw;
        if first {
            self.forget_process(pid);
        }
        for (native_id, sample, name) in threads {
            let id = recorder.thread(pid, &sample.head(), name.as_deref());
            self.threads.insert((pid, native_id), id);
        }
        for (object, name) in c_functions {
            let id = *self
                .native_names
                .entry(name.clone())
                .or_insert_with(|| recorder.native_frame(&name));
            self.c_functions.insert((pid, object), id);
        }
        let mut last = self
            .last_time_ns
            .unwrap_or_else(|| recorder.start_clock_ns());
        meta.time_delta_ns.reserve(events.len());
        for event in events {
            let thread = match self.threads.get(&(pid, event.native_id)) {
                Some(id) => *id,
                None => {
                    let sample = ThreadSample {
                        thread_id: event.native_id as u64,
                        native_id: event.native_id as u64,
                        is_main: event.native_id as i32 == pid,
                        ..Default::default()
                    };
                    let id = recorder.thread(pid, &sample.head(), None);
                    self.threads.insert((pid, event.native_id), id);
                    id
                }
            };
            let frame = match event.kind {
                proto::TraceEventKind::TraceCCall | proto::TraceEventKind::TraceCReturn => {
                    match self.c_functions.get(&(pid, event.object)) {
                        Some(id) => *id,
                        None => *self
                            .native_names
                            .entry("<C function>".into())
                            .or_insert_with(|| recorder.native_frame("<C function>")),
                    }
                }
                proto::TraceEventKind::TraceLine => *self
                    .frames
                    .entry((pid, event.object, event.offset, event.line, 1))
                    .or_insert_with(|| {
                        recorder.line_frame(
                            source,
                            pid,
                            version,
                            event.object,
                            event.offset,
                            event.line,
                        )
                    }),
                _ => *self
                    .frames
                    .entry((pid, event.object, 0, 0, 0))
                    .or_insert_with(|| code_frame(recorder, source, pid, version, event.object, 0)),
            };
            meta.time_delta_ns.push(event.time_ns.saturating_sub(last));
            last = last.max(event.time_ns);
            meta.thread.push(thread);
            meta.kind.push(event.kind as i32);
            meta.frame.push(frame);
        }
        self.last_time_ns = Some(last);
        for (code, offset, count) in counts {
            let frame = code_frame(recorder, source, pid, version, code, offset);
            meta.count_frame.push(frame);
            meta.count_kind
                .push(proto::TraceEventKind::TraceOpcode as i32);
            meta.count.push(count);
        }
        for code in unwatched {
            let frame = *self
                .frames
                .entry((pid, code, 0, 0, 0))
                .or_insert_with(|| code_frame(recorder, source, pid, version, code, 0));
            meta.unwatched_frame.push(frame);
        }
        meta
    }
}

/// How `pydeep trace` names a function in what it prints: "qualname
/// (file:line)" (`co_qualname`, `co_name` before 3.11; `co_filename`,
/// `co_firstlineno`), as `pydeep-view top --trace` does, escaped: the
/// target's strings are its own.
pub fn function_label(code: &crate::CodeObject) -> String {
    let name = if code.qualname.is_empty() {
        &code.name
    } else {
        &code.qualname
    };
    format!(
        "{} ({}:{})",
        pydeep_format::text::escape(name),
        pydeep_format::text::escape(&code.filename),
        code.first_line
    )
}

fn code_frame<W: std::io::Write>(
    recorder: &mut Recorder<W>,
    source: &mut impl CodeSource,
    pid: i32,
    version: &PythonVersion,
    code: u64,
    offset: u32,
) -> u64 {
    recorder.frame(
        source,
        pid,
        version,
        &crate::FrameSample {
            code_address: code,
            instruction_offset: offset,
            is_generator: false,
            is_shim: false,
        },
    )
}
