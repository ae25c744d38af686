//! `lines`: a source file with each line's share of the samples in a gutter.
//!
//! The profile must be resolved at line granularity. "Own" counts samples
//! whose innermost frame is on the line; "total" counts samples with the line
//! anywhere on the stack (once per sample, even under recursion).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, Tables, TraceClock};

use crate::aggregate::Profile;
use crate::ViewError;

/// Samples counted against one source line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineShare {
    /// Samples whose innermost frame was on the line.
    pub own: u64,
    /// Samples with the line anywhere on the stack.
    pub total: u64,
}

/// Finds the file name the recording uses for `source`: the same string, the
/// same file after resolving links, or the only recorded file whose path ends
/// with the components of `source`.
pub fn recorded_file(profile: &Profile, source: &str) -> Result<String, ViewError> {
    let mut samples_per_file: HashMap<&str, u64> = HashMap::new();
    for stack in &profile.stacks {
        for &frame in &stack.frames {
            let file = profile.symbols.get(frame).file.as_str();
            if !file.is_empty() {
                *samples_per_file.entry(file).or_insert(0) += stack.count;
            }
        }
    }
    pick_file(samples_per_file, source)
}

/// The recorded file `source` names among `samples_per_file` (a weight
/// per recorded file name, used to suggest candidates).
fn pick_file(samples_per_file: HashMap<&str, u64>, source: &str) -> Result<String, ViewError> {
    if samples_per_file.contains_key(source) {
        return Ok(source.to_string());
    }
    if let Ok(wanted) = Path::new(source).canonicalize() {
        let same = samples_per_file
            .keys()
            .find(|file| Path::new(file).canonicalize().ok().as_ref() == Some(&wanted));
        if let Some(file) = same {
            return Ok(file.to_string());
        }
    }
    let suffix: BTreeSet<&str> = samples_per_file
        .keys()
        .copied()
        .filter(|file| Path::new(file).ends_with(source))
        .collect();
    if suffix.len() == 1 {
        return Ok(suffix.into_iter().next().unwrap_or_default().to_string());
    }
    let mut files: Vec<(&str, u64)> = if suffix.is_empty() {
        samples_per_file.into_iter().collect()
    } else {
        suffix
            .into_iter()
            .map(|file| (file, samples_per_file[file]))
            .collect()
    };
    files.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let candidates: Vec<&str> = files.iter().take(5).map(|(file, _)| *file).collect();
    Err(ViewError::SourceNotSampled {
        path: source.to_string(),
        candidates: if candidates.is_empty() {
            "none (no samples)".into()
        } else {
            candidates.join(", ")
        },
    })
}

/// Own and total samples per line of `file` (a file name as recorded).
pub fn line_shares(profile: &Profile, file: &str) -> BTreeMap<u32, LineShare> {
    let mut shares: BTreeMap<u32, LineShare> = BTreeMap::new();
    let mut seen: BTreeSet<u32> = BTreeSet::new();
    for stack in &profile.stacks {
        seen.clear();
        for (depth, &frame) in stack.frames.iter().enumerate() {
            let symbol = profile.symbols.get(frame);
            if symbol.file != file || symbol.line == 0 {
                continue;
            }
            let share = shares.entry(symbol.line).or_default();
            if seen.insert(symbol.line) {
                share.total += stack.count;
            }
            if depth + 1 == stack.frames.len() {
                share.own += stack.count;
            }
        }
    }
    shares
}

/// The largest source file `lines` reads from disk.
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// The text of `source`: from disk, or else as embedded in the recording
/// under the recorded name `file`.
pub fn source_text(tables: &Tables, source: &Path, file: &str) -> Result<String, ViewError> {
    match pydeep_format::files::read_limited(source, MAX_SOURCE_BYTES) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(error) => tables
            .file_text(file)
            .ok_or_else(|| ViewError::SourceUnavailable {
                path: source.display().to_string(),
                reason: error.to_string(),
            }),
    }
}

/// Writes `text` with a gutter of own and total shares per line.
pub fn write(profile: &Profile, file: &str, text: &str, mut out: impl Write) -> io::Result<()> {
    let shares = line_shares(profile, file);
    let in_file: u64 = shares.values().map(|s| s.own).sum();
    writeln!(
        out,
        "{file}: {} samples counted, {in_file} with their innermost frame in this file",
        profile.total
    )?;
    writeln!(out, "{:>7} {:>7} {:>6}", "%Own", "%Total", "Line")?;
    let percent = |n: u64| {
        if n == 0 || profile.total == 0 {
            String::new()
        } else {
            format!("{:.2}%", 100.0 * n as f64 / profile.total as f64)
        }
    };
    let mut last_line = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index as u32 + 1;
        last_line = number;
        let share = shares.get(&number).copied().unwrap_or_default();
        writeln!(
            out,
            "{:>7} {:>7} {:>6} | {line}",
            percent(share.own),
            percent(share.total),
            number
        )?;
    }
    // Samples on lines past the end mean the file changed since recording.
    let beyond: u64 = shares.range(last_line + 1..).map(|(_, s)| s.total).sum();
    if beyond > 0 {
        writeln!(
            out,
            "({beyond} samples fall on lines past the end of the file: it has changed since the recording)"
        )?;
    }
    out.flush()
}

/// Exact line events of one source line (`lines --trace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineHits {
    /// Times the line started executing (line events).
    pub hits: u64,
    /// Nanoseconds from each of its line events to the thread's next traced
    /// event: the line's own time plus that of whatever it called that the
    /// window did not trace (with `--functions`, the code not selected).
    pub time_ns: u64,
}

/// The line events of a trace window (`pydeep trace --lines`), per file
/// name as recorded and line.
pub type TracedLines = HashMap<String, BTreeMap<u32, LineHits>>;

/// Reads every line event of the recording at `path`, and its tables (for
/// the source text it embeds). A damaged tail ends the reading: what came
/// before stands.
pub fn traced_lines(path: &Path) -> Result<(TracedLines, Tables), pydeep_format::FormatError> {
    let mut recording = Recording::open(path)?;
    let mut clock = TraceClock::new(recording.header().start_clock_ns);
    // Per thread: the frame and time of its last line event not yet timed.
    let mut pending: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut per_frame: HashMap<u64, LineHits> = HashMap::new();
    while let Some(event) = recording.next_event().transpose() {
        let Ok(Event::TraceEvents(batch)) = event else {
            if event.is_err() {
                break;
            }
            continue;
        };
        for e in clock.decode(&batch) {
            if let Some((frame, since)) = pending.remove(&e.thread) {
                per_frame.entry(frame).or_default().time_ns += e.time_ns.saturating_sub(since);
            }
            if e.kind == TraceEventKind::TraceLine {
                per_frame.entry(e.frame).or_default().hits += 1;
                pending.insert(e.thread, (e.frame, e.time_ns));
            }
        }
    }
    let tables = recording.tables();
    let mut lines = TracedLines::new();
    for (frame, hits) in per_frame {
        let Some(def) = tables.frames.get(&frame) else {
            continue;
        };
        let file = tables
            .code_objects
            .get(&def.code)
            .map(|c| tables.string(c.filename).to_owned())
            .unwrap_or_default();
        let entry = lines.entry(file).or_default().entry(def.line).or_default();
        entry.hits += hits.hits;
        entry.time_ns += hits.time_ns;
    }
    Ok((lines, tables.clone()))
}

/// The file name the trace window's line events use for `source` (same
/// rules as [`recorded_file`]).
pub fn traced_file(lines: &TracedLines, source: &str) -> Result<String, ViewError> {
    let weights = lines
        .iter()
        .filter(|(file, _)| !file.is_empty())
        .map(|(file, hits)| (file.as_str(), hits.values().map(|h| h.hits).sum()))
        .collect();
    pick_file(weights, source)
}

/// Writes `text` with a gutter of exact hits and time per line, as
/// line_profiler does: `Hits` (line events), `Time` (ms, see
/// [`LineHits::time_ns`]) and `Per hit` (µs).
pub fn write_traced(
    lines: &TracedLines,
    file: &str,
    text: &str,
    mut out: impl Write,
) -> io::Result<()> {
    let empty = BTreeMap::new();
    let hits = lines.get(file).unwrap_or(&empty);
    let total: u64 = hits.values().map(|h| h.hits).sum();
    writeln!(
        out,
        "{file}: {total} line events in this file (exact, from the trace window)"
    )?;
    writeln!(
        out,
        "{:>10} {:>11} {:>11} {:>6}",
        "Hits", "Time (ms)", "Per hit us", "Line"
    )?;
    let mut last_line = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index as u32 + 1;
        last_line = number;
        match hits.get(&number).filter(|h| h.hits > 0) {
            Some(h) => writeln!(
                out,
                "{:>10} {:>11.3} {:>11.3} {:>6} | {line}",
                h.hits,
                h.time_ns as f64 / 1e6,
                h.time_ns as f64 / 1e3 / h.hits as f64,
                number
            )?,
            None => writeln!(
                out,
                "{:>10} {:>11} {:>11} {:>6} | {line}",
                "", "", "", number
            )?,
        }
    }
    let beyond: u64 = hits.range(last_line + 1..).map(|(_, h)| h.hits).sum();
    if beyond > 0 {
        writeln!(
            out,
            "({beyond} line events fall on lines past the end of the file: it has changed since the recording)"
        )?;
    }
    out.flush()
}
