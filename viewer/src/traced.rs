//! `pydeep-view top --trace`: exact calls from a trace window (`pydeep
//! trace`), per function: calls, total and own time, and percentiles of
//! each call's duration. Unlike the sampled `top`, nothing is estimated:
//! every call the window saw is counted with its real duration.
//!
//! Time rules: a call's duration is its return's time minus its call's;
//! own time is that minus its callees' durations; a recursive function's
//! total counts only its outermost calls (so no time is counted twice).
//! Returns of frames entered before the window (on an empty stack) and
//! calls still open when it ended are left out of the durations; their
//! calls are still counted.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, TraceClock};

/// One function's row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// "qualname (file:line)".
    pub function: String,
    /// Calls seen (generator resumptions count as calls, like cProfile's
    /// primitive calls do not: this is what the interpreter reported).
    pub calls: u64,
    /// Time inside the function and its callees (outermost calls only).
    pub total_ns: u64,
    /// Time inside the function itself.
    pub own_ns: u64,
    /// Durations of its completed calls, sorted.
    pub durations: Vec<u64>,
}

impl Row {
    /// The `q`-quantile (0..=1) of the call durations, 0 if none.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.durations.is_empty() {
            return 0;
        }
        let i = ((self.durations.len() - 1) as f64 * q).round() as usize;
        self.durations[i.min(self.durations.len() - 1)]
    }
}

/// What a trace window holds.
#[derive(Debug, Default)]
pub struct Calls {
    /// One row per function, by own time, largest first.
    pub rows: Vec<Row>,
    /// Events read.
    pub events: u64,
    /// Events the tracer dropped.
    pub lost: u64,
}

struct Open {
    frame: u64,
    start: u64,
    children: u64,
}

/// Reads every trace event of the recording at `path`.
pub fn read(path: &Path) -> Result<Calls, pydeep_format::FormatError> {
    let mut recording = Recording::open(path)?;
    let mut clock = TraceClock::new(recording.header().start_clock_ns);
    let mut rows: HashMap<u64, Row> = HashMap::new();
    let mut stacks: HashMap<u32, Vec<Open>> = HashMap::new();
    let mut active: HashMap<(u32, u64), u32> = HashMap::new();
    let mut calls = Calls::default();
    while let Some(event) = recording.next_event().transpose() {
        // A damaged tail ends the reading: what came before stands.
        let Ok(Event::TraceEvents(batch)) = event else {
            if event.is_err() {
                break;
            }
            continue;
        };
        calls.lost += batch.lost;
        for e in clock.decode(&batch) {
            calls.events += 1;
            let stack = stacks.entry(e.thread).or_default();
            match e.kind {
                TraceEventKind::TraceCall | TraceEventKind::TraceCCall => {
                    rows.entry(e.frame).or_default().calls += 1;
                    *active.entry((e.thread, e.frame)).or_default() += 1;
                    stack.push(Open {
                        frame: e.frame,
                        start: e.time_ns,
                        children: 0,
                    });
                }
                TraceEventKind::TraceReturn | TraceEventKind::TraceCReturn => {
                    if stack.last().map(|o| o.frame) != Some(e.frame) {
                        continue;
                    }
                    let Some(open) = stack.pop() else { continue };
                    let duration = e.time_ns.saturating_sub(open.start);
                    let depth = active.entry((e.thread, e.frame)).or_default();
                    *depth = depth.saturating_sub(1);
                    let outermost = *depth == 0;
                    let row = rows.entry(e.frame).or_default();
                    row.own_ns += duration.saturating_sub(open.children);
                    if outermost {
                        row.total_ns += duration;
                    }
                    row.durations.push(duration);
                    if let Some(parent) = stack.last_mut() {
                        parent.children += duration;
                    }
                }
                _ => {}
            }
        }
    }
    let tables = recording.tables();
    calls.rows = rows
        .into_iter()
        .map(|(frame, mut row)| {
            let code = tables
                .frames
                .get(&frame)
                .and_then(|f| tables.code_objects.get(&f.code));
            row.function = match code {
                Some(c) => {
                    let name = if c.qualname != 0 { c.qualname } else { c.name };
                    format!(
                        "{} ({}:{})",
                        tables.string(name),
                        tables.string(c.filename),
                        c.first_line
                    )
                }
                None => "<unknown>".into(),
            };
            row.durations.sort_unstable();
            row
        })
        .collect();
    calls
        .rows
        .sort_by(|a, b| b.own_ns.cmp(&a.own_ns).then(a.function.cmp(&b.function)));
    Ok(calls)
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// The table: one row per function, `limit` rows (0: all).
pub fn write(calls: &Calls, limit: usize, mut out: impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{} trace events, {} lost{}",
        calls.events,
        calls.lost,
        if calls.events == 0 {
            " (no trace window in this recording: record one with `pydeep trace PID`)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "{:>10} {:>12} {:>12} {:>10} {:>10} {:>10}  function",
        "calls", "total ms", "own ms", "p50 us", "p95 us", "max us"
    )?;
    let n = if limit == 0 { calls.rows.len() } else { limit };
    for row in calls.rows.iter().take(n) {
        writeln!(
            out,
            "{:>10} {:>12} {:>12} {:>10} {:>10} {:>10}  {}",
            row.calls,
            ms(row.total_ns),
            ms(row.own_ns),
            us(row.quantile(0.5)),
            us(row.quantile(0.95)),
            us(row.quantile(1.0)),
            row.function
        )?;
    }
    Ok(())
}
