//! Chrome's trace-event JSON: a per-thread timeline that Perfetto and
//! chrome://tracing load.
//!
//! Samples are streamed in recording order. Each thread keeps only its open
//! stack: a sample whose stack shares a prefix with the previous sample of
//! the thread keeps those frames open, closes ("E") the frames that left and
//! opens ("B") the frames that came.
//!
//! Time follows the one rule of every output: a sample stands for its
//! weight in sampler ticks (1, plus the ticks the sampler missed right
//! before it) times the sampling period (from the header's rate). So a
//! sample of weight `w` taken at `t` covers `[t - (w-1)·period, t + period)`,
//! moved later if that would overlap the thread's previous sample or begin
//! before the recording's start (its timeline's zero), and each
//! thread's outermost events add up to its ticks × period, as its total
//! does in `top`, pprof and speedscope. When a sample's span starts more
//! than half a period after the previous one ended (an idle gap, filtered
//! samples), the open frames close at that end and a new stretch begins.
//! Memory is bounded by distinct stacks (the stack cache) and threads times
//! depth.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::rc::Rc;

use pydeep_format::{proto, Tables, TraceClock};

use crate::aggregate::{sample_period_ns, ThreadInfo};
use crate::filter::Filter;
use crate::input::{Input, Timed};
use crate::symbols::{Granularity, SymbolId, Symbols};
use crate::traced::{CallStacks, Step};

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChromeSummary {
    /// Samples placed on the timeline (after filtering).
    pub samples: u64,
    /// Sampler ticks they stand for: the timeline spans ticks × period.
    pub ticks: u64,
    /// Begin/end events written.
    pub events: u64,
    /// Traced calls drawn as slices (trace windows of `pydeep trace`).
    pub calls: u64,
    /// Why the recording ended early, if it did: the caller should warn.
    pub damage: Option<String>,
}

struct ThreadState {
    pid: u32,
    tid: u64,
    /// `,"pid":P,"tid":T}` rendered once.
    suffix: String,
    open: Rc<[SymbolId]>,
    /// Where the span of the thread's previous sample ended.
    end_ns: u64,
}

/// Added to a thread's id for the track of its traced calls when the
/// recording also has samples (`record --trace`): a track holds one
/// nesting of slices, and the samples' spans and the traced calls nest
/// differently. Linux thread ids stay below 2^22 (`pid_max`), so the sum
/// names no real thread and still fits Perfetto's 32-bit tids.
pub const TRACED_TRACK_OFFSET: u64 = 1 << 30;

impl ThreadState {
    /// A thread's track before its first event.
    fn new(info: &ThreadInfo) -> Self {
        ThreadState::on_track(info, info.tid())
    }

    /// A track `tid` of `info`'s process.
    fn on_track(info: &ThreadInfo, tid: u64) -> Self {
        ThreadState {
            pid: info.pid,
            tid,
            suffix: format!(r#","pid":{},"tid":{}}}"#, info.pid, tid),
            open: Rc::from(Vec::new()),
            end_ns: 0,
        }
    }
}

struct Writer<W: Write> {
    out: W,
    start_ns: u64,
    first: bool,
    events: u64,
    names: Vec<Option<String>>,
    /// Processes whose name was written.
    processes: HashSet<u32>,
}

impl<W: Write> Writer<W> {
    fn separator(&mut self) -> io::Result<()> {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.out.write_all(b",\n")
        }
    }

    /// Writes `time_ns` as microseconds after the start with three decimals
    /// (nanosecond precision), without allocating: this runs per event.
    fn timestamp(&mut self, time_ns: u64) -> io::Result<()> {
        let relative = time_ns.saturating_sub(self.start_ns);
        let mut digits = [0u8; 24];
        let mut at = digits.len();
        let mut rest = relative;
        for place in 0.. {
            if place == 3 {
                at -= 1;
                digits[at] = b'.';
            }
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 && place >= 3 {
                break;
            }
        }
        self.out.write_all(&digits[at..])
    }

    fn begin(
        &mut self,
        symbols: &Symbols,
        thread: &ThreadState,
        symbol: SymbolId,
        time_ns: u64,
    ) -> io::Result<()> {
        let index = symbol as usize;
        if self.names.len() <= index {
            self.names.resize(index + 1, None);
        }
        if self.names[index].is_none() {
            self.names[index] = Some(json_string(&symbols.get(symbol).label));
        }
        self.separator()?;
        self.out.write_all(br#"{"ph":"B","name":"#)?;
        let name = self.names[index].as_deref().unwrap_or("\"\"");
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(br#","ts":"#)?;
        self.timestamp(time_ns)?;
        self.out.write_all(thread.suffix.as_bytes())?;
        self.events += 1;
        Ok(())
    }

    fn end(&mut self, thread: &ThreadState, time_ns: u64) -> io::Result<()> {
        self.separator()?;
        self.out.write_all(br#"{"ph":"E","ts":"#)?;
        self.timestamp(time_ns)?;
        self.out.write_all(thread.suffix.as_bytes())?;
        self.events += 1;
        Ok(())
    }

    fn metadata(&mut self, kind: &str, pid: u32, tid: Option<u64>, name: &str) -> io::Result<()> {
        self.separator()?;
        let tid = tid
            .map(|tid| format!(r#","tid":{tid}"#))
            .unwrap_or_default();
        write!(
            self.out,
            r#"{{"ph":"M","name":"{kind}","pid":{pid}{tid},"args":{{"name":{}}}}}"#,
            json_string(name)
        )
    }

    /// Names `info`'s track (its process's too, the first time), with
    /// `suffix` after the thread's description.
    fn announce<R: Read>(
        &mut self,
        input: &Input<R>,
        info: &ThreadInfo,
        tid: u64,
        suffix: &str,
    ) -> io::Result<()> {
        let header = input.header();
        if self.processes.insert(info.pid) {
            let argv = input.process_argv(info.pid);
            let name = if !argv.is_empty() {
                argv.join(" ")
            } else if info.pid == header.pid && !header.executable.is_empty() {
                header.executable.clone()
            } else {
                format!("process {}", info.pid)
            };
            self.metadata("process_name", info.pid, None, &name)?;
        }
        let name = format!("{}{suffix}", info.describe());
        self.metadata("thread_name", info.pid, Some(tid), &name)
    }

    /// Closes the frames of `thread` beyond the first `keep`, innermost first.
    fn close(&mut self, thread: &mut ThreadState, keep: usize, time_ns: u64) -> io::Result<()> {
        for _ in keep..thread.open.len() {
            self.end(thread, time_ns)?;
        }
        Ok(())
    }
}

/// The trace windows of the recording (`pydeep trace`), drawn as they
/// happened: each call a slice from its call to its return, nested as the
/// calls were, on its thread's track. A return that matches no open call (of
/// a frame entered before the window) draws nothing; calls still open when
/// the window ends close at its end.
struct Traced {
    clock: TraceClock,
    stacks: CallStacks,
    /// Per ThreadDef id: the thread's `,"pid":P,"tid":T}`.
    tracks: HashMap<u32, ThreadState>,
    /// Time of the latest trace event.
    last_ns: u64,
    /// Calls drawn.
    calls: u64,
    /// 0, or [`TRACED_TRACK_OFFSET`] if the recording may have samples of
    /// the same threads.
    track_offset: u64,
}

impl Traced {
    fn new(start_clock_ns: u64, track_offset: u64) -> Self {
        Traced {
            track_offset,
            clock: TraceClock::new(start_clock_ns),
            stacks: CallStacks::default(),
            tracks: HashMap::new(),
            last_ns: start_clock_ns,
            calls: 0,
        }
    }

    fn batch<R: Read, W: Write>(
        &mut self,
        batch: &proto::TraceEventBatch,
        input: &Input<R>,
        symbols: &mut Symbols,
        writer: &mut Writer<W>,
    ) -> io::Result<()> {
        if batch.lost > 0 {
            self.stacks.lost(batch.lost_first_ns, batch.lost_last_ns);
        }
        for event in self.clock.decode(batch) {
            if let Some(at) = self.stacks.cut(&event) {
                // Calls open where the tracer lost events end there.
                self.close_open(writer, at.max(self.last_ns))?;
            }
            self.last_ns = self.last_ns.max(event.time_ns);
            let step = self.stacks.apply(&event);
            if step == Step::Ignored {
                continue;
            }
            let track = match self.tracks.entry(event.thread) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let info = ThreadInfo::from_tables(input.tables(), event.thread);
                    let tid = info.tid() + self.track_offset;
                    writer.announce(input, &info, tid, " traced calls")?;
                    entry.insert(ThreadState::on_track(&info, tid))
                }
            };
            match step {
                Step::Entered { .. } => {
                    let symbol = symbols.frame(input.tables(), event.frame);
                    writer.begin(symbols, track, symbol, event.time_ns)?;
                    self.calls += 1;
                }
                Step::Left { .. } => writer.end(track, event.time_ns)?,
                Step::Ignored => {}
            }
        }
        if batch.window_end_ns != 0 {
            self.close_open(writer, batch.window_end_ns.max(self.last_ns))?;
        }
        Ok(())
    }

    /// Closes every call still open at `time_ns`, innermost first.
    fn close_open<W: Write>(&mut self, writer: &mut Writer<W>, time_ns: u64) -> io::Result<()> {
        for thread in self.stacks.threads_with_open_calls() {
            if let Some(track) = self.tracks.get(&thread) {
                for _ in self.stacks.open(thread) {
                    writer.end(track, time_ns)?;
                }
            }
            self.stacks.clear(thread);
        }
        Ok(())
    }

    /// After the last batch: a window without its end (the recording was
    /// cut) closes at its last event.
    fn finish<W: Write>(&mut self, writer: &mut Writer<W>) -> io::Result<()> {
        let end = self.last_ns;
        self.close_open(writer, end)
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// Streams the rest of `input` as a trace-event JSON file into `out`.
pub fn write<R: Read>(
    input: &mut Input<R>,
    filter: &Filter,
    granularity: Granularity,
    out: impl Write,
) -> io::Result<ChromeSummary> {
    let header = input.header().clone();
    let period = sample_period_ns(&header);
    // A span starting more than half a period after the previous one of its
    // thread ended starts a new stretch; a closer one continues it.
    let gap = period / 2;
    let mut bound = filter.bind(&header);
    let mut symbols = Symbols::new(granularity).with_header(&header);
    let mut stacks: HashMap<u64, Rc<[SymbolId]>> = HashMap::new();
    let mut threads: HashMap<u32, ThreadState> = HashMap::new();
    let mut writer = Writer {
        out: io::BufWriter::with_capacity(1 << 16, out),
        start_ns: header.start_clock_ns,
        first: true,
        events: 0,
        names: Vec::new(),
        processes: HashSet::new(),
    };
    writer
        .out
        .write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
    let mut samples = 0u64;
    let mut ticks = 0u64;
    let mut scratch = Vec::new();
    // A `pydeep trace` recording has no samples: its traced calls keep the
    // threads' own tracks; any other (`record --trace`) may have both.
    let track_offset = if header.mode == "trace" {
        0
    } else {
        TRACED_TRACK_OFFSET
    };
    let mut traced = Traced::new(header.start_clock_ns, track_offset);
    while let Some(timed) = input.next_timed() {
        let sample = match timed {
            Timed::Sample(sample) => sample,
            Timed::Trace(batch) => {
                traced.batch(&batch, input, &mut symbols, &mut writer)?;
                continue;
            }
        };
        let tables: &Tables = input.tables();
        if !bound.accepts(tables, &sample) {
            continue;
        }
        samples += 1;
        let weight = u64::from(sample.weight.max(1));
        ticks += weight;
        let stack = stacks
            .entry(sample.stack)
            .or_insert_with(|| {
                scratch.clear();
                symbols.resolve_stack(tables, sample.stack, &mut scratch);
                Rc::from(scratch.as_slice())
            })
            .clone();
        let thread = match threads.entry(sample.thread) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let info = ThreadInfo::from_tables(tables, sample.thread);
                writer.announce(input, &info, info.tid(), "")?;
                entry.insert(ThreadState::new(&info))
            }
        };
        let covered = (weight - 1).saturating_mul(period);
        // Moved later, never clipped, when it would begin before the
        // recording's start (a first tick taken late stands for the ticks
        // missed before it) or overlap the thread's previous sample.
        let span_start = sample
            .time_ns
            .saturating_sub(covered)
            .max(thread.end_ns)
            .max(writer.start_ns);
        let time = if !thread.open.is_empty() && span_start - thread.end_ns <= gap {
            thread.end_ns
        } else {
            writer.close(thread, 0, thread.end_ns)?;
            thread.open = Rc::from(Vec::new());
            span_start
        };
        let common = thread
            .open
            .iter()
            .zip(stack.iter())
            .take_while(|(a, b)| a == b)
            .count();
        writer.close(thread, common, time)?;
        for &symbol in &stack[common..] {
            writer.begin(&symbols, thread, symbol, time)?;
        }
        thread.open = stack;
        thread.end_ns = time + weight.saturating_mul(period);
    }
    let mut remaining: Vec<&mut ThreadState> = threads.values_mut().collect();
    remaining.sort_by_key(|thread| (thread.pid, thread.tid));
    for thread in remaining {
        let end = thread.end_ns;
        writer.close(thread, 0, end)?;
    }
    traced.finish(&mut writer)?;
    writer.out.write_all(b"\n]}\n")?;
    writer.out.flush()?;
    Ok(ChromeSummary {
        samples,
        ticks,
        events: writer.events,
        calls: traced.calls,
        damage: input.damage(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(start_ns: u64, time_ns: u64) -> String {
        let mut writer = Writer {
            out: Vec::new(),
            start_ns,
            first: true,
            events: 0,
            names: Vec::new(),
            processes: HashSet::new(),
        };
        writer.timestamp(time_ns).unwrap();
        String::from_utf8(writer.out).unwrap()
    }

    #[test]
    fn timestamps_are_microseconds_with_nanosecond_decimals() {
        assert_eq!(timestamp(0, 0), "0.000");
        assert_eq!(timestamp(0, 7), "0.007");
        assert_eq!(timestamp(0, 999), "0.999");
        assert_eq!(timestamp(0, 1_000), "1.000");
        assert_eq!(timestamp(100, 1_234_667), "1234.567");
        assert_eq!(timestamp(0, u64::MAX), "18446744073709551.615");
        assert_eq!(
            timestamp(50, 10),
            "0.000",
            "times before the start clamp to 0"
        );
    }
}
