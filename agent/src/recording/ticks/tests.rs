//! The stacks a reader sees are the walks, whatever part of them travelled.
//!
//! A simulated sampler of two processes walks threads whose stacks change
//! at random from tick to tick (inner frames returning and calling,
//! offsets moving, deep changes, whole new stacks, empty stacks), whose
//! threads appear, disappear, go idle and come back, reuse an ident on a
//! new OS thread, tear (a tick's stack missing inner frames) and are
//! truncated (the outermost frames missing); code objects become readable
//! late or are replaced (a new code epoch); ticks are refused by a full
//! queue; a process is attached afresh; the sink's file is rotated. Every
//! tick goes through the [`Resolver`] and a [`Ticks`] (only the changed
//! frames) to [`Received::record`], and the recording read back must hold,
//! sample for sample, each walked stack as it was: the code object each
//! address named at that tick (or `<unknown>` while unreadable), its
//! offsets, the thread, the flags, the time and the weight. The expected
//! side interns nothing: it is the walk itself.

use super::*;
use crate::recording::codes::{CodeReader, Resolver};
use crate::{CodeId, CodeObject, ThreadSample};
use pydeep_format::proto::SampleFlag;
use std::collections::HashMap;

/// SplitMix64: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `per_mille` times in a thousand.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const CODES: u64 = 48;

fn address(index: u64) -> u64 {
    0x10_0000 + index * 0x40
}

fn code_named(name: String) -> CodeObject {
    CodeObject::named(&name, "sim.py")
}

/// A process's code objects as the target's cache serves them: some
/// unreadable until a given tick (then cached for good), some replaced by
/// another object at the same address (a new id and a new code epoch).
struct Table {
    codes: HashMap<u64, (CodeId, CodeObject)>,
    readable_from: HashMap<u64, u64>,
    now: u64,
    epoch: u64,
    next_id: CodeId,
}

impl Table {
    fn new(rng: &mut Rng, pid: i32) -> Table {
        let mut table = Table {
            codes: HashMap::new(),
            readable_from: HashMap::new(),
            now: 0,
            epoch: 0,
            next_id: 1,
        };
        for index in 0..CODES {
            table.define(address(index), format!("p{pid}_f{index}_v0"));
            if rng.chance(150) {
                table
                    .readable_from
                    .insert(address(index), rng.below(TICKS / 2));
            }
        }
        table
    }

    fn define(&mut self, address: u64, name: String) {
        let id = self.next_id;
        self.next_id += 1;
        self.codes.insert(address, (id, code_named(name)));
    }

    fn replace(&mut self, address: u64) {
        let (_, old) = &self.codes[&address];
        let version = old.name.rsplit('v').next().unwrap().parse::<u32>().unwrap();
        let name = format!(
            "{}v{}",
            old.name.trim_end_matches(char::is_numeric),
            version + 1
        );
        self.define(address, name);
        self.epoch += 1;
    }

    fn readable(&self, address: u64) -> bool {
        self.readable_from
            .get(&address)
            .is_none_or(|&from| self.now >= from)
    }

    /// What a reader should see for a frame at `address` now.
    fn name_now(&self, address: u64) -> String {
        if self.readable(address) {
            self.codes[&address].1.name.clone()
        } else {
            "<unknown>".into()
        }
    }
}

impl CodeReader for Table {
    fn code_object(&mut self, address: u64) -> Option<(CodeId, &CodeObject)> {
        if !self.readable(address) {
            return None;
        }
        self.codes.get(&address).map(|(id, code)| (*id, code))
    }

    fn code_epoch(&self) -> u64 {
        self.epoch
    }
}

/// A thread as it really is: its stack (innermost first) goes on between
/// ticks; a tick's walk may tear or truncate it.
struct Thread {
    thread_id: u64,
    native_id: u64,
    frames: Vec<FrameSample>,
}

fn frame(rng: &mut Rng) -> FrameSample {
    FrameSample {
        code_address: address(rng.below(CODES)),
        instruction_offset: 2 * rng.below(40) as u32,
        is_generator: rng.chance(100),
        is_shim: false,
    }
}

fn stack(rng: &mut Rng) -> Vec<FrameSample> {
    let depth = if rng.chance(200) {
        200 + rng.below(200)
    } else {
        rng.below(40)
    };
    (0..depth).map(|_| frame(rng)).collect()
}

impl Thread {
    fn step(&mut self, rng: &mut Rng) {
        let frames = &mut self.frames;
        let roll = rng.below(100);
        match roll {
            0..=39 => {
                if let Some(top) = frames.first_mut() {
                    top.instruction_offset = 2 * rng.below(40) as u32;
                }
            }
            40..=54 => {
                let k = (1 + rng.below(4) as usize).min(frames.len());
                frames.drain(..k);
            }
            55..=69 => {
                for _ in 0..1 + rng.below(4) {
                    frames.insert(0, frame(rng));
                }
            }
            70..=74 if !frames.is_empty() => {
                // Returned to a deep caller, which moved on and called again.
                let at = rng.below(frames.len() as u64) as usize;
                frames.drain(..at);
                frames[0].instruction_offset += 2;
                for _ in 0..rng.below(5) {
                    frames.insert(0, frame(rng));
                }
            }
            75..=77 => *frames = stack(rng),
            78..=79 => frames.clear(),
            _ => {}
        }
    }

    /// This tick's walk of it.
    fn walk(&self, rng: &mut Rng) -> ThreadSample {
        let mut frames = self.frames.clone();
        let torn = rng.chance(50);
        let truncated = !torn && rng.chance(20);
        if torn {
            // The callers both reads agree on.
            let k = rng.below(frames.len() as u64 + 1) as usize;
            frames.drain(..k);
        }
        if truncated {
            // The innermost frames up to the depth limit.
            frames.truncate(10);
        }
        ThreadSample {
            thread_id: self.thread_id,
            native_id: self.native_id,
            interpreter: 0,
            is_main: self.thread_id == 1,
            holds_gil: rng.chance(500),
            active: !rng.chance(150),
            collecting: rng.chance(20),
            frames,
            torn,
            moved: false,
            truncated,
            thread_state: 0,
        }
    }
}

/// A sample as a reader of the recording sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    pid: u32,
    thread_id: u64,
    native_id: u64,
    time_ns: u64,
    weight: u32,
    flags: u32,
    /// (code object's name, offset, generator), outermost first.
    frames: Vec<(String, u32, bool)>,
}

/// What the recording should hold for `sample` of `pid` at `tick`.
fn expected(pid: i32, table: &Table, tick: Tick, sample: &ThreadSample) -> Seen {
    let mut flags = 0;
    for (set, flag) in [
        (sample.collecting, SampleFlag::Gc),
        (sample.holds_gil, SampleFlag::HoldsGil),
        (sample.active, SampleFlag::Active),
        (sample.torn, SampleFlag::Torn),
        (sample.truncated, SampleFlag::Truncated),
        (sample.frames.is_empty(), SampleFlag::NoPython),
    ] {
        if set {
            flags |= flag as u32;
        }
    }
    Seen {
        pid: pid as u32,
        thread_id: sample.thread_id,
        native_id: sample.native_id,
        time_ns: tick.clock_ns,
        weight: tick.weight,
        flags,
        frames: sample
            .frames
            .iter()
            .rev()
            .map(|f| {
                (
                    table.name_now(f.code_address),
                    f.instruction_offset,
                    f.is_generator,
                )
            })
            .collect(),
    }
}

/// Every sample of a finished recording, in order.
fn read_back(bytes: Vec<u8>) -> Vec<Seen> {
    use pydeep_format::{Event, Recording};
    let reader = pydeep_format::Reader::new(std::io::Cursor::new(bytes)).unwrap();
    let mut recording = Recording::new(reader).unwrap();
    let mut seen = Vec::new();
    while let Some(event) = recording.next_event().unwrap() {
        if let Event::Sample(sample) = event {
            let tables = recording.tables();
            let thread = &tables.threads[&sample.thread];
            let frames = if sample.stack == 0 {
                Vec::new()
            } else {
                tables
                    .stack_frames(sample.stack)
                    .iter()
                    .map(|id| {
                        let frame = &tables.frames[id];
                        let code = &tables.code_objects[&frame.code];
                        (
                            tables.string(code.name).to_string(),
                            frame.instruction_offset,
                            frame.is_generator,
                        )
                    })
                    .collect()
            };
            seen.push(Seen {
                pid: thread.pid,
                thread_id: thread.thread_id,
                native_id: thread.native_id,
                time_ns: sample.time_ns,
                weight: sample.weight,
                flags: sample.flags,
                frames,
            });
        }
    }
    seen
}

fn new_recorder(include_idle: bool) -> Recorder<Vec<u8>> {
    let writer = pydeep_format::Writer::new(
        Vec::new(),
        pydeep_format::proto::Header::default(),
        Default::default(),
    )
    .unwrap();
    Recorder::new(writer, false, include_idle)
}

/// One simulated process: its code objects, its threads, and the
/// sampler's resolver and names for it.
struct Simulated {
    pid: i32,
    table: Table,
    threads: Vec<Thread>,
    next_ident: u64,
    resolver: Resolver,
    version: Arc<PythonVersion>,
    names: Arc<HashMap<u64, String>>,
    natives: Arc<HashMap<u64, u64>>,
}

impl Simulated {
    fn new(rng: &mut Rng, pid: i32) -> Simulated {
        let mut simulated = Simulated {
            pid,
            table: Table::new(rng, pid),
            threads: Vec::new(),
            next_ident: 1,
            resolver: Resolver::default(),
            version: Arc::new(PythonVersion::default()),
            names: Arc::default(),
            natives: Arc::default(),
        };
        for _ in 0..1 + rng.below(3) {
            simulated.spawn(rng, None);
        }
        simulated
    }

    /// A new OS thread, under a fresh ident or `reusing` one.
    fn spawn(&mut self, rng: &mut Rng, reusing: Option<(u64, Vec<FrameSample>)>) {
        let native_id = 1000 + self.next_ident;
        let (thread_id, frames) = reusing.unwrap_or_else(|| (self.next_ident, stack(rng)));
        self.next_ident += 1;
        self.threads.push(Thread {
            thread_id,
            native_id,
            frames,
        });
    }

    /// The world moves on by one tick.
    fn step(&mut self, rng: &mut Rng, tick: u64) {
        self.table.now = tick;
        for thread in &mut self.threads {
            thread.step(rng);
        }
        if rng.chance(30) || self.threads.is_empty() {
            self.spawn(rng, None);
        }
        if self.threads.len() > 1 && rng.chance(20) {
            let gone = rng.below(self.threads.len() as u64) as usize;
            self.threads.remove(gone);
        }
        if rng.chance(10) {
            // Joined, and its ident taken by a new OS thread that happens
            // to stand where it stood.
            let gone = rng.below(self.threads.len() as u64) as usize;
            let old = self.threads.remove(gone);
            self.spawn(rng, Some((old.thread_id, old.frames)));
        }
        if rng.chance(10) {
            self.table.replace(address(rng.below(CODES)));
        }
        if rng.chance(10) {
            let named = self
                .threads
                .iter()
                .map(|t| (t.thread_id, format!("t{}", rng.below(3))))
                .collect();
            self.names = Arc::new(named);
        }
    }
}

const TICKS: u64 = 3000;

fn replay(seed: u64, include_idle: bool) {
    let mut rng = Rng(seed);
    let mut processes = [Simulated::new(&mut rng, 7), Simulated::new(&mut rng, 8)];
    let mut received = Received::default();
    let mut recorder = new_recorder(include_idle);
    let mut ticks = Ticks::default();
    let mut want: Vec<Seen> = Vec::new();
    let mut got: Vec<Seen> = Vec::new();
    let (mut refused, mut reattached, mut rotated, mut frames_sent, mut frames_walked) =
        (0, 0, 0, 0usize, 0usize);
    let mut walks: Vec<ThreadSample> = Vec::new();
    for n in 0..TICKS {
        for (index, process) in processes.iter_mut().enumerate() {
            process.step(&mut rng, n);
            let tick = Tick {
                clock_ns: 1_000 + n * 1_000 + index as u64,
                weight: 1 + rng.below(3) as u32,
            };
            // The walk writes into the vectors the last tick left.
            walks.truncate(process.threads.len());
            for (at, thread) in process.threads.iter().enumerate() {
                let walk = thread.walk(&mut rng);
                match walks.get_mut(at) {
                    Some(slot) => {
                        let mut frames = std::mem::take(&mut slot.frames);
                        frames.clear();
                        frames.extend_from_slice(&walk.frames);
                        *slot = ThreadSample { frames, ..walk };
                    }
                    None => walks.push(walk),
                }
            }
            let recorded: Vec<Seen> = walks
                .iter()
                .filter(|t| include_idle || t.active)
                .map(|t| expected(process.pid, &process.table, tick, t))
                .collect();
            frames_walked += recorded.iter().map(|s| s.frames.len()).sum::<usize>();
            let before = ticks.frames.len();
            let mut writer = ticks.begin(
                ProcessRef {
                    pid: process.pid,
                    version: &process.version,
                    names: &process.names,
                    natives: &process.natives,
                },
                tick,
            );
            let threads = walks.iter_mut().filter(|t| include_idle || t.active);
            process
                .resolver
                .resolve(&mut process.table, threads, &mut writer);
            writer.set_code_epoch(process.table.epoch);
            assert_eq!(writer.samples(), recorded.len());
            if rng.chance(20) {
                // The queue was full: the sampler drops the tick.
                let (samples, mappings) = writer.abandon();
                assert_eq!(samples, recorded.len());
                process.resolver.not_delivered(&mappings);
                refused += 1;
            } else {
                writer.finish();
                frames_sent += ticks.frames.len() - before;
                want.extend(recorded);
            }
            if rng.chance(100) {
                received.record(&mut ticks, &mut recorder).unwrap();
                ticks.clear();
            }
            if rng.chance(3) {
                // Attached afresh: what was sent before it is recorded,
                // then the sink forgets the process (`Input::Forget`).
                received.record(&mut ticks, &mut recorder).unwrap();
                ticks.clear();
                received.forget_process(process.pid);
                recorder.forget_process(process.pid);
                process.resolver = Resolver::default();
                reattached += 1;
            }
        }
        if rng.chance(3) {
            // A daemon stream's next file: a new recorder, the same sink.
            received.record(&mut ticks, &mut recorder).unwrap();
            ticks.clear();
            let full = std::mem::replace(&mut recorder, new_recorder(include_idle));
            got.extend(read_back(
                full.finish(pydeep_format::proto::Footer::default())
                    .unwrap(),
            ));
            rotated += 1;
        }
    }
    received.record(&mut ticks, &mut recorder).unwrap();
    got.extend(read_back(
        recorder
            .finish(pydeep_format::proto::Footer::default())
            .unwrap(),
    ));
    assert!(refused > 0 && reattached > 0 && rotated > 0);
    assert_eq!(got.len(), want.len(), "samples recorded");
    for (index, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "sample {index}");
    }
    // And the point of it: far fewer frames travelled than were walked.
    assert!(
        frames_sent * 3 < frames_walked,
        "{frames_sent} frames sent of {frames_walked} walked"
    );
}

#[test]
fn walks_with_changing_suffixes_are_recorded_as_walked() {
    for seed in [1, 2, 3] {
        replay(seed, false);
        replay(seed, true);
    }
}

#[test]
fn a_tick_taken_back_leaves_the_ticks_as_they_were() {
    let version = Arc::new(PythonVersion::default());
    let names = Arc::default();
    let natives = Arc::default();
    let process = ProcessRef {
        pid: 1,
        version: &version,
        names: &names,
        natives: &natives,
    };
    let tick = Tick {
        clock_ns: 1,
        weight: 1,
    };
    let head = ThreadHead::default();
    let frames = [FrameSample {
        code_address: 16,
        instruction_offset: 0,
        is_generator: false,
        is_shim: false,
    }];
    let mut ticks = Ticks::default();
    let mut writer = ticks.begin(process, tick);
    writer.thread(head, Continuity::default(), &frames);
    writer.finish();
    let bytes = ticks.bytes();
    let other = Arc::new(PythonVersion::default());
    let mut writer = ticks.begin(
        ProcessRef {
            version: &other,
            ..process
        },
        tick,
    );
    writer.mappings().push((16, None));
    writer.thread(head, Continuity::default(), &frames);
    let (samples, mappings) = writer.abandon();
    assert_eq!((samples, mappings.len()), (1, 1));
    assert_eq!(ticks.bytes(), bytes);
    assert_eq!((ticks.len(), ticks.samples()), (1, 1));
    assert_eq!(ticks.processes.len(), 1);
}
