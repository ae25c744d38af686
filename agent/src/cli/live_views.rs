//! What the live commands (`dump`, `heap`, `objects`) read becomes the
//! records a recording's snapshots hold (`proto::Snapshot`); the viewer's
//! library (`pydeep_view`) renders them. A live view and the same view of
//! a recording are drawn by one renderer, in one schema.
//!
//! There is one way in: each command reads what a snapshot reads
//! ([`crate::recording::snapshot::take`] for `dump` and `heap`,
//! [`crate::recording::snapshot::take_graph`] for `objects`) and records it with
//! [`crate::recording::snapshot::to_record`], as `pydeep record` does, into a
//! recording held in memory ([`LiveRecording`]); the viewer's [`Input`]
//! reads it back as `pydeep-view` reads a file, and the viewer's
//! renderers print it.

use std::collections::HashMap;
use std::io::Cursor;

use anyhow::{Context, Result};
use pydeep_format::proto::record::Kind;
use pydeep_format::{proto, Reader, Recording, Writer, WriterOptions};
use pydeep_view::input::Input;
use pydeep_view::scopes::LIVE_MODE;
use pydeep_view::snapshots::Selected;

use crate::reading::target::Target;
use crate::recording::codes::ReadThenRecord;
use crate::recording::recorder::{proto_version, Recorder};
use crate::recording::snapshot::Taken;

/// The error context of every step of a recording in memory.
fn in_memory() -> &'static str {
    "recording the snapshot in memory"
}

/// A recording of process snapshots being written into memory, to be read
/// back by the viewer ([`LiveRecording::read_back`]).
pub struct LiveRecording {
    recorder: Recorder<Vec<u8>>,
    /// The snapshots' code objects, read before they are recorded.
    codes: ReadThenRecord,
    pid: i32,
    snapshots: u64,
}

impl LiveRecording {
    /// An empty recording of `target`; snapshot times are shown as
    /// seconds after `start_clock_ns` (CLOCK_MONOTONIC).
    pub fn new(target: &Target, start_clock_ns: u64) -> Result<LiveRecording> {
        let header = proto::Header {
            pid: target.pid() as u32,
            python_version: Some(proto_version(&target.python_version())),
            clock: proto::ClockKind::ClockMonotonic as i32,
            start_clock_ns,
            mode: LIVE_MODE.into(),
            pydeep_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let writer =
            Writer::new(Vec::new(), header, WriterOptions::default()).context(in_memory())?;
        Ok(LiveRecording {
            recorder: Recorder::new(writer, false, true),
            codes: ReadThenRecord::default(),
            pid: target.pid(),
            snapshots: 0,
        })
    }

    /// Appends `taken`, read from `target` (thread names `names`), as the
    /// `Snapshot` record `pydeep record` writes for it.
    pub fn record(
        &mut self,
        target: &mut Target,
        taken: &Taken,
        names: &HashMap<u64, String>,
    ) -> Result<()> {
        let pid = target.pid();
        let version = target.python_version();
        // The frames' code objects as of the pause: the target may have
        // freed one since.
        target.revalidate_codes(&taken.code_fingerprints);
        let codes = self.codes.resolve(target, taken.code_addresses());
        let record = crate::recording::snapshot::to_record(
            &mut self.recorder,
            codes,
            pid,
            &version,
            taken,
            names,
        );
        self.recorder
            .record(Kind::Snapshot(record))
            .context(in_memory())?;
        self.snapshots += 1;
        Ok(())
    }

    /// The recording, finished and opened for the viewer's renderers.
    pub fn read_back(self) -> Result<Input<Cursor<Vec<u8>>>> {
        let pid = self.pid;
        let bytes = self
            .recorder
            .finish(proto::Footer {
                snapshot_count: self.snapshots,
                end_reason: "live".into(),
                ..Default::default()
            })
            .context(in_memory())?;
        let reader = Reader::new(Cursor::new(bytes)).context(in_memory())?;
        let recording = Recording::new(reader).context(in_memory())?;
        Ok(Input::new(recording, format!("process {pid}")))
    }
}

/// `taken`, read from `target` (thread names `names`), as a recording of
/// one snapshot held in memory and opened for the viewer's renderers: the
/// same records `pydeep record --snapshot-every` writes for it. Times are
/// shown after the snapshot's own.
pub fn record_snapshot(
    target: &mut Target,
    taken: &Taken,
    names: &HashMap<u64, String>,
) -> Result<Input<Cursor<Vec<u8>>>> {
    let mut recording = LiveRecording::new(target, taken.clock_ns)?;
    recording.record(target, taken, names)?;
    recording.read_back()
}

/// Every snapshot `input` holds, in order, numbered from `first_index` (a
/// live command numbers its counts from 0, as a recording does).
pub fn snapshots<R: std::io::Read>(input: &mut Input<R>, first_index: usize) -> Vec<Selected> {
    std::iter::from_fn(|| input.next_snapshot())
        .enumerate()
        .map(|(n, snapshot)| Selected {
            index: first_index + n,
            snapshot,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_read_back_in_order_numbered_from_the_first_index() {
        let header = proto::Header {
            start_clock_ns: 100,
            ..Default::default()
        };
        let mut writer = Writer::new(Vec::new(), header, WriterOptions::default()).unwrap();
        for time_ns in [100, 200] {
            writer
                .record(Kind::Snapshot(proto::Snapshot {
                    time_ns,
                    ..Default::default()
                }))
                .unwrap();
        }
        let bytes = writer.finish(proto::Footer::default()).unwrap();
        let recording = Recording::new(Reader::new(Cursor::new(bytes)).unwrap()).unwrap();
        let mut input = Input::new(recording, "test".into());
        let read: Vec<(usize, u64)> = snapshots(&mut input, 1)
            .iter()
            .map(|s| (s.index, s.snapshot.time_ns))
            .collect();
        assert_eq!(read, vec![(1, 100), (2, 200)]);
    }
}
