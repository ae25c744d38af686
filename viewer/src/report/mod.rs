//! `pydeep-view report`: one self-contained HTML page (no network) with
//! every view of a recording.
//!
//! Each panel takes its numbers from the function the matching command
//! uses, so the page and the commands cannot disagree:
//! * the top table is [`crate::top::json`] (`top --json --limit 0`);
//! * the flame graph is the profile with thread states
//!   ([`crate::aggregate::ProfileOptions`], as `flamegraph` draws it),
//!   merged into a tree by [`icicle`], one root per thread;
//! * the timeline is [`timeline`]: ticks and missed ticks per bucket;
//! * the source panels are [`crate::lines::line_shares`] over
//!   [`crate::lines::source_text`] (`lines`);
//! * the bytecode panels are [`crate::bytecode::annotate`]'s text
//!   (`bytecode --top N`);
//! * the snapshot panels are [`snapshot_panels`] (`scopes`, `generators`,
//!   `heap --growth`).
//!
//! The page is `page.html` with the data as one JSON document and the
//! script and style inlined; memory is bounded by distinct stacks, threads
//! × timeline buckets and the panels shown, not by samples.

pub mod icicle;
pub mod snapshot_panels;
pub mod timeline;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};

use crate::aggregate::{Profile, ProfileOptions};
use crate::bytecode::annotate::{self, AnnotateOptions};
use crate::filter::Filter;
use crate::input::Input;
use crate::lines;
use crate::symbols::Granularity;
use crate::top;
use crate::ViewError;

/// What the report holds besides the profile. Defaults in [`Default`].
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Source files shown with line heat, hottest first. Default 3.
    pub source_files: usize,
    /// Lines shown per source file at most (around its sampled lines).
    /// Default 400.
    pub source_lines: usize,
    /// Hot functions shown as annotated bytecode. Default 3.
    pub bytecode_functions: usize,
    /// Timeline buckets per thread. Default 400.
    pub timeline_buckets: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            source_files: 3,
            source_lines: 400,
            bytecode_functions: 3,
            timeline_buckets: 400,
        }
    }
}

/// What the page shows, gathered from the recording at `path`; the warnings
/// of a damaged recording are in `damage`.
pub struct Report {
    /// The page's data (one JSON document).
    pub data: Value,
    /// Why the recording ended early, if it did: the caller should warn.
    pub damage: Option<String>,
}

/// Reads the recording at `path` (several passes, one per view) and
/// gathers the page's data.
pub fn gather(path: &Path, filter: &Filter, options: &ReportOptions) -> Result<Report, ViewError> {
    let by_function = Profile::read(&mut Input::open(path)?, filter, Granularity::Function);
    let with_states = Profile::read_with(
        &mut Input::open(path)?,
        filter,
        Granularity::Function,
        &ProfileOptions {
            thread_states: true,
        },
    );
    let header = &by_function.header;
    let period = by_function.sample_period_ns();
    let timeline = match by_function.time_range {
        Some(range) => timeline::Timeline::read(
            &mut Input::open(path)?,
            filter,
            range,
            options.timeline_buckets,
        )
        .json(header.start_clock_ns, period),
        None => Value::Null,
    };
    let mut line_input = Input::open(path)?;
    let by_line = Profile::read(&mut line_input, filter, Granularity::Line);
    let sources = source_panels(&by_line, &line_input, options);
    let bytecode = bytecode_panels(path, options.bytecode_functions);
    let snapshots = snapshot_panels::panels_json(path)?;
    let python = header
        .python_version
        .as_ref()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.patch));
    let data = json!({
        "file": path.display().to_string(),
        "argv": header.argv.join(" "),
        "pid": header.pid,
        "python": python,
        "rate_hz": header.sampling.as_ref().map(|s| s.rate_hz),
        "period_ns": period,
        "viewer": format!("pydeep-view {}", env!("CARGO_PKG_VERSION")),
        "top": top::json(&by_function, 0),
        "flame": icicle::tree_json(&with_states),
        "timeline": timeline,
        "sources": sources,
        "bytecode": bytecode,
        "snapshots": snapshots,
    });
    Ok(Report {
        data,
        damage: by_function.damage.clone(),
    })
}

/// The hottest files' lines with their own and total ticks.
fn source_panels<R: io::Read>(
    profile: &Profile,
    input: &Input<R>,
    options: &ReportOptions,
) -> Value {
    let mut per_file: HashMap<&str, u64> = HashMap::new();
    for stack in &profile.stacks {
        if let Some(&leaf) = stack.frames.last() {
            let file = profile.symbols.get(leaf).file.as_str();
            if !file.is_empty() {
                *per_file.entry(file).or_insert(0) += stack.count;
            }
        }
    }
    let mut files: Vec<(&str, u64)> = per_file.into_iter().collect();
    files.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut panels = Vec::new();
    for (file, own) in files.into_iter().take(options.source_files) {
        let shares = lines::line_shares(profile, file);
        let Ok(text) = lines::source_text(input.tables(), Path::new(file), file) else {
            panels.push(json!({"file": file, "own": own, "lines": [], "missing": true}));
            continue;
        };
        let sampled: Vec<u32> = shares.keys().copied().filter(|&l| l > 0).collect();
        let (first, last) = match (sampled.first(), sampled.last()) {
            (Some(&first), Some(&last)) => (first.saturating_sub(3).max(1), last + 3),
            _ => (1, options.source_lines as u32),
        };
        let last = last.min(first + options.source_lines as u32 - 1);
        let rows: Vec<Value> = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index as u32 + 1, line))
            .filter(|(number, _)| (first..=last).contains(number))
            .map(|(number, line)| {
                let share = shares.get(&number).copied().unwrap_or_default();
                json!([number, line, share.own, share.total])
            })
            .collect();
        panels.push(json!({"file": file, "own": own, "lines": rows, "missing": false}));
    }
    Value::Array(panels)
}

/// The annotated bytecode of the `count` hottest code objects.
fn bytecode_panels(path: &Path, count: usize) -> Value {
    let Ok(profile) = annotate::Profile::read(path) else {
        return json!([]);
    };
    let options = AnnotateOptions {
        top: count,
        ..AnnotateOptions::default()
    };
    let ids = profile.select(&options).unwrap_or_default();
    let panels: Vec<Value> = ids
        .into_iter()
        .filter_map(|id| {
            let text = profile.render(id, false).ok()?;
            let function = profile.code(id).map(|code| code.qualname.clone());
            Some(json!({"function": function, "samples": profile.samples_of(id), "text": text}))
        })
        .collect();
    Value::Array(panels)
}

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("report.js");
const STYLE: &str = include_str!("report.css");

/// Writes the page: `page.html` with the style, the data and the script
/// inlined. The data is JSON in a `<script type="application/json">`,
/// with `<` escaped so that no string in it can close the element.
pub fn write_page(data: &Value, mut out: impl Write) -> io::Result<()> {
    let json = serde_json::to_string(data)?.replace('<', "\\u003c");
    let title = data["argv"].as_str().unwrap_or("pydeep report");
    let escaped_title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        // No placeholder can come from the target's command line.
        .replace('{', "&#123;");
    let page = PAGE
        .replacen("{{TITLE}}", &escaped_title, 1)
        .replacen("{{STYLE}}", STYLE, 1)
        .replacen("{{SCRIPT}}", SCRIPT, 1);
    let (before, after) = page.split_once("{{DATA}}").unwrap_or((&page, ""));
    out.write_all(before.as_bytes())?;
    out.write_all(json.as_bytes())?;
    out.write_all(after.as_bytes())?;
    out.flush()
}
