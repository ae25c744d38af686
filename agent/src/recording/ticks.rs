//! Sampled stacks on their way from the sampler to the sink: what crosses
//! the channel per tick, and how the sink rebuilds whole stacks from it.
//!
//! Two things keep the sink thread from reading what the sampler wrote
//! more than it must (issue #15: the one-thread loop before the sink read
//! each stack from its own cache; with the sink on another core every line
//! the sampler wrote and the sink read crossed cores, ~24 KB a tick at
//! depth 1,000, notes/benchmarks.md):
//!
//! * **Only the changed frames travel.** Between two ticks most of a
//!   thread's stack is the same callers. The sampler's
//!   [`crate::recording::codes::Resolver`] compares each thread's stack
//!   with the last one it sent for that thread, and sends the frames below
//!   the outermost ones that did not change ([`Continuity::kept`]); the
//!   sink keeps each thread's last stack sent ([`Received`]) and rebuilds
//!   the whole stack from it before the recorder sees it. At depth 1,000
//!   a tick carries a few frames, not 1,000.
//! * **One outbox's ticks are written in order into a few flat vectors**
//!   ([`Ticks`]: ticks, threads, frames, code mappings) rather than one
//!   structure per tick with vectors of its own: the sink reads them front
//!   to back, lines written whole, a few per tick.
//!
//! The recording is the same as if every stack were sent whole: a unit
//! test below replays walks with changing suffixes, threads that come and
//! go, torn ticks, refused ticks and a re-attach through both and compares
//! what a reader sees.

use std::collections::HashMap;
use std::io::Write;
use std::mem::size_of;
use std::sync::Arc;

use pydeep_format::FormatError;

use crate::process::address_hash::AddressMap;
use crate::recording::codes::{CodeMapping, CodeMirror, Continuity};
use crate::recording::recorder::{Recorder, Stack, Tick};
use crate::{FrameSample, PythonVersion, ThreadHead};

/// A process as its ticks name it: what the sink needs besides the
/// stacks (the code objects' line tables need the version; threads are
/// announced with their names).
#[derive(Clone)]
struct Process {
    pid: i32,
    version: Arc<PythonVersion>,
    names: Arc<HashMap<u64, String>>,
    natives: Arc<HashMap<u64, u64>>,
}

/// The process a tick is of, as the sampler holds it: the [`Arc`]s are
/// cloned into a [`Ticks`] only when they differ from those it holds
/// already (no atomic count per tick on lines the sink thread reads).
#[derive(Clone, Copy)]
pub struct ProcessRef<'a> {
    /// The process.
    pub pid: i32,
    /// Its interpreter's version.
    pub version: &'a Arc<PythonVersion>,
    /// Thread names by `thread_id`.
    pub names: &'a Arc<HashMap<u64, String>>,
    /// The native id of each named thread when the names were read.
    pub natives: &'a Arc<HashMap<u64, u64>>,
}

/// One tick of one process in a [`Ticks`]: its threads, frames and
/// mappings are the ranges that end where this entry says, starting where
/// the previous one's ended.
#[derive(Clone, Copy)]
struct TickEntry {
    process: u32,
    tick: Tick,
    code_epoch: u64,
    threads_end: u32,
    mappings_end: u32,
}

/// One thread of a tick: how its stack follows the thread's previous one
/// sent, and where its changed frames end in [`Ticks::frames`].
#[derive(Clone, Copy)]
struct SentThread {
    head: ThreadHead,
    continuity: Continuity,
    frames_end: u32,
}

/// A sampler's ticks on their way to the sink: one outbox's worth (see
/// [`crate::recording::sink::OUTBOX_AGE`]), written in order. Recycled:
/// the sink clears it and gives it back, so its vectors are allocated
/// once.
#[derive(Default)]
pub struct Ticks {
    ticks: Vec<TickEntry>,
    threads: Vec<SentThread>,
    /// Each thread's changed frames, outermost first.
    frames: Vec<FrameSample>,
    mappings: Vec<CodeMapping>,
    processes: Vec<Process>,
}

/// Where a [`Ticks`] was before a tick was written into it.
#[derive(Clone, Copy)]
struct Mark {
    ticks: usize,
    threads: usize,
    frames: usize,
    mappings: usize,
    processes: usize,
}

impl Ticks {
    /// No tick written.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }

    /// Ticks written.
    pub fn len(&self) -> usize {
        self.ticks.len()
    }

    /// Bytes its ticks take (what the sink's queue bound counts; the
    /// code objects the mappings share are counted once elsewhere, by the
    /// target's cache).
    pub fn bytes(&self) -> usize {
        self.ticks.len() * size_of::<TickEntry>()
            + self.threads.len() * size_of::<SentThread>()
            + self.frames.len() * size_of::<FrameSample>()
            + self.mappings.len() * size_of::<CodeMapping>()
    }

    /// Thread samples written.
    pub fn samples(&self) -> usize {
        self.threads.len()
    }

    /// Forgets every tick, keeping the vectors.
    pub fn clear(&mut self) {
        self.ticks.clear();
        self.threads.clear();
        self.frames.clear();
        self.mappings.clear();
        self.processes.clear();
    }

    fn mark(&self) -> Mark {
        Mark {
            ticks: self.ticks.len(),
            threads: self.threads.len(),
            frames: self.frames.len(),
            mappings: self.mappings.len(),
            processes: self.processes.len(),
        }
    }

    /// Starts a tick of `process` taken at `tick`: written by the
    /// [`TickWriter`], kept by [`TickWriter::finish`] or taken back by
    /// [`TickWriter::abandon`].
    pub fn begin(&mut self, process: ProcessRef<'_>, tick: Tick) -> TickWriter<'_> {
        let mark = self.mark();
        let known = self.processes.iter().rposition(|known| {
            known.pid == process.pid
                && Arc::ptr_eq(&known.version, process.version)
                && Arc::ptr_eq(&known.names, process.names)
                && Arc::ptr_eq(&known.natives, process.natives)
        });
        let index = known.unwrap_or_else(|| {
            self.processes.push(Process {
                pid: process.pid,
                version: process.version.clone(),
                names: process.names.clone(),
                natives: process.natives.clone(),
            });
            self.processes.len() - 1
        });
        TickWriter {
            ticks: self,
            mark,
            process: index as u32,
            tick,
            code_epoch: 0,
        }
    }

    /// Reads every tick in order, handing each to `each`; the mappings
    /// are taken (moved out), the rest stays until [`Ticks::clear`].
    pub fn read<E>(
        &mut self,
        mut each: impl FnMut(TickRead<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (mut threads_at, mut frames_at, mut mappings_at) = (0usize, 0usize, 0usize);
        for entry in &self.ticks {
            let threads = &self.threads[threads_at..entry.threads_end as usize];
            threads_at = entry.threads_end as usize;
            let mappings = &mut self.mappings[mappings_at..entry.mappings_end as usize];
            mappings_at = entry.mappings_end as usize;
            let frames_end = threads.last().map_or(frames_at, |t| t.frames_end as usize);
            each(TickRead {
                process: &self.processes[entry.process as usize],
                tick: entry.tick,
                code_epoch: entry.code_epoch,
                mappings,
                threads: SentThreads {
                    threads: threads.iter(),
                    frames: &self.frames,
                    at: frames_at,
                },
            })?;
            frames_at = frames_end;
        }
        Ok(())
    }
}

/// Writes one tick into a [`Ticks`] ([`Ticks::begin`]).
pub struct TickWriter<'a> {
    ticks: &'a mut Ticks,
    mark: Mark,
    process: u32,
    tick: Tick,
    code_epoch: u64,
}

impl TickWriter<'_> {
    /// Where the mappings the sink must learn before this tick's stacks go.
    pub fn mappings(&mut self) -> &mut Vec<CodeMapping> {
        &mut self.ticks.mappings
    }

    /// Adds a thread: its `head`, how its stack follows its previous one
    /// sent, and the frames of its stack below the `continuity.kept`
    /// outermost ones, `changed`, innermost first (the walker's order).
    pub fn thread(&mut self, head: ThreadHead, continuity: Continuity, changed: &[FrameSample]) {
        let frames = &mut self.ticks.frames;
        frames.extend(changed.iter().rev());
        self.ticks.threads.push(SentThread {
            head,
            continuity,
            frames_end: frames.len() as u32,
        });
    }

    /// The target's code epoch after the frames were resolved.
    pub fn set_code_epoch(&mut self, code_epoch: u64) {
        self.code_epoch = code_epoch;
    }

    /// Thread samples written into this tick so far.
    pub fn samples(&self) -> usize {
        self.ticks.threads.len() - self.mark.threads
    }

    /// Bytes of the [`Ticks`] with this tick kept ([`Ticks::bytes`]).
    pub fn bytes(&self) -> usize {
        self.ticks.bytes() + size_of::<TickEntry>()
    }

    /// Keeps the tick.
    pub fn finish(self) {
        let ticks = self.ticks;
        ticks.ticks.push(TickEntry {
            process: self.process,
            tick: self.tick,
            code_epoch: self.code_epoch,
            threads_end: ticks.threads.len() as u32,
            mappings_end: ticks.mappings.len() as u32,
        });
    }

    /// Takes the tick back (the sink refused it): how many thread samples
    /// it held, and its mappings (the sink never learnt them).
    pub fn abandon(self) -> (usize, Vec<CodeMapping>) {
        let Mark {
            ticks,
            threads,
            frames,
            mappings,
            processes,
        } = self.mark;
        let t = self.ticks;
        let samples = t.threads.len() - threads;
        let refused = t.mappings.split_off(mappings);
        t.ticks.truncate(ticks);
        t.threads.truncate(threads);
        t.frames.truncate(frames);
        t.processes.truncate(processes);
        (samples, refused)
    }
}

/// One tick as the sink reads it ([`Ticks::read`]).
pub struct TickRead<'a> {
    process: &'a Process,
    tick: Tick,
    code_epoch: u64,
    mappings: &'a mut [CodeMapping],
    threads: SentThreads<'a>,
}

/// A tick's threads: each one's head, continuity and changed frames
/// (outermost first).
struct SentThreads<'a> {
    threads: std::slice::Iter<'a, SentThread>,
    frames: &'a [FrameSample],
    at: usize,
}

impl<'a> Iterator for SentThreads<'a> {
    type Item = (&'a ThreadHead, Continuity, &'a [FrameSample]);

    fn next(&mut self) -> Option<Self::Item> {
        let thread = self.threads.next()?;
        let end = thread.frames_end as usize;
        let changed = &self.frames[self.at..end];
        self.at = end;
        Some((&thread.head, thread.continuity, changed))
    }
}

/// A thread's last stack sent, as the sink rebuilt it.
#[derive(Default)]
struct SentStack {
    /// Which of the thread's stacks sent it is ([`Continuity::sequence`]).
    sequence: u64,
    /// Its frames, outermost first.
    frames: Vec<FrameSample>,
}

/// The sink's side of what samplers sent: each process's code mirror and
/// each thread's last stack.
#[derive(Default)]
pub struct Received {
    mirrors: HashMap<i32, CodeMirror>,
    stacks: AddressMap<(i32, u64), SentStack>,
}

impl Received {
    /// The code mirror of process `pid`.
    pub fn mirror(&mut self, pid: i32) -> &mut CodeMirror {
        self.mirrors.entry(pid).or_default()
    }

    /// Forgets what process `pid`'s samplers sent (an image gone: its
    /// sampler's resolver starts afresh too).
    pub fn forget_process(&mut self, pid: i32) {
        self.mirrors.remove(&pid);
        self.stacks.retain(|(owner, _), _| *owner != pid);
    }

    /// Records every tick of `ticks` through `recorder`, each thread's
    /// whole stack rebuilt from its last one and its changed frames.
    pub fn record<W: Write>(
        &mut self,
        ticks: &mut Ticks,
        recorder: &mut Recorder<W>,
    ) -> Result<(), FormatError> {
        let Received { mirrors, stacks } = self;
        ticks.read(|tick| {
            let TickRead {
                process,
                tick,
                code_epoch,
                mappings,
                threads,
            } = tick;
            let pid = process.pid;
            let mirror = mirrors.entry(pid).or_default();
            mirror.learn(
                code_epoch,
                mappings
                    .iter_mut()
                    .map(|(address, code)| (*address, code.take())),
            );
            for (head, continuity, changed) in threads {
                let name = crate::recording::sampled::name_of(
                    &process.names,
                    &process.natives,
                    head.thread_id,
                    head.native_id,
                );
                let stack = stacks.entry((pid, head.thread_id)).or_default();
                let follows = stack.sequence + 1 == continuity.sequence
                    && stack.frames.len() >= continuity.kept as usize;
                let (head, frames, continuity) = if continuity.kept == 0 || follows {
                    stack.frames.truncate(continuity.kept as usize);
                    stack.frames.extend_from_slice(changed);
                    stack.sequence = continuity.sequence;
                    (*head, &stack.frames[..], continuity)
                } else {
                    // The stack it continues never arrived: cannot
                    // happen (a refused tick makes the resolver send
                    // every stack whole again), but if it did, the
                    // frames known are recorded as a truncated stack.
                    debug_assert!(false, "a stack continues one never received");
                    stack.sequence = 0;
                    stack.frames.clear();
                    let head = ThreadHead {
                        truncated: true,
                        ..*head
                    };
                    (head, changed, Continuity::default())
                };
                recorder.sample(
                    mirror,
                    (pid, &process.version),
                    tick,
                    Stack {
                        thread: &head,
                        frames,
                    },
                    name,
                    continuity,
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
