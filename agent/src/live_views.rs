//! What the live commands (`heap`, `objects`) read becomes the records a
//! recording's snapshots hold (`proto::Snapshot`), with an in-memory copy
//! of the tables a recording interns; the viewer's library
//! (`pydeep_view`) renders them. A live view and the same view of a
//! recording are drawn by one renderer, in one schema.

use std::collections::HashMap;

use pydeep_format::{proto, Tables};
use pydeep_view::snapshots::Selected;

use crate::recorder::proto_version;
use crate::PythonVersion;

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
                mode: "live".into(),
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
