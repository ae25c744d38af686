//! The deep snapshots of a recording (`pydeep record --snapshot-every`,
//! `--heap-every`): which ones a command shows, streamed one at a time.
//!
//! Snapshots are numbered per content (the scopes snapshots 0, 1, 2...,
//! the heap snapshots 0, 1, 2... separately), since scopes and heap counts
//! usually come at different periods. Memory holds one snapshot (two for
//! `--at`: the best so far and the one being read), whatever the length of
//! the recording.

use std::io::Read;

use pydeep_format::proto;
use pydeep_format::Tables;
use serde_json::{json, Value};

use crate::input::Input;
use crate::ViewError;

/// What a command looks for in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Threads with their frames (and variables).
    Scopes,
    /// Generators, coroutines and asyncio tasks.
    Generators,
    /// An object graph.
    Objects,
    /// Object counts by type.
    Heap,
}

impl Content {
    /// True if `snapshot` holds this content.
    pub fn in_snapshot(self, snapshot: &proto::Snapshot) -> bool {
        match self {
            Content::Scopes => !snapshot.threads.is_empty(),
            Content::Generators => !snapshot.generators.is_empty() || !snapshot.tasks.is_empty(),
            Content::Objects => !snapshot.objects.is_empty(),
            Content::Heap => snapshot.heap.is_some(),
        }
    }

    /// What a snapshot of this content holds, for messages.
    fn held(self) -> &'static str {
        match self {
            Content::Scopes => "threads",
            Content::Generators => {
                "a generator, coroutine or asyncio task (none was alive, or none was asked for)"
            }
            Content::Objects => "an object graph (record with --snapshot-locals)",
            Content::Heap => "a heap count (record with --heap-every)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Content::Scopes => "scopes",
            Content::Generators => "generators",
            Content::Objects => "objects",
            Content::Heap => "heap",
        }
    }
}

/// Which snapshots to show. Default: every one.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The latest snapshot at or before this offset after the recording's
    /// start (the first one if the offset precedes them all).
    pub at_ns: Option<u64>,
    /// Only these indexes (numbered per content, from 0).
    pub indexes: Vec<usize>,
    /// Only snapshots of these processes.
    pub pids: Vec<u32>,
}

/// One snapshot chosen, with its number.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Its index among the recording's snapshots of the same content.
    pub index: usize,
    /// The snapshot.
    pub snapshot: Box<proto::Snapshot>,
}

/// Streams the snapshots of `input` holding `content` that `selection`
/// picks, calling `each` with the tables as they stand. Returns how many
/// were shown; a selection that matches none is an error naming how many
/// there were.
pub fn for_each<R: Read>(
    input: &mut Input<R>,
    content: Content,
    selection: &Selection,
    mut each: impl FnMut(&Tables, &proto::Header, &Selected) -> std::io::Result<()>,
) -> Result<usize, ViewError> {
    let start = input.header().start_clock_ns;
    let mut count = 0usize;
    let mut shown = 0usize;
    let mut best: Option<Selected> = None;
    // Snapshots of the selected processes, whatever they hold: a
    // recording whose snapshots held nothing of `content` (no generator
    // alive at any of them) must not be told to record snapshots.
    let mut taken = 0usize;
    while let Some(snapshot) = input.next_snapshot() {
        if !(selection.pids.is_empty() || selection.pids.contains(&snapshot.pid)) {
            continue;
        }
        taken += 1;
        if !content.in_snapshot(&snapshot) {
            continue;
        }
        let index = count;
        count += 1;
        if !selection.indexes.is_empty() && !selection.indexes.contains(&index) {
            continue;
        }
        let selected = Selected { index, snapshot };
        match selection.at_ns {
            Some(at) => {
                let offset = selected.snapshot.time_ns.saturating_sub(start);
                if best.is_none() || offset <= at {
                    best = Some(selected);
                }
                if offset > at {
                    break;
                }
            }
            None => {
                each(input.tables(), input.header(), &selected)?;
                shown += 1;
            }
        }
    }
    if let Some(selected) = best {
        each(input.tables(), input.header(), &selected)?;
        shown += 1;
    }
    if shown == 0 && count == 0 && taken > 0 {
        return Err(ViewError::InvalidArgument(format!(
            "none of the recording's {taken} snapshots holds {}",
            content.held()
        )));
    }
    if shown == 0 {
        return Err(ViewError::InvalidArgument(format!(
            "no {} snapshot matches (the recording holds {count}{}); record with {}",
            content.name(),
            if input.damage().is_some() {
                " readable"
            } else {
                ""
            },
            match content {
                Content::Heap => "--heap-every",
                Content::Objects => "--snapshot-every D --snapshot-locals",
                _ => "--snapshot-every",
            }
        )));
    }
    Ok(shown)
}

/// Seconds of `time_ns` after the recording's start.
pub fn offset_seconds(header: &proto::Header, time_ns: u64) -> f64 {
    time_ns.saturating_sub(header.start_clock_ns) as f64 / 1e9
}

/// The fields every snapshot's JSON starts with: `index`, `time` (seconds
/// after the start), `time_ns` (the stream clock), `pid`, `pause_seconds`.
pub fn stamp(header: &proto::Header, selected: &Selected) -> serde_json::Map<String, Value> {
    let snapshot = &selected.snapshot;
    let mut map = serde_json::Map::new();
    map.insert("index".into(), json!(selected.index));
    map.insert(
        "time".into(),
        json!(offset_seconds(header, snapshot.time_ns)),
    );
    map.insert("time_ns".into(), json!(snapshot.time_ns));
    map.insert("pid".into(), json!(snapshot.pid));
    map.insert(
        "pause_seconds".into(),
        json!(snapshot.pause_ns as f64 / 1e9),
    );
    map
}

/// The one-line title of a snapshot in text outputs.
pub fn title(header: &proto::Header, selected: &Selected) -> String {
    let snapshot = &selected.snapshot;
    let version = python_version(header).map_or(String::new(), |v| format!("CPython {v}, "));
    format!(
        "snapshot {} at {:.3} s (pid {}, {version}paused {:.2} ms)",
        selected.index,
        offset_seconds(header, snapshot.time_ns),
        snapshot.pid,
        snapshot.pause_ns as f64 / 1e6
    )
}

/// The CPython version of the recording's header ("3.11.7"), if it says.
pub fn python_version(header: &proto::Header) -> Option<String> {
    header.python_version.as_ref().map(|v| {
        pydeep_cpython::semantics::PythonVersion {
            major: v.major,
            minor: v.minor,
            patch: v.patch,
            release: v.release.clone(),
            free_threaded: v.free_threaded,
            debug_build: v.debug_build,
        }
        .to_string()
    })
}

/// A frame resolved for display.
#[derive(Debug, Clone)]
pub struct FrameLabel {
    /// co_qualname (co_name before 3.11).
    pub qualname: String,
    /// co_filename.
    pub file: String,
    /// The line (0 unknown).
    pub line: u32,
    /// Byte offset of the instruction.
    pub instruction_offset: u32,
    /// A generator's or coroutine's frame.
    pub is_generator: bool,
}

/// Resolves frame `id` through the recording's tables.
pub fn frame_label(tables: &Tables, id: u64) -> FrameLabel {
    let frame = tables.frames.get(&id);
    let code = frame.and_then(|f| tables.code_objects.get(&f.code));
    FrameLabel {
        qualname: code.map_or_else(
            || format!("<unknown frame {id}>"),
            |c| tables.name(c.qualname).into_owned(),
        ),
        file: code.map_or_else(String::new, |c| tables.name(c.filename).into_owned()),
        line: frame.map_or(0, |f| f.line),
        instruction_offset: frame.map_or(0, |f| f.instruction_offset),
        is_generator: frame.is_some_and(|f| f.is_generator),
    }
}

/// The JSON of a frame: `frame` (its id), `qualname`, `file`, `line`
/// (null unknown), `instruction_offset`, `is_generator`.
pub fn frame_json(tables: &Tables, id: u64) -> serde_json::Map<String, Value> {
    let label = frame_label(tables, id);
    let mut map = serde_json::Map::new();
    map.insert("frame".into(), json!(id));
    map.insert("qualname".into(), json!(label.qualname));
    map.insert("file".into(), json!(label.file));
    map.insert(
        "line".into(),
        if label.line == 0 {
            Value::Null
        } else {
            json!(label.line)
        },
    );
    map.insert("instruction_offset".into(), json!(label.instruction_offset));
    map.insert("is_generator".into(), json!(label.is_generator));
    map
}

/// True if thread `id` of the recording matches one of `wanted` (a name,
/// or a number: kernel TID, pthread id or the file's thread id); an empty
/// list matches every thread.
pub fn thread_matches(tables: &Tables, id: u32, wanted: &[String]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let definition = tables.threads.get(&id);
    wanted.iter().any(|want| {
        if definition.is_some_and(|t| t.name != 0 && tables.string(t.name) == want) {
            return true;
        }
        match want.parse::<u64>() {
            Ok(number) => definition.map_or(number == u64::from(id), |t| {
                number == t.native_id || number == t.thread_id || number == u64::from(t.id)
            }),
            Err(_) => false,
        }
    })
}
