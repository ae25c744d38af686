//! What the live commands (`dump`, `heap`, `objects`) read becomes the
//! records a recording's snapshots hold (`proto::Snapshot`); the viewer's
//! library (`pydeep_view`) renders them. A live view and the same view of
//! a recording are drawn by one renderer, in one schema.
//!
//! `dump` reads what a scopes snapshot reads ([`crate::snapshot::take`])
//! and records it, with its threads, frames, code objects and stacks,
//! into a one-snapshot recording in memory ([`record_snapshot`]), read
//! back by the viewer's [`Input`] as `pydeep-view scopes` reads a file.
//! `heap` and `objects` need no frames: their records are built over an
//! in-memory string table ([`LiveTables`]).

use std::collections::HashMap;
use std::io::Cursor;

use anyhow::{Context, Result};
use pydeep_format::proto::record::Kind;
use pydeep_format::{proto, Reader, Recording, Tables, Writer, WriterOptions};
use pydeep_view::input::Input;
use pydeep_view::scopes::LIVE_MODE;
use pydeep_view::snapshots::Selected;

use crate::recorder::{proto_version, Recorder};
use crate::snapshot::Taken;
use crate::target::Target;
use crate::PythonVersion;

/// `taken`, read from `target` (thread names `names`), as a recording of
/// one snapshot held in memory and opened for the viewer's renderers: the
/// same records `pydeep record --snapshot-every` writes for it.
pub fn record_snapshot(
    target: &mut Target,
    taken: &Taken,
    names: &HashMap<u64, String>,
) -> Result<Input<Cursor<Vec<u8>>>> {
    let pid = target.pid();
    let version = target.python_version();
    let header = proto::Header {
        pid: pid as u32,
        python_version: Some(proto_version(&version)),
        clock: proto::ClockKind::ClockMonotonic as i32,
        start_clock_ns: taken.clock_ns,
        mode: LIVE_MODE.into(),
        pydeep_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let in_memory = || "recording the snapshot in memory";
    let writer = Writer::new(Vec::new(), header, WriterOptions::default()).context(in_memory())?;
    let mut recorder = Recorder::new(writer, false, true);
    // The frames' code objects as of the pause: the target may have
    // freed one since.
    target.revalidate_codes(&taken.code_fingerprints);
    let record = crate::snapshot::to_record(&mut recorder, target, pid, &version, taken, names);
    recorder
        .record(Kind::Snapshot(record))
        .context(in_memory())?;
    let bytes = recorder
        .finish(proto::Footer {
            snapshot_count: 1,
            end_reason: "live".into(),
            ..Default::default()
        })
        .context(in_memory())?;
    let reader = Reader::new(Cursor::new(bytes)).context(in_memory())?;
    let recording = Recording::new(reader).context(in_memory())?;
    Ok(Input::new(recording, format!("process {pid}")))
}

/// The tables and header the viewer's renderers resolve a live snapshot
/// through, as a recording of the target would give them.
#[derive(Debug, Clone)]
pub struct LiveTables {
    tables: Tables,
    string_ids: HashMap<String, u64>,
    header: proto::Header,
}

impl LiveTables {
    /// Empty tables for process `pid` running CPython `version`; snapshot
    /// times are shown as seconds after `start_clock_ns` (CLOCK_MONOTONIC).
    pub fn new(pid: i32, version: &PythonVersion, start_clock_ns: u64) -> LiveTables {
        LiveTables {
            tables: Tables::default(),
            string_ids: HashMap::new(),
            header: proto::Header {
                pid: pid as u32,
                python_version: Some(proto_version(version)),
                clock: proto::ClockKind::ClockMonotonic as i32,
                start_clock_ns,
                mode: LIVE_MODE.into(),
                ..Default::default()
            },
        }
    }

    /// The id of `text`, interned on first use (ids start at 1: 0 is "no
    /// string" in the schema).
    pub fn string(&mut self, text: &str) -> u64 {
        if let Some(&id) = self.string_ids.get(text) {
            return id;
        }
        let id = self.string_ids.len() as u64 + 1;
        self.string_ids.insert(text.to_string(), id);
        self.tables.strings.insert(id, text.to_string());
        id
    }

    /// The tables as a recording's reader would hold them.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The header the renderers take times and the version from.
    pub fn header(&self) -> &proto::Header {
        &self.header
    }
}

/// `snapshot` as the viewer's renderers take it: the `index`-th of its
/// kind (live commands number their counts from 0, as a recording does).
pub fn selected(index: usize, snapshot: proto::Snapshot) -> Selected {
    Selected {
        index,
        snapshot: Box::new(snapshot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_interned_once_from_id_one() {
        let version = PythonVersion {
            major: 3,
            minor: 12,
            patch: 1,
            release: String::new(),
            free_threaded: false,
            debug_build: false,
        };
        let mut live = LiveTables::new(7, &version, 100);
        let a = live.string("list");
        let b = live.string("dict");
        assert_eq!((a, b, live.string("list")), (1, 2, 1));
        assert_eq!(live.tables().string(b), "dict");
        assert_eq!(live.tables().string(0), "");
        assert_eq!(live.header().pid, 7);
    }
}
