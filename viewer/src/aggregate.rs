//! Counts samples per distinct stack.
//!
//! The recording is streamed once; each sample that passes the filter adds
//! one to the count of its (thread, stack id) pair. Stacks are resolved into
//! symbols once per distinct pair at the end, so memory is bounded by the
//! number of distinct stacks, whatever the number of samples.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;

use pydeep_format::proto::SampleFlag;
use pydeep_format::{proto, IdTable, Tables};

use crate::filter::Filter;
use crate::input::Input;
use crate::symbols::{Granularity, SymbolId, Symbols};

/// Samples of one thread with one call stack (symbols outermost first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackCount {
    /// The file-local thread id.
    pub thread: u32,
    /// The stack's symbols, outermost first; never empty.
    pub frames: Vec<SymbolId>,
    /// How many samples had this thread and stack.
    pub count: u64,
}

/// A thread as the recording last defined it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The file-local thread id that samples use.
    pub id: u32,
    /// Process id.
    pub pid: u32,
    /// The kernel's thread id (0 if unknown).
    pub native_id: u64,
    /// The pthread id.
    pub thread_id: u64,
    /// The name `threading` knows it by ("" if unnamed).
    pub name: String,
    /// True for the main thread.
    pub is_main: bool,
    /// Sampler ticks counted for this thread: its samples' weights (see
    /// [`Profile::stacks`]); times the period, its time in every output.
    pub samples: u64,
}

impl ThreadInfo {
    /// The thread `id` as `tables` define it (defaults if undefined).
    pub fn from_tables(tables: &Tables, id: u32) -> Self {
        match tables.threads.get(&id) {
            Some(thread) => ThreadInfo {
                id,
                pid: thread.pid,
                native_id: thread.native_id,
                thread_id: thread.thread_id,
                name: tables.name(thread.name).into_owned(),
                is_main: thread.is_main,
                samples: 0,
            },
            None => ThreadInfo {
                id,
                ..ThreadInfo::default()
            },
        }
    }

    /// The kernel thread id if known, else the file-local id: what trace
    /// viewers show as "tid".
    pub fn tid(&self) -> u64 {
        if self.native_id != 0 {
            self.native_id
        } else {
            u64::from(self.id)
        }
    }

    /// A display name such as `MainThread (pid 12, tid 34)`.
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() {
            format!("thread {}", self.id)
        } else {
            self.name.clone()
        };
        format!("{name} (pid {}, tid {})", self.pid, self.tid())
    }
}

/// What [`Profile::read_with`] adds to the stacks. The default adds nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileOptions {
    /// Ends every stack with a pseudo-frame saying what the thread was doing:
    /// [`IDLE_LABEL`] (not running: in a syscall, a lock or a sleep),
    /// [`GIL_LABEL`] (running, holding the GIL) or [`NO_GIL_LABEL`] (running
    /// without the GIL: native code that released it, or waiting for it);
    /// on a free-threaded target (no GIL) every running sample ends in
    /// [`FREE_THREADED_RUNNING_LABEL`]. Default false.
    pub thread_states: bool,
}

/// The pseudo-frame on top of the stack of samples taken while the
/// interpreter's garbage collector ran on the thread (flag GC): the time
/// is the collector's, not the allocating frame's. Always shown.
pub const GC_LABEL: &str = "<gc>";
/// The pseudo-frame of samples of an idle thread (flag ACTIVE unset).
pub const IDLE_LABEL: &str = "<idle>";
/// The pseudo-frame of samples of a running thread holding the GIL.
pub const GIL_LABEL: &str = "<GIL held>";
/// The pseudo-frame of samples of a running thread not holding the GIL.
pub const NO_GIL_LABEL: &str = "<no GIL>";

/// The pseudo-frame of samples of a running thread of a free-threaded
/// target (PEP 703): there is no GIL to hold or lack.
pub const FREE_THREADED_RUNNING_LABEL: &str = "<running (free-threaded: no GIL)>";

/// True if the recording's target was a free-threaded CPython (no GIL).
pub fn free_threaded(header: &proto::Header) -> bool {
    header
        .python_version
        .as_ref()
        .is_some_and(|version| version.free_threaded)
}

/// The thread state a sample's flags give (an index into [`STATE_LABELS`]).
fn thread_state(flags: u32) -> u8 {
    if flags & SampleFlag::Active as u32 == 0 {
        0
    } else if flags & SampleFlag::HoldsGil as u32 != 0 {
        1
    } else {
        2
    }
}

const STATE_LABELS: [&str; 3] = [IDLE_LABEL, GIL_LABEL, NO_GIL_LABEL];

/// The aggregated samples of a recording, after filtering.
#[derive(Debug)]
pub struct Profile {
    /// The recording's header.
    pub header: proto::Header,
    /// Symbols that `stacks` refer to.
    pub symbols: Symbols,
    /// Sample counts per thread and stack, sorted by thread then stack.
    /// Each sample counts its weight: the sampler ticks it stands for (more
    /// than 1 after ticks the sampler missed), so counts are shares of time.
    pub stacks: Vec<StackCount>,
    /// Threads that have samples in `stacks`, by file-local id.
    pub threads: BTreeMap<u32, ThreadInfo>,
    /// Sampler ticks counted (after filtering): the samples' weights.
    pub total: u64,
    /// Samples counted (after filtering), each once.
    pub samples: u64,
    /// Samples read (before filtering).
    pub read: u64,
    /// Stream-clock time of the first and last counted sample.
    pub time_range: Option<(u64, u64)>,
    /// Why the recording ended early, if it did: the caller should warn.
    pub damage: Option<String>,
    /// The time the sampler did not observe, if any (`Input::gap_note`):
    /// the caller should say so.
    pub gaps: Option<String>,
}

impl Profile {
    /// Reads the rest of `input`, counting samples that pass `filter`, with
    /// frames resolved at `granularity`.
    pub fn read<R: Read>(input: &mut Input<R>, filter: &Filter, granularity: Granularity) -> Self {
        Self::read_with(input, filter, granularity, &ProfileOptions::default())
    }

    /// [`Profile::read`] with `options` (thread states as pseudo-frames).
    pub fn read_with<R: Read>(
        input: &mut Input<R>,
        filter: &Filter,
        granularity: Granularity,
        options: &ProfileOptions,
    ) -> Self {
        let mut bound = filter.bind(input.header());
        let with_states = options.thread_states;
        let mut symbols = Symbols::new(granularity).with_header(input.header());
        // Each distinct stack is resolved once, when first met, into a node
        // of the tree of symbol paths: stacks that differ only where the
        // view does not look (another line or instruction, at function
        // granularity) are one node, so what is counted grows with what
        // is shown, not with the stacks the file defines (issue #14 item 9).
        let mut paths = SymbolPaths::default();
        let mut path_of_stack: IdTable<u32> = IdTable::new();
        let mut frames: Vec<SymbolId> = Vec::new();
        // (thread, path, thread state or u8::MAX, collector running).
        let mut counts: IdMap<(u32, u32, u8, bool), u64> = IdMap::default();
        let mut total = 0u64;
        let mut samples = 0u64;
        let mut time_range: Option<(u64, u64)> = None;
        input.for_each_sample(|tables, sample| {
            if !bound.accepts(tables, sample) {
                return;
            }
            let path = match path_of_stack.get(&sample.stack) {
                Some(path) => *path,
                None => {
                    frames.clear();
                    symbols.resolve_stack(tables, sample.stack, &mut frames);
                    let path = paths.intern(&frames);
                    path_of_stack.insert(sample.stack, path);
                    path
                }
            };
            let weight = u64::from(sample.weight.max(1));
            let state = if with_states {
                thread_state(sample.flags)
            } else {
                u8::MAX
            };
            let collecting = sample.flags & SampleFlag::Gc as u32 != 0;
            *counts
                .entry((sample.thread, path, state, collecting))
                .or_insert(0) += weight;
            total += weight;
            samples += 1;
            time_range = Some(match time_range {
                None => (sample.time_ns, sample.time_ns),
                Some((first, last)) => (first.min(sample.time_ns), last.max(sample.time_ns)),
            });
        });
        drop(path_of_stack);

        let tables = input.tables();
        let mut merged: HashMap<(u32, Vec<SymbolId>), u64> = HashMap::new();
        let mut threads: BTreeMap<u32, ThreadInfo> = BTreeMap::new();
        for ((thread, path, state, collecting), count) in counts {
            let mut frames = paths.symbols(path);
            if collecting {
                frames.push(symbols.pseudo(GC_LABEL));
            }
            if let Some(label) = STATE_LABELS.get(usize::from(state)) {
                let label = if state != 0 && free_threaded(input.header()) {
                    FREE_THREADED_RUNNING_LABEL
                } else {
                    label
                };
                frames.push(symbols.pseudo(label));
            }
            *merged.entry((thread, frames)).or_insert(0) += count;
            threads
                .entry(thread)
                .or_insert_with(|| ThreadInfo::from_tables(tables, thread))
                .samples += count;
        }
        let mut stacks: Vec<StackCount> = merged
            .into_iter()
            .map(|((thread, frames), count)| StackCount {
                thread,
                frames,
                count,
            })
            .collect();
        let label = |f: &SymbolId| symbols.get(*f).label.as_str();
        stacks.sort_by(|a, b| {
            a.thread
                .cmp(&b.thread)
                .then_with(|| a.frames.iter().map(label).cmp(b.frames.iter().map(label)))
        });
        Profile {
            header: input.header().clone(),
            symbols,
            stacks,
            threads,
            total,
            samples,
            read: input.samples_read(),
            time_range,
            damage: input.damage(),
            gaps: input.gap_note(),
        }
    }

    /// Label of symbol `id`.
    pub fn label(&self, id: SymbolId) -> &str {
        &self.symbols.get(id).label
    }

    /// Nominal time one sample stands for, from the header's sampling rate
    /// (10 ms if the header names no rate).
    pub fn sample_period_ns(&self) -> u64 {
        sample_period_ns(&self.header)
    }

    /// The time `ticks` sampler ticks stand for: ticks × period. The one
    /// rule every output follows (top, pprof, speedscope, the Chrome trace,
    /// the report), so a thread's time is the same in each.
    pub fn ticks_ns(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(self.sample_period_ns())
    }
}

/// Nominal time one sample stands for, from the header's sampling rate
/// (10 ms if the header names no rate).
pub fn sample_period_ns(header: &proto::Header) -> u64 {
    let rate = header.sampling.as_ref().map_or(0.0, |s| s.rate_hz);
    if rate.is_finite() && rate > 0.0 {
        ((1e9 / rate).round() as u64).max(1)
    } else {
        10_000_000
    }
}

/// The distinct symbol paths (stacks as a view shows them) met so far, as
/// a tree: node 0 is the empty path, every other node one symbol below its
/// parent.
#[derive(Debug, Default)]
struct SymbolPaths {
    /// (parent node, symbol) of node i + 1.
    nodes: Vec<(u32, SymbolId)>,
    children: IdMap<(u32, SymbolId), u32>,
}

impl SymbolPaths {
    /// The node of path `symbols` (outermost first), added if new.
    fn intern(&mut self, symbols: &[SymbolId]) -> u32 {
        let mut node = 0u32;
        for &symbol in symbols {
            node = match self.children.get(&(node, symbol)) {
                Some(child) => *child,
                None => {
                    self.nodes.push((node, symbol));
                    let child = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
                    self.children.insert((node, symbol), child);
                    child
                }
            };
        }
        node
    }

    /// The symbols of path `node`, outermost first.
    fn symbols(&self, mut node: u32) -> Vec<SymbolId> {
        let mut symbols = Vec::new();
        while let Some(&(parent, symbol)) = (node as usize)
            .checked_sub(1)
            .and_then(|index| self.nodes.get(index))
        {
            symbols.push(symbol);
            node = parent;
        }
        symbols.reverse();
        symbols
    }
}

/// A hasher for small integer keys (ids), much cheaper per sample than the
/// default SipHash; ids come from our own tables, so flooding is no concern.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        // FxHash's step: rotate, mix in, multiply by a large odd constant.
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A HashMap keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
