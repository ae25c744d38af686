//! `pydeep-view heap`: the object counts by type of heap snapshots
//! (objgraph's `show_most_common_types`), and with `--growth` the types
//! whose count grew between successive heap snapshots (`show_growth`).
//!
//! Types are merged by name, as objgraph does: two classes both called
//! `Node` count together.

use std::collections::BTreeMap;
use std::io::Write;

use pydeep_format::proto;
use pydeep_format::text::escape;
use pydeep_format::Tables;
use serde_json::{json, Value};

use crate::snapshots::{offset_seconds, stamp, title, Selected};

/// Count and bytes of one type name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Objects.
    pub count: u64,
    /// Their shallow size (see notes/snapshots.md), those of implausible
    /// size left out.
    pub bytes: u64,
    /// Objects whose header claimed more memory than the target had.
    pub implausible: u64,
}

/// A heap snapshot's counts by type name.
pub fn counts(tables: &Tables, heap: &proto::HeapSummary) -> BTreeMap<String, Count> {
    let mut out: BTreeMap<String, Count> = BTreeMap::new();
    for t in &heap.types {
        let entry = out
            .entry(tables.string(t.type_name).to_string())
            .or_default();
        entry.count = entry.count.saturating_add(t.count);
        entry.bytes = entry.bytes.saturating_add(t.bytes);
        entry.implausible = entry.implausible.saturating_add(t.implausible);
    }
    out
}

/// Types by count, most numerous first (then by name), at most `top`
/// (0: all).
fn ranked(counts: &BTreeMap<String, Count>, top: usize) -> Vec<(&str, Count)> {
    let mut list: Vec<(&str, Count)> = counts.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    list.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    if top > 0 {
        list.truncate(top);
    }
    list
}

/// The JSON of one heap snapshot: the stamp, `objects`, `bytes`,
/// `unreadable`, `types` [{`name`, `count`, `bytes`}] and `warnings`.
pub fn heap_json(
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    top: usize,
) -> Value {
    let mut root = stamp(header, selected);
    let heap = selected.snapshot.heap.clone().unwrap_or_default();
    let counts = counts(tables, &heap);
    let types: Vec<Value> = ranked(&counts, top)
        .into_iter()
        .map(|(name, c)| {
            let mut entry = json!({"name": name, "count": c.count, "bytes": c.bytes});
            if c.implausible != 0 {
                entry["implausible"] = json!(c.implausible);
            }
            entry
        })
        .collect();
    root.insert("objects".into(), json!(heap.total_objects));
    root.insert("bytes".into(), json!(heap.total_bytes));
    root.insert("unreadable".into(), json!(heap.unreadable));
    root.insert("types".into(), Value::Array(types));
    root.insert(
        "warnings".into(),
        json!(heap_warnings(selected).collect::<Vec<_>>()),
    );
    Value::Object(root)
}

/// The snapshot's warnings that concern its heap count: a snapshot that
/// also walked an object graph (`--snapshot-locals`) carries that walk's
/// warnings ("object graph truncated at N objects"), which say nothing
/// about the heap (issue 16 item 6).
fn heap_warnings(selected: &Selected) -> impl Iterator<Item = &String> {
    selected
        .snapshot
        .warnings
        .iter()
        .filter(|w| !w.starts_with("object graph"))
}

/// One heap snapshot as a table.
pub fn write_heap_text(
    out: &mut dyn Write,
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    top: usize,
) -> std::io::Result<()> {
    let heap = selected.snapshot.heap.clone().unwrap_or_default();
    writeln!(
        out,
        "{}: {} objects, {} bytes",
        title(header, selected),
        heap.total_objects,
        heap.total_bytes
    )?;
    for (name, c) in ranked(&counts(tables, &heap), top) {
        let name = escape(name);
        let implausible = match c.implausible {
            0 => String::new(),
            n => format!(" + {n} of implausible size (left out)"),
        };
        writeln!(
            out,
            "  {name:<40} {:>12} {:>14} bytes{implausible}",
            c.count, c.bytes
        )?;
    }
    for warning in heap_warnings(selected) {
        writeln!(out, "warning: {warning}")?;
    }
    writeln!(out)
}

/// Growth between successive heap snapshots: feed them in order with
/// [`Growth::next`]; memory is the previous snapshot's counts.
#[derive(Debug, Default)]
pub struct Growth {
    previous: Option<(usize, u64, BTreeMap<String, Count>)>,
}

/// The growth from one heap snapshot to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Index and stream time of the earlier snapshot.
    pub from: (usize, u64),
    /// Index and stream time of the later one.
    pub to: (usize, u64),
    /// (type name, count now, increase), largest increase first, then by
    /// name; increases only.
    pub types: Vec<(String, u64, u64)>,
}

impl Growth {
    /// Takes the next heap snapshot; returns its growth over the previous
    /// one (None for the first).
    pub fn next(&mut self, tables: &Tables, selected: &Selected) -> Option<Step> {
        let heap = selected.snapshot.heap.as_ref()?;
        let now = counts(tables, heap);
        let here = (selected.index, selected.snapshot.time_ns);
        let step = self.previous.as_ref().map(|(index, time, before)| {
            let mut types: Vec<(String, u64, u64)> = now
                .iter()
                .filter_map(|(name, c)| {
                    let was = before.get(name).map_or(0, |b| b.count);
                    (c.count > was).then(|| (name.clone(), c.count, c.count - was))
                })
                .collect();
            types.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            Step {
                from: (*index, *time),
                to: here,
                types,
            }
        });
        self.previous = Some((here.0, here.1, now));
        step
    }
}

/// The JSON of one growth step: `from` and `to` ({`index`, `time`,
/// `time_ns`}) and `types` [{`name`, `count`, `growth`}], at most `top`.
pub fn growth_json(header: &proto::Header, step: &Step, top: usize) -> Value {
    let point = |(index, time_ns): (usize, u64)| json!({"index": index, "time": offset_seconds(header, time_ns), "time_ns": time_ns});
    let limit = if top == 0 { usize::MAX } else { top };
    json!({
        "from": point(step.from),
        "to": point(step.to),
        "types": step.types.iter().take(limit).map(|(name, count, growth)| {
            json!({"name": name, "count": count, "growth": growth})
        }).collect::<Vec<_>>(),
    })
}

/// One growth step as text, like objgraph's `show_growth`.
pub fn write_growth_text(
    out: &mut dyn Write,
    header: &proto::Header,
    step: &Step,
    top: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "growth from heap snapshot {} ({:.3} s) to {} ({:.3} s):",
        step.from.0,
        offset_seconds(header, step.from.1),
        step.to.0,
        offset_seconds(header, step.to.1)
    )?;
    let limit = if top == 0 { usize::MAX } else { top };
    for (name, count, growth) in step.types.iter().take(limit) {
        let name = escape(name);
        writeln!(out, "  {name:<40} {count:>12} {:>+12}", *growth as i64)?;
    }
    if step.types.is_empty() {
        writeln!(out, "  (no type grew)")?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heap_view_leaves_out_the_object_graph_walks_warnings_and_keeps_its_own() {
        let snapshot = proto::Snapshot {
            heap: Some(proto::HeapSummary::default()),
            warnings: vec![
                "object graph truncated at 200 objects".into(),
                "heap: 3 objects unreadable".into(),
            ],
            ..Default::default()
        };
        let selected = Selected {
            index: 0,
            snapshot: Box::new(snapshot),
        };
        let json = heap_json(&Tables::default(), &proto::Header::default(), &selected, 0);
        assert_eq!(json["warnings"], json!(["heap: 3 objects unreadable"]));
        let mut text = Vec::new();
        write_heap_text(
            &mut text,
            &Tables::default(),
            &proto::Header::default(),
            &selected,
            0,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("heap: 3 objects unreadable"), "{text}");
        assert!(!text.contains("object graph"), "{text}");
    }
}
