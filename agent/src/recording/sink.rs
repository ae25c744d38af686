//! The recording sink: one thread per recording that turns what samplers
//! read into the file, so that no sampler tick waits on interning, line
//! tables, source files, deflate or the disk.
//!
//! Its input is one channel of [`Input`]s. A sampler writes its ticks
//! into a [`Ticks`] (each thread's stack as far as it changed since the
//! thread's last one sent, with the code objects the sink has not been
//! told yet: see [`crate::recording::codes`] and
//! [`crate::recording::ticks`]) and sends process events, gaps, snapshots
//! already read, and at the end its counters for the footer. Any other source of records
//! sends into the same channel through a [`SinkInput`] (a trace window,
//! issue #19, would send its records as [`Input::Record`]s, or a variant
//! of its own whose interning the sink does): the file stays one stream
//! of records in the order they were sent.
//!
//! Only samples can be dropped. A sampler never blocks on the channel:
//! [`Sink::samples`] refuses a tick while [`MAX_QUEUED_BYTES`] of ticks
//! wait, and the sampler counts its samples as dropped (the footer's
//! `dropped_samples`). Everything else is always queued (it is rare and
//! small). So a sink slowed by a full disk, a slow file system or a large
//! chunk to deflate costs samples that are counted, never ticks that are
//! late.
//!
//! What it costs the sampler per tick is kept to appending to a few
//! vectors: the sampler's ticks wait in an outbox ([`Ticks`]) sent as one
//! message every [`OUTBOX_AGE`] (at once when anything else is sent, and
//! before the sampler sleeps), so the sink thread, which blocks on the
//! channel, wakes at most about a hundred times a second however fast the
//! sampler ticks; and each [`Ticks`] recorded is cleared and given back
//! to the sampler to be filled again, so its vectors are allocated once.
//!
//! The thread writes each chunk through a [`BackgroundFile`] (the disk is
//! a thread further on) and closes a chunk at least every second even
//! when no input comes, so a killed agent loses at most the last second.
//! A daemon target's recording is a stream of files the sink rotates
//! ([`Destination::Stream`]).
//!
//! Tests slow the sink with `PYDEEP_TEST_SINK_DELAY_MS`: a sleep after
//! each chunk it closes (read once at start; nothing else reads it).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pydeep_format::proto::{self, record::Kind, ProcessEventKind};
use pydeep_format::{FormatError, Writer};

use crate::recording::codes::CodeMapping;
use crate::recording::output::BackgroundFile;
use crate::recording::recorder::{proto_version, Recorder, RecorderStats, Tick};
use crate::recording::rotation::Rotation;
use crate::recording::rotation::StreamFile;
use crate::recording::snapshot::Taken;
use crate::recording::ticks::{ProcessRef, Received, TickWriter, Ticks};
use crate::PythonVersion;

/// Bytes of ticks that may wait for the sink; past this the sampler's
/// ticks are refused and counted as dropped. A tick of one thread whose
/// stack changed in a few frames is about 150 bytes, so 16 MiB hold
/// seconds at 30,000 ticks a second; a tick of stacks sent whole (every
/// thread new) holds 16 bytes a frame.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The longest a sampler's samples wait in its outbox before being sent
/// (they are sent sooner when the sampler sleeps, or sends anything else).
pub const OUTBOX_AGE: Duration = Duration::from_millis(16);

/// The most ticks an outbox holds before it is sent.
const OUTBOX_LEN: usize = 1024;

/// How long the sink thread waits for inputs before closing the open
/// chunk if it is due (a chunk is closed at least every second).
const CHUNK_CHECK: Duration = Duration::from_millis(100);

/// The most [`Ticks`] kept for reuse.
const SPARE_TICKS: usize = 8;

/// [`Ticks`] given back to be reused: boxed as they travel in
/// [`Input::Samples`], so that giving one back moves a pointer.
#[allow(clippy::vec_box)]
type SpareTicks = Vec<Box<Ticks>>;

/// A tick [`Sink::samples`] refused: its thread samples (dropped) and the
/// code mappings it would have taught the sink.
pub struct Refused {
    /// Thread samples dropped.
    pub samples: u64,
    /// The mappings the sink never learnt.
    pub mappings: Vec<CodeMapping>,
}

/// Trace events drained by a sampler, to be interned and recorded.
pub struct TraceInput {
    /// The process.
    pub pid: i32,
    /// Its interpreter's version.
    pub version: Arc<PythonVersion>,
    /// The target's code epoch after the sampler resolved the code objects.
    pub code_epoch: u64,
    /// What the sink must learn first.
    pub mappings: Vec<CodeMapping>,
    /// The events.
    pub raw: crate::trace::RawBatch,
}

/// A snapshot read by a sampler, to be interned and recorded.
pub struct SnapshotInput {
    /// The process.
    pub pid: i32,
    /// Its interpreter's version.
    pub version: Arc<PythonVersion>,
    /// The target's code epoch after the sampler resolved the frames.
    pub code_epoch: u64,
    /// What the sink must learn first.
    pub mappings: Vec<CodeMapping>,
    /// What was read.
    pub taken: Taken,
    /// The threads' names.
    pub names: Arc<HashMap<u64, String>>,
}

/// A process event as a sampler saw it; the sink masks its command line.
#[derive(Debug, Clone)]
pub struct Event {
    /// CLOCK_MONOTONIC when it was seen.
    pub time_ns: u64,
    /// The process.
    pub pid: i32,
    /// What happened.
    pub kind: ProcessEventKind,
    /// The exit status or signal, or 0.
    pub code: i32,
    /// The parent (a followed child's), or 0.
    pub parent_pid: i32,
    /// The interpreter's version, if it is one pydeep reads.
    pub version: Option<PythonVersion>,
    /// Its command line as read (unmasked).
    pub argv: Vec<String>,
    /// In words.
    pub detail: String,
}

impl Event {
    /// An event of `target` now, with its command line and version.
    pub fn of(target: &crate::Target, kind: ProcessEventKind, code: i32, detail: String) -> Event {
        Event {
            time_ns: crate::recording::schedule::monotonic_ns(),
            pid: target.pid(),
            kind,
            code,
            parent_pid: 0,
            version: Some(target.python_version()),
            argv: crate::process::procfs::cmdline(target.pid()),
            detail,
        }
    }
}

/// A sampler's counters so far, every one since it started; the sink
/// takes each file's share for its footer.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Ticks missed because the sampler was late.
    pub missed_ticks: u64,
    /// Failed reads.
    pub errors: u64,
    /// The largest lateness of a tick since the counters last sent.
    pub max_lag: Duration,
    /// `process_vm_readv` calls.
    pub read_calls: u64,
    /// Ticks read with the targets paused.
    pub paused_ticks: u64,
    /// Ticks planned paused but held by the pause budget.
    pub held_ticks: u64,
    /// Gaps recorded, and the ticks they cover.
    pub gap_count: u64,
    /// See `gap_count`.
    pub gap_ticks: u64,
    /// Thread samples the sink's queue refused.
    pub dropped_samples: u64,
}

/// What a flush answers: the bytes on disk, or why it failed.
pub type FlushReply = Box<dyn FnOnce(Result<u64, String>) + Send>;

/// What the sink is sent.
pub enum Input {
    /// Ticks of the sampler's processes, in order ([`Sink::samples`]).
    Samples(Box<Ticks>),
    /// A process event.
    Event(Event),
    /// A stretch the sampler did not observe.
    Gap(proto::Gap),
    /// A snapshot.
    Snapshot(Box<SnapshotInput>),
    /// Events drained from a trace window (`record --trace`).
    Trace(Box<TraceInput>),
    /// A process's image is gone (exec, attached afresh): forget what was
    /// derived from it.
    Forget {
        /// The process.
        pid: i32,
    },
    /// A record ready made (a rate change; a trace window's records).
    Record(Box<Kind>),
    /// The sampler's counters so far.
    Progress(Counters),
    /// Close the open chunk, wait until it is on disk, answer.
    Flush(FlushReply),
    /// New rotation limits (daemon streams).
    Rotation(Rotation),
    /// Write the footer and end the thread.
    Finish {
        /// The counters at the end.
        counters: Counters,
        /// How long the recording lasted (a stream's file: ignored).
        duration: Duration,
        /// Why it stopped.
        end_reason: String,
    },
}

/// What the sink records, and how.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkOptions {
    /// Embed source lines (default false here; the command line's is true).
    pub embed_source: bool,
    /// Embed whole files rather than spans.
    pub full_source: bool,
    /// Record idle threads.
    pub include_idle: bool,
    /// Masks secret-looking values of recorded command lines.
    pub redact: Option<&'static regex::Regex>,
}

/// Where the records go.
pub enum Destination {
    /// One file (`record`, `attach`), its header written.
    File(Writer<BackgroundFile>),
    /// A daemon target's stream of files, rotated by the sink: its first
    /// file's writer (header written) and the stream.
    Stream(Writer<BackgroundFile>, Box<Stream>),
}

/// What a stream's owner hears of its files.
#[derive(Debug, Clone)]
pub enum FileNews {
    /// A file was opened at this path (its final name).
    Opened(PathBuf),
    /// A file was finished: its path and size.
    Finished(PathBuf, u64),
}

/// A daemon target's stream: its first file (created by the daemon, so a
/// failure shows at once) and how to make the next.
pub struct Stream {
    /// The open file.
    pub file: StreamFile,
    /// Where the files go.
    pub dir: PathBuf,
    /// The rule's name.
    pub name: String,
    /// The target's pid (in file names).
    pub pid: i32,
    /// The header each file starts with (its times are renewed).
    pub header: proto::Header,
    /// When a file is closed and the next opened.
    pub rotation: Rotation,
    /// Told of each file opened and finished.
    pub news: Box<dyn FnMut(FileNews) + Send>,
}

/// How a recording ended.
#[derive(Debug, Clone, Default)]
pub struct SinkEnd {
    /// What the recorder did (the last file's, for a stream).
    pub stats: RecorderStats,
    /// Sources withheld: (name, why).
    pub withheld_sources: Vec<(String, String)>,
    /// Samples written, every file of a stream together.
    pub samples_total: u64,
}

/// Counters the sink shares with whoever sends to it.
#[derive(Default)]
struct Shared {
    /// Bytes of ticks sent, not yet recorded ([`Ticks::bytes`]).
    queued_bytes: AtomicUsize,
    /// Samples written, every file of a stream together.
    samples: AtomicU64,
    /// Bytes written to the open file.
    bytes: AtomicU64,
    /// The thread ended early (a write failed).
    ended: AtomicBool,
}

/// A sender into a sink, for another source of records.
#[derive(Clone)]
pub struct SinkInput {
    inputs: Sender<Vec<Input>>,
    shared: Arc<Shared>,
}

impl SinkInput {
    /// Queues `input`; never blocks. False if the sink has ended.
    pub fn send(&self, input: Input) -> bool {
        self.inputs.send(vec![input]).is_ok()
    }
}

/// A recording's sink thread; see the module documentation. Its sending
/// half belongs to the one sampler thread of the recording.
pub struct Sink {
    input: SinkInput,
    /// Ticks not sent yet, and since when the oldest waits.
    outbox: RefCell<Box<Ticks>>,
    outbox_since: Cell<Option<Instant>>,
    /// Ticks the sink thread gave back, and those taken from it.
    returned: Receiver<SpareTicks>,
    spare: RefCell<SpareTicks>,
    thread: Option<JoinHandle<Result<SinkEnd, FormatError>>>,
}

impl Sink {
    /// Starts the thread writing into `destination`.
    pub fn start(destination: Destination, options: SinkOptions) -> std::io::Result<Sink> {
        let (inputs, queue) = channel();
        let (give_back, returned) = channel();
        let shared = Arc::new(Shared::default());
        let delay = std::env::var("PYDEEP_TEST_SINK_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        let thread = std::thread::Builder::new()
            .name("pydeep-sink".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    let result = State::new(destination, options, shared.clone(), delay)
                        .and_then(|state| state.run(queue, give_back));
                    shared.ended.store(true, Ordering::Release);
                    result
                }
            })?;
        Ok(Sink {
            input: SinkInput { inputs, shared },
            outbox: RefCell::default(),
            outbox_since: Cell::new(None),
            returned,
            spare: RefCell::new(Vec::new()),
            thread: Some(thread),
        })
    }

    /// Queues `input` (never blocks), sent at once after the ticks that
    /// wait in the outbox.
    pub fn send(&self, input: Input) {
        self.send_outbox_with(Some(input));
    }

    /// Writes a tick of `process` taken at `tick` into the outbox: `fill`
    /// writes its threads (the sampler's [`crate::recording::codes::Resolver`]).
    /// Refused (taken back out) if [`MAX_QUEUED_BYTES`] of ticks would
    /// wait (or the sink has ended). It waits in the outbox for at most
    /// [`OUTBOX_AGE`].
    pub fn samples(
        &self,
        process: ProcessRef<'_>,
        tick: Tick,
        fill: impl FnOnce(&mut TickWriter<'_>),
    ) -> Result<(), Refused> {
        let waiting = {
            let mut outbox = self.outbox.borrow_mut();
            let mut writer = outbox.begin(process, tick);
            fill(&mut writer);
            let queued = self.input.shared.queued_bytes.load(Ordering::Relaxed);
            if self.ended() || queued + writer.bytes() > MAX_QUEUED_BYTES {
                let (samples, mappings) = writer.abandon();
                return Err(Refused {
                    samples: samples as u64,
                    mappings,
                });
            }
            writer.finish();
            outbox.len()
        };
        let now = Instant::now();
        match self.outbox_since.get() {
            None => self.outbox_since.set(Some(now)),
            Some(since) if waiting >= OUTBOX_LEN || now - since >= OUTBOX_AGE => self.send_outbox(),
            Some(_) => {}
        }
        Ok(())
    }

    /// Sends what waits in the outbox (the sampler calls it before it
    /// sleeps).
    pub fn send_outbox(&self) {
        self.send_outbox_with(None);
    }

    /// Sends the outbox's ticks, then `input`, as one message.
    fn send_outbox_with(&self, input: Option<Input>) {
        self.outbox_since.set(None);
        let mut message = Vec::with_capacity(2);
        {
            let mut outbox = self.outbox.borrow_mut();
            if !outbox.is_empty() {
                let ticks = std::mem::replace(&mut *outbox, self.spare_ticks());
                self.input
                    .shared
                    .queued_bytes
                    .fetch_add(ticks.bytes(), Ordering::Relaxed);
                message.push(Input::Samples(ticks));
            }
        }
        message.extend(input);
        if !message.is_empty() {
            // A sink that ended has said why (Sink::finish).
            let _ = self.input.inputs.send(message);
        }
    }

    /// An empty [`Ticks`]: one the sink gave back if there is one.
    fn spare_ticks(&self) -> Box<Ticks> {
        let mut spare = self.spare.borrow_mut();
        if spare.is_empty() {
            while let Ok(given) = self.returned.try_recv() {
                let room = SPARE_TICKS.saturating_sub(spare.len());
                spare.extend(given.into_iter().take(room));
            }
        }
        spare.pop().unwrap_or_default()
    }

    /// Another sender into this sink.
    pub fn input(&self) -> SinkInput {
        self.input.clone()
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.input.shared.samples.load(Ordering::Relaxed)
    }

    /// Bytes of the open file written so far.
    pub fn bytes(&self) -> u64 {
        self.input.shared.bytes.load(Ordering::Relaxed)
    }

    /// True once the thread ended before being told to (a write failed):
    /// [`Sink::finish`] says why.
    pub fn ended(&self) -> bool {
        self.input.shared.ended.load(Ordering::Acquire)
    }

    /// Sends the footer's counters, waits for the thread to write
    /// everything queued and the footer, and says how it ended.
    pub fn finish(
        mut self,
        counters: Counters,
        duration: Duration,
        end_reason: String,
    ) -> Result<SinkEnd, FormatError> {
        self.send(Input::Finish {
            counters,
            duration,
            end_reason,
        });
        self.join()
    }

    fn join(&mut self) -> Result<SinkEnd, FormatError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(FormatError::Io(std::io::Error::other(
                "the recording's sink thread panicked",
            ))),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Unfinished (an error elsewhere): the thread ends when the
            // channel closes; what was flushed stays readable.
            let (inputs, _) = channel();
            self.input.inputs = inputs;
            let _ = self.join();
        }
    }
}

/// The sink thread's state.
struct State {
    recorder: Recorder<BackgroundFile>,
    stream: Option<Box<Stream>>,
    /// Each process's code mirror and each thread's last stack sent.
    received: Received,
    /// Trace events' interning (threads, frames, their clock).
    traces: crate::trace::Interner,
    options: SinkOptions,
    shared: Arc<Shared>,
    delay: Option<Duration>,
    /// The latest counters, those at the open file's start, and the open
    /// file's largest lag.
    counters: Counters,
    at_open: Counters,
    max_lag: Duration,
    /// Each process's last ATTACHED event (a rotated file starts with it).
    attached: HashMap<i32, Event>,
    /// Samples of the finished files of a stream.
    samples_before: u64,
    /// Gap records in the open file, and their ticks: counted here, so
    /// that a footer always agrees with the records before it.
    gaps: (u64, u64),
}

impl State {
    fn new(
        destination: Destination,
        options: SinkOptions,
        shared: Arc<Shared>,
        delay: Option<Duration>,
    ) -> Result<State, FormatError> {
        let (writer, stream) = match destination {
            Destination::File(writer) => (writer, None),
            Destination::Stream(writer, stream) => (writer, Some(stream)),
        };
        let mut state = State {
            recorder: new_recorder(writer, &options),
            stream,
            received: Received::default(),
            traces: Default::default(),
            options,
            shared,
            delay,
            counters: Counters::default(),
            at_open: Counters::default(),
            max_lag: Duration::ZERO,
            attached: HashMap::new(),
            samples_before: 0,
            gaps: (0, 0),
        };
        if let Some(stream) = &mut state.stream {
            (stream.news)(FileNews::Opened(stream.file.final_path.clone()));
        }
        Ok(state)
    }

    /// Takes what comes, closing the chunks due (at least every
    /// [`CHUNK_CHECK`] when nothing comes), until told to finish; gives
    /// each wake's recorded [`Ticks`] back through `give_back`.
    fn run(
        mut self,
        queue: Receiver<Vec<Input>>,
        give_back: Sender<SpareTicks>,
    ) -> Result<SinkEnd, FormatError> {
        let mut chunks = self.recorder.writer().stats().chunks;
        let mut recorded: SpareTicks = Vec::new();
        loop {
            let mut next = match queue.recv_timeout(CHUNK_CHECK) {
                Ok(inputs) => Some(inputs),
                Err(RecvTimeoutError::Timeout) => None,
                // Dropped unfinished: end without a footer.
                Err(RecvTimeoutError::Disconnected) => return Ok(self.end()),
            };
            // Inputs and ticks taken since the chunk was last checked.
            let mut taken = 0usize;
            while let Some(inputs) = next {
                for input in inputs {
                    match input {
                        Input::Finish {
                            counters,
                            duration,
                            end_reason,
                        } => {
                            self.progress(counters);
                            return self.finish(duration, &end_reason);
                        }
                        Input::Samples(ticks) => {
                            taken += ticks.len();
                            let ticks = self.samples(ticks)?;
                            if recorded.len() < SPARE_TICKS {
                                recorded.push(ticks);
                            }
                        }
                        input => self.take(input)?,
                    }
                    taken += 1;
                    // Close a chunk between inputs when one is due.
                    if taken >= OUTBOX_LEN {
                        taken = 0;
                        self.maintain(&mut chunks)?;
                    }
                }
                next = queue.try_recv().ok();
            }
            if !recorded.is_empty() {
                // A sampler gone has no use for them.
                let _ = give_back.send(std::mem::take(&mut recorded));
            }
            self.maintain(&mut chunks)?;
        }
    }

    /// Closes the open chunk if due (then stalls as tests ask), rotates a
    /// stream's file if due, and publishes the counters. `chunks`: the
    /// chunks written when last asked.
    fn maintain(&mut self, chunks: &mut u64) -> Result<(), FormatError> {
        self.recorder.maybe_flush()?;
        let written = self.recorder.writer().stats().chunks;
        if std::mem::replace(chunks, written) != written {
            if let Some(delay) = self.delay {
                std::thread::sleep(delay);
            }
        }
        self.rotate_if_due()?;
        self.shared.samples.store(
            self.samples_before + self.recorder.stats().samples,
            Ordering::Relaxed,
        );
        self.shared.bytes.store(
            self.recorder.writer().stats().bytes_written,
            Ordering::Relaxed,
        );
        Ok(())
    }

    fn take(&mut self, input: Input) -> Result<(), FormatError> {
        match input {
            Input::Samples(ticks) => {
                self.samples(ticks)?;
            }
            Input::Event(event) => {
                if event.kind == ProcessEventKind::ProcessAttached {
                    self.attached.insert(event.pid, event.clone());
                }
                self.event(&event)?;
            }
            Input::Gap(gap) => {
                self.gaps.0 += 1;
                self.gaps.1 += gap.ticks;
                self.recorder.record(Kind::Gap(gap))?
            }
            Input::Snapshot(snapshot) => {
                let SnapshotInput {
                    pid,
                    version,
                    code_epoch,
                    mappings,
                    taken,
                    names,
                } = *snapshot;
                let mirror = self.received.mirror(pid);
                mirror.learn(code_epoch, mappings);
                let record = crate::recording::snapshot::to_record(
                    &mut self.recorder,
                    mirror,
                    pid,
                    &version,
                    &taken,
                    &names,
                );
                self.recorder.record(Kind::Snapshot(record))?;
            }
            Input::Trace(trace) => {
                let TraceInput {
                    pid,
                    version,
                    code_epoch,
                    mappings,
                    raw,
                } = *trace;
                let mirror = self.received.mirror(pid);
                mirror.learn(code_epoch, mappings);
                let record = self
                    .traces
                    .batch(&mut self.recorder, mirror, pid, &version, raw);
                self.recorder.record(Kind::TraceEvents(record))?;
            }
            Input::Forget { pid } => {
                self.traces.forget_process(pid);
                self.received.forget_process(pid);
                self.recorder.forget_process(pid);
            }
            Input::Record(kind) => self.recorder.record(*kind)?,
            Input::Progress(counters) => self.progress(counters),
            Input::Flush(reply) => {
                let flushed = self
                    .recorder
                    .flush()
                    .and_then(|()| Ok(self.recorder.writer().sink().sync()?));
                let bytes = self.recorder.writer().stats().bytes_written;
                reply(flushed.map(|()| bytes).map_err(|e| e.to_string()));
            }
            Input::Rotation(rotation) => {
                if let Some(stream) = &mut self.stream {
                    stream.rotation = rotation;
                }
            }
            Input::Finish { .. } => unreachable!("handled by run"),
        }
        Ok(())
    }

    /// Records `ticks`; gives them back cleared, to be reused.
    fn samples(&mut self, mut ticks: Box<Ticks>) -> Result<Box<Ticks>, FormatError> {
        let result = self.received.record(&mut ticks, &mut self.recorder);
        self.shared
            .queued_bytes
            .fetch_sub(ticks.bytes(), Ordering::Relaxed);
        ticks.clear();
        result.map(|()| ticks)
    }

    fn event(&mut self, event: &Event) -> Result<(), FormatError> {
        let argv = self.recorder.command_line(&event.argv);
        self.recorder
            .record(Kind::ProcessEvent(proto::ProcessEvent {
                time_ns: event.time_ns,
                pid: event.pid as u32,
                kind: event.kind as i32,
                code: event.code,
                parent_pid: event.parent_pid as u32,
                python_version: event.version.as_ref().map(proto_version),
                argv,
                detail: event.detail.clone(),
            }))
    }

    fn progress(&mut self, counters: Counters) {
        self.max_lag = self.max_lag.max(counters.max_lag);
        self.counters = counters;
    }

    /// The open file's footer, its counters since it opened.
    fn footer(&self, duration: Duration, end_reason: &str) -> proto::Footer {
        let (now, open) = (&self.counters, &self.at_open);
        let stats = self.recorder.stats();
        proto::Footer {
            sample_count: stats.samples,
            duration_ns: duration.as_nanos() as u64,
            missed_ticks: now.missed_ticks - open.missed_ticks,
            dropped_samples: now.dropped_samples - open.dropped_samples,
            torn_samples: stats.torn,
            // A torn stack is never read again (a retry is another
            // moment's stack): see crate::recording::exactness.
            torn_retries: 0,
            paused_ticks: now.paused_ticks - open.paused_ticks,
            held_ticks: now.held_ticks - open.held_ticks,
            errors: now.errors - open.errors,
            max_lag_ns: self.max_lag.as_nanos() as u64,
            end_reason: end_reason.into(),
            snapshot_count: 0,
            chunk_count: 0,
            read_calls: now.read_calls.saturating_sub(open.read_calls),
            gap_count: self.gaps.0,
            gap_ticks: self.gaps.1,
        }
    }

    /// Closes the open file of a stream and opens the next if it is big
    /// or old enough.
    fn rotate_if_due(&mut self) -> Result<(), FormatError> {
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        let bytes = self.recorder.writer().stats().bytes_written;
        let reason = if bytes >= stream.rotation.max_bytes {
            "rotated (size)"
        } else if stream.file.opened.elapsed() >= stream.rotation.max_age {
            "rotated (age)"
        } else {
            return Ok(());
        };
        let stream = self.stream.as_mut().expect("checked");
        let mut header = stream.header.clone();
        header.start_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        header.start_clock_ns = crate::recording::schedule::monotonic_ns();
        let (file, writer) = StreamFile::create(&stream.dir, &stream.name, stream.pid, header)?;
        let previous_file = std::mem::replace(&mut stream.file, file);
        let opened = stream.file.final_path.clone();
        let next = new_recorder(writer, &self.options);
        let footer = self.footer(previous_file.opened.elapsed(), reason);
        let previous = std::mem::replace(&mut self.recorder, next);
        self.traces.forget_all();
        self.samples_before += previous.stats().samples;
        self.at_open = self.counters.clone();
        self.max_lag = Duration::ZERO;
        self.gaps = (0, 0);
        self.finish_stream_file(previous, previous_file, footer)?;
        if let Some(stream) = &mut self.stream {
            (stream.news)(FileNews::Opened(opened));
        }
        let mut attached: Vec<Event> = self.attached.values().cloned().collect();
        attached.sort_by_key(|e| e.pid);
        for mut event in attached {
            event.time_ns = crate::recording::schedule::monotonic_ns();
            event.detail = "continued after rotation".into();
            self.event(&event)?;
        }
        Ok(())
    }

    fn finish_stream_file(
        &mut self,
        recorder: Recorder<BackgroundFile>,
        file: StreamFile,
        footer: proto::Footer,
    ) -> Result<(), FormatError> {
        let background = recorder.finish(footer)?;
        let path = file.finish(background)?;
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if let Some(stream) = &mut self.stream {
            (stream.news)(FileNews::Finished(path, size));
        }
        Ok(())
    }

    fn finish(self, duration: Duration, end_reason: &str) -> Result<SinkEnd, FormatError> {
        let withheld_sources = self.recorder.withheld_sources().to_vec();
        let stats = self.recorder.stats().clone();
        let samples_total = self.samples_before + stats.samples;
        self.shared.samples.store(samples_total, Ordering::Relaxed);
        let duration = self
            .stream
            .as_ref()
            .map_or(duration, |s| s.file.opened.elapsed());
        let footer = self.footer(duration, end_reason);
        let State {
            recorder, stream, ..
        } = self;
        let background = recorder.finish(footer)?;
        match stream {
            Some(mut stream) => {
                let path = stream.file.finish(background)?;
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                (stream.news)(FileNews::Finished(path, size));
            }
            None => {
                background.close()?;
            }
        }
        Ok(SinkEnd {
            stats,
            withheld_sources,
            samples_total,
        })
    }

    /// What is recorded when the sink is dropped unfinished.
    fn end(&self) -> SinkEnd {
        SinkEnd {
            stats: self.recorder.stats().clone(),
            withheld_sources: self.recorder.withheld_sources().to_vec(),
            samples_total: self.samples_before + self.recorder.stats().samples,
        }
    }
}

fn new_recorder(writer: Writer<BackgroundFile>, options: &SinkOptions) -> Recorder<BackgroundFile> {
    let mut recorder = Recorder::new(writer, options.embed_source, options.include_idle);
    recorder.set_redaction(options.redact);
    recorder.embed_whole_files(options.full_source);
    recorder
}
