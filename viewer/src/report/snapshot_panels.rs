//! The report's snapshot panels, drawn by the same functions as `scopes`,
//! `generators` and `heap --growth`: the latest snapshot of frames and
//! variables, the latest of generators and asyncio tasks, and the heap's
//! counts by type over time (a chart of the types that grew most) with the
//! last growth step as `heap --growth` prints it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::heap;
use crate::input::Input;
use crate::scopes;
use crate::snapshots::{self, Content, Selection};
use crate::ViewError;

/// Types drawn in the heap chart.
const CHART_TYPES: usize = 8;

/// The text of the latest snapshot holding `content`, drawn by `draw`, or
/// None if the recording has none.
fn latest_text<R: Read>(
    input: &mut Input<R>,
    content: Content,
    draw: impl Fn(
        &mut Vec<u8>,
        &pydeep_format::Tables,
        &pydeep_format::proto::Header,
        &snapshots::Selected,
    ) -> std::io::Result<()>,
) -> Option<String> {
    let mut latest = None;
    let result = snapshots::for_each(
        input,
        content,
        &Selection::default(),
        |tables, header, selected| {
            let mut text = Vec::new();
            draw(&mut text, tables, header, selected)?;
            latest = Some(String::from_utf8_lossy(&text).into_owned());
            Ok(())
        },
    );
    result.ok().and(latest)
}

/// The snapshot panels of the recording at `path` as JSON: `scopes` and
/// `generators` (text or null), `heap` (null, or `seconds`, `series`
/// [{`name`, `counts`}], `growth` text).
pub fn panels_json(path: &Path) -> Result<Value, ViewError> {
    let scopes_text = latest_text(
        &mut Input::open(path)?,
        Content::Scopes,
        |out, tables, header, selected| {
            scopes::write_scopes_text(
                out,
                tables,
                header,
                selected,
                &scopes::ScopesView::default(),
            )
        },
    );
    let generators_text = latest_text(
        &mut Input::open(path)?,
        Content::Generators,
        |out, tables, header, selected| {
            scopes::write_generators_text(out, tables, header, selected)
        },
    );
    Ok(json!({
        "scopes": scopes_text,
        "generators": generators_text,
        "heap": heap_series(&mut Input::open(path)?),
    }))
}

fn heap_series<R: Read>(input: &mut Input<R>) -> Option<Value> {
    let mut seconds: Vec<f64> = Vec::new();
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut growth = heap::Growth::default();
    let mut last_growth = None;
    let result = snapshots::for_each(
        input,
        Content::Heap,
        &Selection::default(),
        |tables, header, selected| {
            let snapshot = heap::heap_json(tables, header, selected, 0);
            let column = seconds.len();
            seconds.push(snapshot["time"].as_f64().unwrap_or(0.0));
            for kind in snapshot["types"].as_array().into_iter().flatten() {
                let name = kind["name"].as_str().unwrap_or("").to_string();
                let series = counts.entry(name).or_default();
                series.resize(column, 0);
                series.push(kind["count"].as_u64().unwrap_or(0));
            }
            if let Some(step) = growth.next(tables, selected) {
                let mut text = Vec::new();
                heap::write_growth_text(&mut text, header, &step, 20)?;
                last_growth = Some(String::from_utf8_lossy(&text).into_owned());
            }
            Ok(())
        },
    );
    if result.is_err() || seconds.is_empty() {
        return None;
    }
    let columns = seconds.len();
    let mut series: Vec<(String, Vec<u64>)> = counts
        .into_iter()
        .map(|(name, mut values)| {
            values.resize(columns, 0);
            (name, values)
        })
        .collect();
    let grew = |values: &Vec<u64>| values[columns - 1] as i128 - values[0] as i128;
    series.sort_by(|a, b| grew(&b.1).cmp(&grew(&a.1)).then(a.0.cmp(&b.0)));
    series.truncate(CHART_TYPES);
    Some(json!({
        "seconds": seconds,
        "series": series.into_iter().map(|(name, counts)| json!({"name": name, "counts": counts})).collect::<Vec<_>>(),
        "growth": last_growth,
    }))
}
