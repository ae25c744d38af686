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
        // Addresses seen lately skipped first (a direct-mapped filter: a
        // call-heavy batch names a few hundred code objects): the sort
        // then has a fraction of the events to order.
        let mut seen = [0u64; 256];
        let mut addresses = Vec::new();
        for address in self.code_addresses() {
            let slot = (address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
            if seen[slot] != address || address == 0 {
                seen[slot] = address;
                addresses.push(address);
            }
        }
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
    /// In front of `threads`: the last event's thread (events come in
    /// runs of one thread).
    last_thread: Option<((i32, u32), u32)>,
    /// In front of `frames` and `c_functions`.
    cache: FrameCache,
}

/// A frame id's key: process, object, and for line events (kind 1) the
/// instruction offset and line; C functions are kind 2.
type FrameKey = (i32, u64, u32, u32, u8);

/// A direct-mapped cache of frame ids in front of the interner's hash
/// maps: a call-heavy target names a few hundred code objects millions of
/// times a second, and the maps' lookups (probing, comparing the 5-field
/// key) were a fifth of the drain's time. One slot per key's hash, the
/// whole key compared; emptied with the maps it mirrors.
#[derive(Default)]
struct FrameCache {
    slots: Vec<Option<(FrameKey, u64)>>,
}

impl FrameCache {
    const SLOTS: usize = 1024;

    fn slot(key: &FrameKey) -> usize {
        let mixed =
            (key.1 ^ (u64::from(key.2) << 20) ^ (u64::from(key.3) << 40) ^ u64::from(key.4))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 54) as usize & (Self::SLOTS - 1)
    }

    fn get(&self, key: &FrameKey) -> Option<u64> {
        match self.slots.get(Self::slot(key)) {
            Some(Some((k, id))) if k == key => Some(*id),
            _ => None,
        }
    }

    fn put(&mut self, key: FrameKey, id: u64) {
        if self.slots.is_empty() {
            self.slots = vec![None; Self::SLOTS];
        }
        self.slots[Self::slot(&key)] = Some((key, id));
    }

    fn clear(&mut self) {
        self.slots.clear();
    }
}

impl Interner {
    /// Forgets what was derived from process `pid`'s addresses (an exec, a
    /// new file of a stream).
    pub fn forget_process(&mut self, pid: i32) {
        self.threads.retain(|k, _| k.0 != pid);
        self.frames.retain(|k, _| k.0 != pid);
        self.c_functions.retain(|k, _| k.0 != pid);
        self.last_thread = None;
        self.cache.clear();
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
        let threads_and_functions_empty = threads.is_empty() && c_functions.is_empty();
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
        if !threads_and_functions_empty {
            // New definitions: nothing cached may stand for their keys.
            self.last_thread = None;
            self.cache.clear();
        }
        let mut last = self
            .last_time_ns
            .unwrap_or_else(|| recorder.start_clock_ns());
        meta.time_delta_ns.reserve(events.len());
        meta.thread.reserve(events.len());
        meta.kind.reserve(events.len());
        meta.frame.reserve(events.len());
        for event in events {
            let thread = match self.last_thread {
                Some((key, id)) if key == (pid, event.native_id) => id,
                _ => {
                    let id = self.thread(recorder, pid, event.native_id);
                    self.last_thread = Some(((pid, event.native_id), id));
                    id
                }
            };
            let key = match event.kind {
                proto::TraceEventKind::TraceCCall | proto::TraceEventKind::TraceCReturn => {
                    (pid, event.object, 0, 0, 2)
                }
                proto::TraceEventKind::TraceLine => {
                    (pid, event.object, event.offset, event.line, 1)
                }
                _ => (pid, event.object, 0, 0, 0),
            };
            let frame = match self.cache.get(&key) {
                Some(id) => id,
                None => {
                    let id = self.frame(recorder, source, version, key);
                    self.cache.put(key, id);
                    id
                }
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
            let frame = self.frame(recorder, source, version, (pid, code, 0, 0, 0));
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

impl Interner {
    /// The id of thread `native_id` of `pid`, defined on first use.
    fn thread<W: std::io::Write>(
        &mut self,
        recorder: &mut Recorder<W>,
        pid: i32,
        native_id: u32,
    ) -> u32 {
        if let Some(id) = self.threads.get(&(pid, native_id)) {
            return *id;
        }
        let sample = ThreadSample {
            thread_id: native_id as u64,
            native_id: native_id as u64,
            is_main: native_id as i32 == pid,
            ..Default::default()
        };
        let id = recorder.thread(pid, &sample.head(), None);
        self.threads.insert((pid, native_id), id);
        id
    }

    /// The frame id of `key` (see [`FrameKey`]), defined on first use.
    fn frame<W: std::io::Write>(
        &mut self,
        recorder: &mut Recorder<W>,
        source: &mut impl CodeSource,
        version: &PythonVersion,
        key: FrameKey,
    ) -> u64 {
        let (pid, object, offset, line, kind) = key;
        match kind {
            2 => match self.c_functions.get(&(pid, object)) {
                Some(id) => *id,
                None => *self
                    .native_names
                    .entry("<C function>".into())
                    .or_insert_with(|| recorder.native_frame("<C function>")),
            },
            1 => *self
                .frames
                .entry(key)
                .or_insert_with(|| recorder.line_frame(source, pid, version, object, offset, line)),
            _ => *self
                .frames
                .entry(key)
                .or_insert_with(|| code_frame(recorder, source, pid, version, object, 0)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::codes::CodeMirror;
    use crate::CodeObject;
    use std::sync::Arc;

    fn recorder() -> Recorder<Vec<u8>> {
        let writer =
            pydeep_format::Writer::new(Vec::new(), proto::Header::default(), Default::default())
                .unwrap();
        Recorder::new(writer, false, true)
    }

    fn event(kind: proto::TraceEventKind, native_id: u32, object: u64) -> RawEvent {
        RawEvent {
            time_ns: 1,
            native_id,
            kind,
            object,
            offset: 0,
            line: 0,
        }
    }

    fn batch(first: bool, events: Vec<RawEvent>) -> RawBatch {
        RawBatch {
            events,
            first,
            ..Default::default()
        }
    }

    /// The frame ids of `events` as interned by `interner`, with what
    /// `mirror` says now.
    fn frames(
        interner: &mut Interner,
        recorder: &mut Recorder<Vec<u8>>,
        mirror: &mut CodeMirror,
        first: bool,
        events: Vec<RawEvent>,
    ) -> Vec<u64> {
        let version = PythonVersion::default();
        interner
            .batch(recorder, mirror, 7, &version, batch(first, events))
            .frame
    }

    #[test]
    fn distinct_code_addresses_are_each_code_address_once() {
        use proto::TraceEventKind::{TraceCCall, TraceCall, TraceReturn};
        let codes: Vec<u64> = (0..2_000u64).map(|i| 0x1000 + (i % 700) * 0x40).collect();
        let mut events: Vec<RawEvent> = codes
            .iter()
            .flat_map(|&c| [event(TraceCall, 7, c), event(TraceReturn, 7, c)])
            .collect();
        events.push(event(TraceCall, 7, 0));
        events.push(event(TraceCCall, 7, 0xdead));
        let mut raw = batch(false, events);
        raw.counts.push((0x99, 2, 5));
        let mut expected: Vec<u64> = codes.iter().copied().chain([0, 0x99]).collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(raw.distinct_code_addresses(), expected);
    }

    #[test]
    fn the_cache_never_returns_an_id_forgotten_with_its_process() {
        use proto::TraceEventKind::{TraceCall, TraceReturn};
        let mut mirror = CodeMirror::default();
        let named = |id: u64, name: &str| Some((id, Arc::new(CodeObject::named(name, "f.py"))));
        mirror.learn(0, vec![(0x10, named(1, "f")), (0x20, named(2, "g"))]);
        let mut recorder = recorder();
        let mut interner = Interner::default();
        let calls = || {
            vec![
                event(TraceCall, 7, 0x10),
                event(TraceCall, 7, 0x20),
                event(TraceReturn, 7, 0x20),
                event(TraceReturn, 7, 0x10),
            ]
        };
        let before = frames(&mut interner, &mut recorder, &mut mirror, true, calls());
        assert_eq!(before[0], before[3]);
        assert_ne!(before[0], before[1]);
        // Cached: the same ids again.
        let again = frames(&mut interner, &mut recorder, &mut mirror, false, calls());
        assert_eq!(again, before);
        // A new window in which 0x10 names another code object (an exec, a
        // code object freed and its address reused): its first batch
        // forgets the process, and 0x10's frame is h's, as a fresh
        // interner gives it.
        mirror.learn(1, vec![(0x10, named(3, "h"))]);
        let after = frames(&mut interner, &mut recorder, &mut mirror, true, calls());
        assert_ne!(after[0], before[0]);
        let fresh = frames(
            &mut Interner::default(),
            &mut recorder,
            &mut mirror,
            true,
            calls(),
        );
        assert_eq!(after, fresh);
        // forget_process by itself empties the cache as well.
        mirror.learn(2, vec![(0x20, named(1, "f"))]);
        interner.forget_process(7);
        let forgotten = frames(&mut interner, &mut recorder, &mut mirror, false, calls());
        assert_eq!(forgotten[1], before[0]);
    }

    #[test]
    fn cached_threads_and_frames_are_the_maps_ids() {
        use proto::TraceEventKind::{TraceCall, TraceLine, TraceReturn};
        let mut mirror = CodeMirror::default();
        let named = |id: u64, name: &str| Some((id, Arc::new(CodeObject::named(name, "f.py"))));
        // Enough code objects that cache slots collide.
        let codes: Vec<u64> = (0..3_000u64).map(|i| 0x1000 + i * 0x40).collect();
        mirror.learn(
            0,
            codes
                .iter()
                .enumerate()
                .map(|(i, &a)| (a, named(i as u64 + 1, &format!("f{i}")))),
        );
        let mut recorder = recorder();
        let mut interner = Interner::default();
        let mut events = Vec::new();
        for (i, &code) in codes.iter().enumerate() {
            let thread = 7 + (i % 3) as u32;
            events.push(event(TraceCall, thread, code));
            let mut line = event(TraceLine, thread, code);
            line.offset = (i % 5) as u32 * 2;
            line.line = 10 + (i % 5) as u32;
            events.push(line);
            events.push(event(TraceReturn, thread, code));
        }
        // Twice over: the second pass is answered mostly from the cache.
        let twice: Vec<RawEvent> = events.iter().chain(events.iter()).copied().collect();
        let version = PythonVersion::default();
        let record = interner.batch(&mut recorder, &mut mirror, 7, &version, batch(true, twice));
        let half = events.len();
        assert_eq!(record.frame[..half], record.frame[half..]);
        assert_eq!(record.thread[..half], record.thread[half..]);
        for (i, &code) in codes.iter().enumerate() {
            let frame = record.frame[3 * i];
            assert_eq!(interner.frames[&(7, code, 0, 0, 0)], frame);
            assert_eq!(record.frame[3 * i + 2], frame);
            let thread = 7 + (i % 3) as u32;
            assert_eq!(interner.threads[&(7, thread)], record.thread[3 * i]);
        }
    }
}
