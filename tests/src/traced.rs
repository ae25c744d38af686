//! Reading `pydeep trace` recordings back in tests (trace.rs,
//! trace_real_library.rs): every event with the names of its thread and
//! frame, counted per function and checked for nesting.

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, TraceClock, TraceEvent};
use serde_json::Value;

use crate::waits::wait_for_file;
use crate::Fixture;

/// Every trace event of a recording, with the names of threads and frames.
pub struct Traced {
    /// The events, in the order recorded.
    pub events: Vec<TraceEvent>,
    /// Events the tracer could not record (its ring was full).
    pub lost: u64,
    /// When the window's hooks were removed (0 if the recording does not say).
    pub window_end_ns: u64,
    /// The clock the tracer stamped events with ("TSC", "CLOCK_MONOTONIC").
    pub clock: String,
    /// How the tracer recorded calls ("eval-frame", "monitoring", "profile").
    pub calls_by: String,
    /// Functions CPython could have called past the window's call events
    /// (`TraceEventBatch.unwatched_functions`, summed over batches).
    pub unwatched: u64,
    /// Those the recording names (`TraceEventBatch.unwatched_frame`): the
    /// code object's qualified name (its name where it has none), file
    /// and first line.
    pub unwatched_named: Vec<(String, String, u32)>,
    /// The header's clock start: Chrome times count from it.
    pub start_clock_ns: u64,
    /// ThreadDef id → native thread id.
    pub native: HashMap<u32, u64>,
    /// FrameDef id → (file name, function name).
    pub names: HashMap<u64, (String, String)>,
    /// FrameDef id → its line (line events: the line reported).
    pub lines: HashMap<u64, u32>,
    /// FrameDef id → its code object's `co_firstlineno`.
    pub first_lines: HashMap<u64, u32>,
}

impl Traced {
    /// Call events of functions named `name`.
    pub fn calls_of(&self, name: &str) -> usize {
        self.events
            .iter()
            .filter(|e| {
                e.kind == TraceEventKind::TraceCall
                    && self.names.get(&e.frame).is_some_and(|(_, n)| n == name)
            })
            .count()
    }

    /// Call events per function name of native thread `native` between
    /// `before` and `after` (the program's own clock readings), counting
    /// functions of files ending in `file` that `keep` accepts.
    pub fn calls_per_function(
        &self,
        native: u64,
        window: (u64, u64),
        file: &str,
        keep: impl Fn(&str) -> bool,
    ) -> HashMap<String, u64> {
        self.per_function(TraceEventKind::TraceCall, native, window, file, keep)
    }

    /// The events of `kind` of native thread `native` between `before` and
    /// `after` (the program's own clock readings).
    fn events_of(
        &self,
        kind: TraceEventKind,
        native: u64,
        (before, after): (u64, u64),
    ) -> impl Iterator<Item = &TraceEvent> + '_ {
        self.events.iter().filter(move |e| {
            e.kind == kind
                && self.native.get(&e.thread) == Some(&native)
                && (before..=after).contains(&e.time_ns)
        })
    }

    /// Events of `kind` per function name, as [`Traced::calls_per_function`].
    pub fn per_function(
        &self,
        kind: TraceEventKind,
        native: u64,
        (before, after): (u64, u64),
        file: &str,
        keep: impl Fn(&str) -> bool,
    ) -> HashMap<String, u64> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for e in self.events_of(kind, native, (before, after)) {
            if let Some((path, name)) = self.names.get(&e.frame) {
                if path.ends_with(file) && keep(name) {
                    *counts.entry(name.clone()).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Events of `kind` of native thread `native` between `before` and
    /// `after` (the program's own clock readings) per code object, keyed
    /// `"co_filename:co_firstlineno:co_name"` as a program's own profile
    /// function can key them: every function of every file.
    pub fn per_code(
        &self,
        kind: TraceEventKind,
        native: u64,
        (before, after): (u64, u64),
    ) -> HashMap<String, u64> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for e in self.events_of(kind, native, (before, after)) {
            if let Some((path, name)) = self.names.get(&e.frame) {
                let line = self.first_lines.get(&e.frame).copied().unwrap_or(0);
                *counts.entry(format!("{path}:{line}:{name}")).or_default() += 1;
            }
        }
        counts
    }

    /// Returns of native thread `native` that do not match the call on top
    /// of its stack of calls (0 when its events nest). Returns of frames
    /// entered before the window come first, on an empty stack, and are
    /// not counted.
    pub fn unnested_returns(&self, native: u64) -> usize {
        let mut stack: Vec<u64> = Vec::new();
        let mut unmatched = 0;
        for e in self
            .events
            .iter()
            .filter(|e| self.native.get(&e.thread) == Some(&native))
        {
            match e.kind {
                TraceEventKind::TraceCall => stack.push(e.frame),
                TraceEventKind::TraceReturn => match stack.pop() {
                    Some(top) if top == e.frame => {}
                    Some(_) => unmatched += 1,
                    None => {}
                },
                _ => {}
            }
        }
        unmatched
    }
}

/// Reads every trace event of the recording at `path`, with its tables'
/// names; panics on a format error.
pub fn read_trace(path: &Path) -> Traced {
    let mut recording = Recording::open(path).expect("open the trace recording");
    let mut clock = TraceClock::new(recording.header().start_clock_ns);
    let start_clock_ns = recording.header().start_clock_ns;
    let mut events = Vec::new();
    let mut lost = 0;
    let mut window_end_ns = 0;
    let mut clock_name = String::new();
    let mut calls_by = String::new();
    let mut unwatched = 0;
    let mut unwatched_frames = Vec::new();
    while let Some(event) = recording.next_event().expect("a complete recording") {
        if let Event::TraceEvents(batch) = event {
            unwatched += u64::from(batch.unwatched_functions);
            unwatched_frames.extend(batch.unwatched_frame.iter().copied());
            if !batch.clock.is_empty() {
                clock_name = batch.clock.clone();
            }
            if !batch.calls_by.is_empty() {
                calls_by = batch.calls_by.clone();
            }
            lost += batch.lost;
            window_end_ns = window_end_ns.max(batch.window_end_ns);
            events.extend(clock.decode(&batch));
        }
    }
    let tables = recording.tables();
    let native = tables
        .threads
        .iter()
        .map(|(id, t)| (*id, t.native_id))
        .collect();
    let names = tables
        .frames
        .iter()
        .map(|(id, frame)| {
            let code = tables.code_objects.get(&frame.code);
            let name = |f: fn(&pydeep_format::proto::CodeObjectDef) -> u64| {
                code.map(|c| tables.string(f(c)).to_owned())
                    .unwrap_or_default()
            };
            (id, (name(|c| c.filename), name(|c| c.name)))
        })
        .collect();
    let lines = tables
        .frames
        .iter()
        .map(|(id, frame)| (id, frame.line))
        .collect();
    let first_lines = tables
        .frames
        .iter()
        .map(|(id, frame)| {
            let line = tables
                .code_objects
                .get(&frame.code)
                .map_or(0, |c| c.first_line);
            (id, line)
        })
        .collect();
    let unwatched_named = unwatched_frames
        .iter()
        .map(|frame| unwatched_identity(tables, *frame))
        .collect();
    Traced {
        first_lines,
        unwatched_named,
        events,
        lost,
        window_end_ns,
        clock: clock_name,
        calls_by,
        unwatched,
        start_clock_ns,
        native,
        names,
        lines,
    }
}

/// What a recording says of the unwatched function of FrameDef `frame`
/// (`TraceEventBatch.unwatched_frame`): its code object's qualified name
/// (`co_name` where it has none), file and first line. Panics if the
/// recording does not define it.
pub fn unwatched_identity(tables: &pydeep_format::Tables, frame: u64) -> (String, String, u32) {
    let code = tables
        .frames
        .get(&frame)
        .and_then(|f| tables.code_objects.get(&f.code))
        .unwrap_or_else(|| panic!("unwatched frame {frame} is not defined"));
    let name = if code.qualname != 0 {
        code.qualname
    } else {
        code.name
    };
    (
        tables.string(name).to_owned(),
        tables.string(code.filename).to_owned(),
        code.first_line,
    )
}

/// Waits for the JSON file `path` the fixture writes (renamed into place
/// whole) and returns it; panics if the fixture ends first.
pub fn wait_json(path: &Path, fixture: &mut Fixture, what: &str) -> Value {
    wait_for_file(path, &mut fixture.child, what);
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

/// SIGTERM to `child` (ends a `pydeep trace --until-stopped` window).
pub fn sigterm(child: &Child) {
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}
