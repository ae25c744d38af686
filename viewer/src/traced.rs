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
//! calls are still counted. So are calls the tracer's lost events cut
//! short (see [`CallStacks::lost`]): where events were dropped, no
//! duration is guessed.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;

use pydeep_format::proto::TraceEventKind;
use pydeep_format::{Event, Recording, TraceClock, TraceEvent};

use crate::aggregate::{Profile, StackCount, ThreadInfo};
use crate::input::{Input, Timed};
use crate::symbols::{Granularity, SymbolId, Symbols};

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
    /// How the tracer recorded calls, per window in order (the names of
    /// `TraceEventBatch.calls_by`; windows that did not say are left out).
    pub calls_by: Vec<String>,
    /// Functions CPython could have called past the windows' call events,
    /// summed over windows (`TraceEventBatch.unwatched_functions`).
    pub unwatched_functions: u64,
    /// Those the tracer named (`TraceEventBatch.unwatched_frame`), as rows
    /// name functions, each once, in the order the windows named them.
    pub unwatched_named: Vec<String>,
    /// Those the tracer counted but did not name (past its 32 a window, or
    /// a recording made before it named them), summed over windows.
    pub unwatched_unnamed: u64,
}

/// One call open on a thread's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenCall {
    /// FrameDef id of the called function.
    pub frame: u64,
    /// When it was called.
    pub start_ns: u64,
    /// Time spent in its completed callees so far.
    pub children_ns: u64,
}

/// What one trace event did to its thread's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A call: the frame is now on top, `depth` calls below it.
    Entered {
        /// Calls open below it.
        depth: usize,
    },
    /// A return matching the call on top, which is popped.
    Left {
        /// The call that ended.
        call: OpenCall,
        /// Calls still open below it.
        depth: usize,
    },
    /// Neither: a return on an empty stack (of a frame entered before the
    /// window) or not matching the call on top, an event inside a span of
    /// lost events, or another kind of event.
    Ignored,
}

/// Every thread's stack of open calls, fed the events of a recording in
/// order. The one place the trace views (`top --trace`, `chrome`,
/// `flamegraph --trace`) match returns to calls: a return counts only if it
/// names the call on top of its thread's stack. Memory is threads × depth.
///
/// Where the tracer dropped events (its ring was full: a batch's `lost`,
/// between `lost_first_ns` and `lost_last_ns`), any call or return may be
/// missing, on any thread, so no stack can be trusted across that span:
/// told of it with [`CallStacks::lost`], the stacks are cut at its start
/// ([`CallStacks::cut`]: the views end what was open there), and events
/// inside it are not matched. Without this, one lost return leaves its call
/// on the stack for good and later returns pair with the wrong calls
/// (durations longer than the window, own time above total).
#[derive(Debug, Default)]
pub struct CallStacks {
    stacks: HashMap<u32, Vec<OpenCall>>,
    /// The span of the latest lost events, (first, last) ns, until an
    /// event after it arrives.
    hole: Option<(u64, u64)>,
    /// The stacks were cut at the start of `hole`.
    cut: bool,
}

impl CallStacks {
    /// The batch about to be applied says the tracer dropped events
    /// between `first_ns` and `last_ns` (its `lost`, `lost_first_ns`,
    /// `lost_last_ns`; they all came after the previous batch's events).
    pub fn lost(&mut self, first_ns: u64, last_ns: u64) {
        self.hole = Some((first_ns, last_ns.max(first_ns)));
        self.cut = false;
    }

    /// Call before [`CallStacks::apply`] with each event: `Some(time)` when
    /// the event is the first at or past the start of lost events, so every
    /// call still open is cut there: the caller ends them at `time` (their
    /// durations unknown) and then calls [`CallStacks::clear_all`].
    pub fn cut(&mut self, event: &TraceEvent) -> Option<u64> {
        match self.hole {
            Some((first, _)) if !self.cut && event.time_ns >= first => {
                self.cut = true;
                Some(first)
            }
            _ => None,
        }
    }

    /// Forgets every open call of every thread.
    pub fn clear_all(&mut self) {
        self.stacks.values_mut().for_each(Vec::clear);
    }

    /// Applies `event` to its thread's stack (nothing inside a span of
    /// lost events: [`Step::Ignored`]).
    pub fn apply(&mut self, event: &TraceEvent) -> Step {
        if let Some((first, last)) = self.hole {
            if event.time_ns > last {
                self.hole = None;
            } else if event.time_ns >= first {
                return Step::Ignored;
            }
        }
        let stack = self.stacks.entry(event.thread).or_default();
        match event.kind {
            TraceEventKind::TraceCall | TraceEventKind::TraceCCall => {
                stack.push(OpenCall {
                    frame: event.frame,
                    start_ns: event.time_ns,
                    children_ns: 0,
                });
                Step::Entered {
                    depth: stack.len() - 1,
                }
            }
            TraceEventKind::TraceReturn | TraceEventKind::TraceCReturn => {
                if stack.last().map(|o| o.frame) != Some(event.frame) {
                    return Step::Ignored;
                }
                let Some(call) = stack.pop() else {
                    return Step::Ignored;
                };
                if let Some(parent) = stack.last_mut() {
                    parent.children_ns += event.time_ns.saturating_sub(call.start_ns);
                }
                Step::Left {
                    call,
                    depth: stack.len(),
                }
            }
            _ => Step::Ignored,
        }
    }

    /// The calls open on `thread`, outermost first.
    pub fn open(&self, thread: u32) -> &[OpenCall] {
        self.stacks.get(&thread).map_or(&[], Vec::as_slice)
    }

    /// Threads that have open calls, sorted by id.
    pub fn threads_with_open_calls(&self) -> Vec<u32> {
        let mut threads: Vec<u32> = self
            .stacks
            .iter()
            .filter(|(_, stack)| !stack.is_empty())
            .map(|(thread, _)| *thread)
            .collect();
        threads.sort_unstable();
        threads
    }

    /// Forgets every open call of `thread` (the window ended).
    pub fn clear(&mut self, thread: u32) {
        if let Some(stack) = self.stacks.get_mut(&thread) {
            stack.clear();
        }
    }
}

/// Reads every trace event of the recording at `path`.
pub fn read(path: &Path) -> Result<Calls, pydeep_format::FormatError> {
    let mut recording = Recording::open(path)?;
    let mut clock = TraceClock::new(recording.header().start_clock_ns);
    let mut rows: HashMap<u64, Row> = HashMap::new();
    let mut stacks = CallStacks::default();
    let mut active: HashMap<(u32, u64), u32> = HashMap::new();
    let mut calls = Calls::default();
    let mut unwatched_frames: Vec<u64> = Vec::new();
    while let Some(event) = recording.next_event().transpose() {
        // A damaged tail ends the reading: what came before stands.
        let Ok(Event::TraceEvents(batch)) = event else {
            if event.is_err() {
                break;
            }
            continue;
        };
        calls.lost += batch.lost;
        if batch.lost > 0 {
            stacks.lost(batch.lost_first_ns, batch.lost_last_ns);
        }
        if !batch.calls_by.is_empty() {
            calls.calls_by.push(batch.calls_by.clone());
        }
        calls.unwatched_functions += u64::from(batch.unwatched_functions);
        calls.unwatched_unnamed +=
            u64::from(batch.unwatched_functions).saturating_sub(batch.unwatched_frame.len() as u64);
        for frame in &batch.unwatched_frame {
            if !unwatched_frames.contains(frame) {
                unwatched_frames.push(*frame);
            }
        }
        for e in clock.decode(&batch) {
            calls.events += 1;
            if stacks.cut(&e).is_some() {
                stacks.clear_all();
                active.clear();
            }
            if matches!(
                e.kind,
                TraceEventKind::TraceCall | TraceEventKind::TraceCCall
            ) {
                rows.entry(e.frame).or_default().calls += 1;
            }
            match stacks.apply(&e) {
                Step::Entered { .. } => {
                    *active.entry((e.thread, e.frame)).or_default() += 1;
                }
                Step::Left { call, .. } => {
                    let duration = e.time_ns.saturating_sub(call.start_ns);
                    let depth = active.entry((e.thread, e.frame)).or_default();
                    *depth = depth.saturating_sub(1);
                    let outermost = *depth == 0;
                    let row = rows.entry(e.frame).or_default();
                    row.own_ns += duration.saturating_sub(call.children_ns);
                    if outermost {
                        row.total_ns += duration;
                    }
                    row.durations.push(duration);
                }
                Step::Ignored => {}
            }
        }
        if batch.window_end_ns != 0 {
            // Calls still open end with the window, their durations unknown.
            stacks.clear_all();
            active.clear();
        }
    }
    let tables = recording.tables();
    let mut named: Vec<String> = Vec::new();
    for frame in unwatched_frames {
        let label = function_label(tables, frame);
        if !named.contains(&label) {
            named.push(label);
        }
    }
    calls.unwatched_named = named;
    calls.rows = rows
        .into_iter()
        .map(|(frame, mut row)| {
            row.function = function_label(tables, frame);
            row.durations.sort_unstable();
            row
        })
        .collect();
    calls
        .rows
        .sort_by(|a, b| b.own_ns.cmp(&a.own_ns).then(a.function.cmp(&b.function)));
    Ok(calls)
}

/// "qualname (file:line)" of the function of FrameDef `frame` (`co_name`
/// where the recording has no qualified name), the target's strings
/// escaped ([`pydeep_format::Tables::name`]); "<unknown>" if the recording
/// does not define it.
fn function_label(tables: &pydeep_format::Tables, frame: u64) -> String {
    let code = tables
        .frames
        .get(&frame)
        .and_then(|f| tables.code_objects.get(&f.code));
    match code {
        Some(c) => {
            let name = if c.qualname != 0 { c.qualname } else { c.name };
            format!(
                "{} ({}:{})",
                tables.name(name),
                tables.name(c.filename),
                c.first_line
            )
        }
        None => "<unknown>".into(),
    }
}

/// Unwatched functions named in full by `top --trace`; past these, a count.
const UNWATCHED_NAMED_SHOWN: usize = 32;

/// The traced time of the rest of `input` as a [`Profile`] for the graphs
/// (`flamegraph --trace`): each stack of calls counts the nanoseconds its
/// innermost call ran itself (wall time between the thread's events while
/// that call was on top), so a frame's width is its total traced time.
/// Samples are skipped; only the calls the window saw form the stacks (its
/// roots are the outermost calls made during the window). Calls still open
/// when a window ends count up to its end.
pub fn profile<R: Read>(input: &mut Input<R>, granularity: Granularity) -> Profile {
    let header = input.header().clone();
    let mut clock = TraceClock::new(header.start_clock_ns);
    let mut symbols = Symbols::new(granularity).with_header(&header);
    let mut stacks = CallStacks::default();
    // Per thread: the symbols of its open calls, the time of its last
    // event, and nanoseconds per stack.
    let mut open: HashMap<u32, Vec<SymbolId>> = HashMap::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut counts: HashMap<u32, HashMap<Vec<SymbolId>, u64>> = HashMap::new();
    let mut time_range: Option<(u64, u64)> = None;
    let mut events = 0u64;
    let mut count = |thread: u32, stack: &[SymbolId], ns: u64| {
        if stack.is_empty() || ns == 0 {
            return;
        }
        let per_stack = counts.entry(thread).or_default();
        match per_stack.get_mut(stack) {
            Some(total) => *total += ns,
            None => {
                per_stack.insert(stack.to_vec(), ns);
            }
        }
    };
    while let Some(timed) = input.next_timed() {
        let Timed::Trace(batch) = timed else { continue };
        if batch.lost > 0 {
            stacks.lost(batch.lost_first_ns, batch.lost_last_ns);
        }
        for e in clock.decode(&batch) {
            events += 1;
            if let Some(at) = stacks.cut(&e) {
                // What was open counts up to the lost events, then ends.
                for thread in stacks.threads_with_open_calls() {
                    let stack = open.entry(thread).or_default();
                    if let Some(previous) = last.get(&thread) {
                        count(thread, stack, at.saturating_sub(*previous));
                    }
                    stack.clear();
                }
                stacks.clear_all();
                last.clear();
            }
            time_range = Some(match time_range {
                None => (e.time_ns, e.time_ns),
                Some((first, end)) => (first.min(e.time_ns), end.max(e.time_ns)),
            });
            let stack = open.entry(e.thread).or_default();
            if let Some(previous) = last.insert(e.thread, e.time_ns) {
                count(e.thread, stack, e.time_ns.saturating_sub(previous));
            }
            match stacks.apply(&e) {
                Step::Entered { .. } => stack.push(symbols.frame(input.tables(), e.frame)),
                Step::Left { .. } => {
                    stack.pop();
                }
                Step::Ignored => {}
            }
        }
        if batch.window_end_ns != 0 {
            for thread in stacks.threads_with_open_calls() {
                let stack = open.entry(thread).or_default();
                let previous = last.get(&thread).copied().unwrap_or(batch.window_end_ns);
                count(thread, stack, batch.window_end_ns.saturating_sub(previous));
                stack.clear();
                stacks.clear(thread);
            }
            last.clear();
        }
    }
    let tables = input.tables();
    let mut threads: BTreeMap<u32, ThreadInfo> = BTreeMap::new();
    let mut stack_counts = Vec::new();
    for (thread, per_stack) in counts {
        for (frames, ns) in per_stack {
            threads
                .entry(thread)
                .or_insert_with(|| ThreadInfo::from_tables(tables, thread))
                .samples += ns;
            stack_counts.push(StackCount {
                thread,
                frames,
                count: ns,
            });
        }
    }
    let label = |f: &SymbolId| symbols.get(*f).label.as_str();
    stack_counts.sort_by(|a, b| {
        a.thread
            .cmp(&b.thread)
            .then_with(|| a.frames.iter().map(label).cmp(b.frames.iter().map(label)))
    });
    let total = stack_counts.iter().map(|s| s.count).sum();
    Profile {
        header,
        symbols,
        stacks: stack_counts,
        threads,
        total,
        samples: events,
        read: input.samples_read(),
        time_range,
        damage: input.damage(),
        gaps: None,
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// The table: one row per function, `limit` rows (0: all).
pub fn write(calls: &Calls, limit: usize, mut out: impl Write) -> io::Result<()> {
    let mut ways = calls.calls_by.clone();
    ways.dedup();
    writeln!(
        out,
        "{} trace events, {} lost{}{}",
        calls.events,
        calls.lost,
        if ways.is_empty() {
            String::new()
        } else {
            format!("; calls recorded by {}", ways.join(", "))
        },
        if calls.events == 0 {
            " (no trace window in this recording: record one with `pydeep trace PID`)"
        } else {
            ""
        }
    )?;
    if calls.unwatched_functions > 0 {
        writeln!(
            out,
            "warning: {} function{} CPython can run inline (a class's __init__ on 3.13, \
             __getitem__ on 3.11.0-3.11.3) had no call events as a window ended: calls of {} \
             may be missing below",
            calls.unwatched_functions,
            if calls.unwatched_functions == 1 {
                ""
            } else {
                "s"
            },
            if calls.unwatched_functions == 1 {
                "it"
            } else {
                "them"
            },
        )?;
        for label in calls.unwatched_named.iter().take(UNWATCHED_NAMED_SHOWN) {
            writeln!(out, "  unwatched: {label}")?;
        }
        let more = calls.unwatched_unnamed
            + calls
                .unwatched_named
                .len()
                .saturating_sub(UNWATCHED_NAMED_SHOWN) as u64;
        if !calls.unwatched_named.is_empty() && more > 0 {
            writeln!(out, "  and {more} more, not named")?;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ns: u64, thread: u32, kind: TraceEventKind, frame: u64) -> TraceEvent {
        TraceEvent {
            time_ns,
            thread,
            kind,
            frame,
        }
    }
    use TraceEventKind::{TraceCall as CALL, TraceReturn as RETURN};

    /// Feeds `events` (with the lost span of their batch, if any) the way
    /// the views do, returning every step.
    fn steps(events: &[TraceEvent], lost: Option<(u64, u64)>) -> (Vec<Step>, Vec<u64>) {
        let mut stacks = CallStacks::default();
        if let Some((first, last)) = lost {
            stacks.lost(first, last);
        }
        let mut cuts = Vec::new();
        let steps = events
            .iter()
            .map(|e| {
                if let Some(at) = stacks.cut(e) {
                    cuts.push(at);
                    stacks.clear_all();
                }
                stacks.apply(e)
            })
            .collect();
        (steps, cuts)
    }

    #[test]
    fn a_return_pairs_with_the_call_on_top_only() {
        let (steps, cuts) = steps(
            &[
                event(10, 1, RETURN, 7), // entered before the window
                event(20, 1, CALL, 1),
                event(30, 1, CALL, 2),
                event(40, 1, RETURN, 1), // not the call on top
                event(50, 1, RETURN, 2),
                event(60, 1, RETURN, 1),
            ],
            None,
        );
        assert!(cuts.is_empty());
        assert_eq!(steps[0], Step::Ignored);
        assert_eq!(steps[3], Step::Ignored);
        assert!(matches!(steps[4], Step::Left { call, depth: 1 } if call.start_ns == 30));
        assert!(matches!(steps[5], Step::Left { call, depth: 0 }
            if call.start_ns == 20 && call.children_ns == 20));
    }

    /// Thread 1's return of frame 2 and thread 2's call of frame 3 were
    /// among the lost events (between 35 and 45): without the cut, frame
    /// 1's return would pair with frame 1's outer call after the recursion
    /// was broken, and frame 2 would stay open for good.
    #[test]
    fn lost_events_cut_every_stack_and_nothing_inside_them_pairs() {
        let (steps, cuts) = steps(
            &[
                event(10, 1, CALL, 1),
                event(20, 1, CALL, 2),
                event(30, 2, CALL, 4),
                event(40, 2, RETURN, 4), // inside the lost span
                event(50, 1, RETURN, 1),
                event(60, 2, CALL, 5),
                event(70, 2, RETURN, 5),
            ],
            Some((35, 45)),
        );
        assert_eq!(cuts, vec![35], "cut once, at the first lost event");
        assert_eq!(steps[3], Step::Ignored, "no pairing inside the span");
        assert_eq!(steps[4], Step::Ignored, "frame 1's call was cut");
        assert!(matches!(steps[5], Step::Entered { depth: 0 }));
        assert!(matches!(steps[6], Step::Left { call, depth: 0 } if call.start_ns == 60));
    }

    #[test]
    fn unwatched_functions_are_listed_escaped_with_the_count_of_those_not_named() {
        let mut tables = pydeep_format::Tables::default();
        tables.strings.insert(1, "evil\x1b[2J".into());
        tables.strings.insert(2, "app.py".into());
        tables.code_objects.insert(
            5,
            pydeep_format::proto::CodeObjectDef {
                id: 5,
                filename: 2,
                name: 1,
                first_line: 7,
                ..Default::default()
            },
        );
        tables.frames.insert(
            9,
            pydeep_format::proto::FrameDef {
                id: 9,
                code: 5,
                ..Default::default()
            },
        );
        let label = function_label(&tables, 9);
        assert_eq!(label, "evil\\x1b[2J (app.py:7)");
        assert_eq!(function_label(&tables, 10), "<unknown>");
        let calls = Calls {
            unwatched_functions: 3,
            unwatched_named: vec![label],
            unwatched_unnamed: 2,
            ..Default::default()
        };
        let mut out = Vec::new();
        write(&calls, 0, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("warning: 3 functions"), "{out}");
        assert!(
            out.contains("\n  unwatched: evil\\x1b[2J (app.py:7)\n"),
            "{out}"
        );
        assert!(out.contains("\n  and 2 more, not named\n"), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
    }
}
