//! One target's recorder: a dedicated OS thread that attaches, samples on
//! a drift-free schedule, writes the target's stream of rotated files, and
//! obeys commands from the control plane (snapshot, flush, reconfigure,
//! stop). Sampling makes blocking system calls (`process_vm_readv`,
//! ptrace) at up to kHz rates: it never runs on the async executor.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pydeep_format::proto::{self, record::Kind, ProcessEventKind};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::budget::{effective_rate, thread_cpu, RateFactor};
use super::config::{Rotation, TargetSettings};
use super::discovery::Process;
use super::rotation::StreamFile;
use crate::exactness::{ReadCounts, ReadMode};
use crate::gaps::{GapCounts, Stalls};
use crate::lifecycle::{self, Fate};
use crate::recorder::{Recorder, Tick};
use crate::sampled::Sampled;
use crate::schedule::Schedule;
use crate::session::{self, monotonic_ns, SessionOptions};
use crate::snapshot::SnapshotOptions;
use crate::{AttachError, Target, ThreadSample};

/// How long a selected process may take to become attachable: a process
/// found just after `exec` has no interpreter yet.
const ATTACH_GRACE: Duration = Duration::from_secs(5);

/// A target that gave no readable stack for this long is given up.
const UNREADABLE_LIMIT: Duration = Duration::from_secs(10);

/// The longest the thread sleeps before looking at its commands again.
const COMMAND_LATENCY: Duration = Duration::from_millis(50);

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotRequest {
    /// Each frame's variables with their values.
    pub locals: bool,
    /// Objects counted by type from the GC lists.
    pub heap: bool,
}

/// What a snapshot wrote, for the control reply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotReport {
    /// Threads in the snapshot.
    pub threads: usize,
    /// Frames read.
    pub frames: usize,
    /// Variables read.
    pub variables: usize,
    /// Objects counted (with `heap`).
    pub heap_objects: u64,
    /// How long the target was paused, in milliseconds.
    pub pause_ms: f64,
    /// What could not be read.
    pub warnings: Vec<String>,
}

/// Pauses the target, reads what `request` asks for, and writes one
/// `Snapshot` record (the snapshot module's reader and encoder).
fn snapshot<W: std::io::Write>(
    sampled: &mut Sampled,
    recorder: &mut Recorder<W>,
    request: SnapshotRequest,
    max_depth: usize,
) -> Result<SnapshotReport> {
    let options = SnapshotOptions {
        scopes: true,
        values: request.locals,
        heap: request.heap,
        max_depth,
        ..SnapshotOptions::default()
    };
    let taken = crate::snapshot::take(&mut sampled.target, &options)?;
    sampled.read_names();
    let record =
        crate::snapshot::to_record_of_target(recorder, &mut sampled.target, &taken, &sampled.names);
    recorder.record(Kind::Snapshot(record))?;
    Ok(SnapshotReport {
        threads: taken.threads.len(),
        frames: taken.threads.iter().map(|t| t.frames.len()).sum(),
        variables: taken
            .threads
            .iter()
            .flat_map(|t| &t.frames)
            .map(|f| f.variables.len())
            .sum(),
        heap_objects: taken.heap.as_ref().map_or(0, |h| h.objects),
        pause_ms: taken.pause.as_secs_f64() * 1e3,
        warnings: taken.warnings.clone(),
    })
}

/// What a target thread is told to record.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The rule's name (file names, labels).
    pub name: String,
    /// The process.
    pub process: Process,
    /// How to sample it.
    pub settings: TargetSettings,
    /// Where its files go.
    pub output_dir: PathBuf,
    /// When its files rotate.
    pub rotation: Rotation,
}

/// A command from the control plane.
#[derive(Debug)]
pub enum Command {
    /// Write a deep snapshot into the stream now.
    Snapshot {
        /// What to read.
        request: SnapshotRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<SnapshotReport, String>>,
    },
    /// Close the current chunk now, so everything so far is on disk.
    Flush {
        /// Answered once flushed.
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// New settings (from a reloaded configuration).
    Reconfigure {
        /// Sampling settings.
        settings: TargetSettings,
        /// Rotation limits.
        rotation: Rotation,
    },
    /// Finish the file and end the thread.
    Stop {
        /// The footer's end reason.
        reason: String,
    },
}

/// What a target thread tells the control plane.
#[derive(Debug)]
pub enum Report {
    /// The process could not be recorded (not Python, unsupported, no
    /// permission): log once, do not retry it.
    Refused {
        /// The process.
        process: Process,
        /// The rule's name.
        name: String,
        /// Why.
        error: String,
    },
    /// A file was finished (rotation or end): run retention.
    FileFinished {
        /// Its path.
        path: PathBuf,
    },
    /// The thread ended.
    Ended {
        /// The process.
        process: Process,
    },
}

/// A target's state as `pydeep ctl status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TargetStatus {
    /// The rule's name.
    pub name: String,
    /// The process id.
    pub pid: i32,
    /// "attaching", "recording", "finished" or "refused".
    pub state: String,
    /// "3.11.7".
    pub python_version: String,
    /// The rate asked for.
    pub configured_rate_hz: f64,
    /// The rate sampled at now (lower under the CPU budget).
    pub rate_hz: f64,
    /// Times the rate changed.
    pub rate_changes: u64,
    /// Samples written, every file of the stream together.
    pub samples: u64,
    /// Ticks taken.
    pub ticks: u64,
    /// Ticks missed because the thread was late.
    pub missed_ticks: u64,
    /// Failed reads.
    pub errors: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Bytes written, every file together.
    pub bytes: u64,
    /// Files finished (rotated or ended).
    pub files_finished: u64,
    /// The file being written.
    pub current_file: Option<PathBuf>,
    /// The last finished file.
    pub last_file: Option<PathBuf>,
    /// CPU time of this target's thread, in seconds.
    pub cpu_seconds: f64,
    /// Why it ended, once it has.
    pub end_reason: Option<String>,
}

/// Starts the thread recording `spec`.
pub fn spawn(
    spec: WorkerSpec,
    commands: Receiver<Command>,
    status: Arc<Mutex<TargetStatus>>,
    factor: Arc<RateFactor>,
    reports: UnboundedSender<Report>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("pydeep-{}", spec.process.pid))
        .spawn(move || {
            let process = spec.process.clone();
            let name = spec.name.clone();
            let mut worker = Worker {
                spec,
                commands,
                status,
                factor,
                reports: reports.clone(),
            };
            if let Err(error) = worker.run() {
                tracing::error!(pid = process.pid, target = %name, "recording failed: {error:#}");
                let mut status = worker.status.lock().unwrap_or_else(|e| e.into_inner());
                status.state = "finished".into();
                status.end_reason = Some(format!("error: {error:#}"));
            }
            let _ = reports.send(Report::Ended { process });
        })
}

struct Worker {
    spec: WorkerSpec,
    commands: Receiver<Command>,
    status: Arc<Mutex<TargetStatus>>,
    factor: Arc<RateFactor>,
    reports: UnboundedSender<Report>,
}

/// Counters of the open file, for its footer.
#[derive(Default)]
struct FileCounters {
    missed_at_open: u64,
    errors: u64,
    max_lag: Duration,
    read_calls_at_open: u64,
    /// How this file's ticks were read (paused or not).
    reads: ReadCounts,
    /// This file's gaps.
    gaps: GapCounts,
}

impl Worker {
    fn status(&self) -> std::sync::MutexGuard<'_, TargetStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn session_options(&self) -> SessionOptions {
        let s = &self.spec.settings;
        SessionOptions {
            rate_hz: s.rate_hz,
            duration: None,
            read_mode: ReadMode::Adaptive,
            include_idle: s.idle,
            subprocesses: false,
            embed_source: s.embed_source,
            full_source: s.full_source,
            max_depth: s.max_depth,
            show_status: false,
            mode: "daemon",
            snapshot_every: s.snapshot_every,
            snapshot_values: s.locals,
            snapshot_tasks: false,
            snapshot_globals: false,
            redact: default_redaction(),
            snapshot_objects: SnapshotOptions::default().max_objects,
            heap_every: s.heap_every,
        }
    }

    /// Attaches, retrying through the target's start-up; `None` if the
    /// process is refused, gone, or the thread was told to stop.
    fn attach(&mut self) -> Option<Target> {
        let pid = self.spec.process.pid;
        let deadline = Instant::now() + ATTACH_GRACE;
        loop {
            let error = match Target::attach(pid) {
                Ok(target) => return Some(target),
                Err(error) => error,
            };
            let definitive = matches!(
                error,
                AttachError::PermissionDenied { .. } | AttachError::UnsupportedVersion { .. }
            );
            let gone = matches!(
                error,
                AttachError::NoSuchProcess { .. } | AttachError::TargetExited { .. }
            ) || super::discovery::start_ticks(pid)
                != Some(self.spec.process.start_ticks);
            let stopped = matches!(self.commands.try_recv(), Ok(Command::Stop { .. }));
            if gone || stopped {
                return None;
            }
            if definitive || Instant::now() >= deadline {
                let _ = self.reports.send(Report::Refused {
                    process: self.spec.process.clone(),
                    name: self.spec.name.clone(),
                    error: error.to_string(),
                });
                let mut status = self.status();
                status.state = "refused".into();
                status.end_reason = Some(error.to_string());
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn open(&self, attached: &Sampled, detail: &str) -> Result<StreamFile> {
        let header = session::header(&attached.target, &self.session_options());
        let mut file = StreamFile::create(
            &self.spec.output_dir,
            &self.spec.name,
            self.spec.process.pid,
            header,
            self.spec.settings.embed_source,
            self.spec.settings.idle,
        )
        .with_context(|| format!("creating a recording in {}", self.spec.output_dir.display()))?;
        file.recorder
            .embed_whole_files(self.spec.settings.full_source);
        file.recorder.set_redaction(default_redaction());
        let pid = attached.target.pid();
        file.recorder.process_event(
            &attached.target,
            ProcessEventKind::ProcessAttached,
            0,
            0,
            detail.into(),
        )?;
        {
            let mut status = self.status();
            status.current_file = Some(file.final_path.clone());
        }
        tracing::debug!(pid, file = %file.part_path.display(), "opened");
        Ok(file)
    }

    /// Finishes `file` with `reason` and reports it.
    fn finish(
        &self,
        file: StreamFile,
        attached: &Sampled,
        missed_total: u64,
        counters: &FileCounters,
        reason: &str,
    ) -> Result<()> {
        let footer = proto::Footer {
            sample_count: file.recorder.stats().samples,
            duration_ns: file.opened.elapsed().as_nanos() as u64,
            missed_ticks: missed_total.saturating_sub(counters.missed_at_open),
            torn_samples: file.recorder.stats().torn,
            torn_retries: 0,
            paused_ticks: counters.reads.pauses.count(),
            held_ticks: counters.reads.held,
            errors: counters.errors,
            max_lag_ns: counters.max_lag.as_nanos() as u64,
            end_reason: reason.into(),
            read_calls: attached.target.read_calls() - counters.read_calls_at_open,
            gap_count: counters.gaps.count,
            gap_ticks: counters.gaps.ticks,
            ..Default::default()
        };
        let bytes_before = file.bytes();
        let path = file.finish(footer).context("finishing a recording")?;
        let size = std::fs::metadata(&path).map_or(bytes_before, |m| m.len());
        tracing::info!(pid = attached.target.pid(), file = %path.display(), bytes = size, reason, "finished");
        {
            let mut status = self.status();
            status.files_finished += 1;
            status.bytes += size;
            status.last_file = Some(path.clone());
            status.current_file = None;
        }
        let _ = self.reports.send(Report::FileFinished { path });
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let Some(target) = self.attach() else {
            return Ok(());
        };
        let pid = target.pid();
        let version = target.python_version();
        tracing::info!(pid, target = %self.spec.name, python = %version, "attached");
        let mut attached = Sampled::new(target, ReadMode::Adaptive, self.spec.settings.max_depth);
        let mut file = self.open(&attached, "")?;
        let mut counters = FileCounters::default();
        let mut rate = effective_rate(self.spec.settings.rate_hz, self.factor.get());
        let mut schedule = Schedule::new(Instant::now(), rate);
        {
            let mut status = self.status();
            status.state = "recording".into();
            status.python_version = version.to_string();
            status.configured_rate_hz = self.spec.settings.rate_hz;
            status.rate_hz = rate;
        }
        let mut threads: Vec<ThreadSample> = Vec::new();
        let mut stalls = Stalls::default();
        let mut last_good_read = Instant::now();
        let mut next_snapshot = self
            .spec
            .settings
            .snapshot_every
            .map(|d| Instant::now() + d);
        let mut next_heap = self.spec.settings.heap_every.map(|d| Instant::now() + d);
        let mut last_status = Instant::now();
        let mut ticks = 0u64;
        let mut errors = 0u64;
        let mut snapshots = 0u64;
        let mut rate_changes = 0u64;
        let mut samples_before_file = 0u64;
        // Missed ticks of the schedules replaced by rate changes.
        let mut missed_carry = 0u64;

        let end_reason: String = 'sampling: loop {
            // Commands first: a stop or a snapshot never waits a whole tick.
            loop {
                let command = match self.commands.try_recv() {
                    Ok(command) => command,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'sampling "daemon stopped".into(),
                };
                match command {
                    Command::Stop { reason } => break 'sampling reason,
                    Command::Flush { reply } => {
                        let result = file.flush().map_err(|e| e.to_string());
                        let _ = reply.send(result.map(|()| file.bytes()));
                    }
                    Command::Snapshot { request, reply } => {
                        let result = snapshot(
                            &mut attached,
                            &mut file.recorder,
                            request,
                            self.spec.settings.max_depth as usize,
                        );
                        if result.is_ok() {
                            snapshots += 1;
                        }
                        let _ = reply.send(result.map_err(|e| format!("{e:#}")));
                    }
                    Command::Reconfigure { settings, rotation } => {
                        self.spec.settings = settings;
                        self.spec.rotation = rotation;
                        next_snapshot = self
                            .spec
                            .settings
                            .snapshot_every
                            .map(|d| Instant::now() + d);
                        next_heap = self.spec.settings.heap_every.map(|d| Instant::now() + d);
                    }
                }
            }

            // The CPU budget (or a new configuration) may have moved the rate.
            let wanted = effective_rate(self.spec.settings.rate_hz, self.factor.get());
            if (wanted - rate).abs() > 0.02 * rate {
                let why = if self.factor.get() < 1.0 {
                    "cpu budget"
                } else {
                    "configuration"
                };
                let detail = format!("{why}: {rate:.1} Hz -> {wanted:.1} Hz");
                tracing::info!(pid, target = %self.spec.name, "rate changed ({detail})");
                file.recorder
                    .record(Kind::ProcessEvent(proto::ProcessEvent {
                        time_ns: monotonic_ns(),
                        pid: pid as u32,
                        kind: ProcessEventKind::ProcessRateChanged as i32,
                        code: (wanted * 1000.0).round().min(i32::MAX as f64) as i32,
                        detail,
                        ..Default::default()
                    }))?;
                missed_carry += schedule.missed_ticks;
                rate = wanted;
                schedule = Schedule::new(Instant::now(), rate);
                rate_changes += 1;
            }

            let due = schedule.next_due();
            let now = Instant::now();
            if due > now + COMMAND_LATENCY {
                std::thread::sleep(COMMAND_LATENCY);
                continue;
            }
            schedule.wait();
            let now = Instant::now();
            if !schedule.take(now) {
                continue;
            }
            ticks += 1;
            counters.max_lag = counters.max_lag.max(schedule.last_lag);
            let clock_ns = monotonic_ns();
            let weight = schedule.weight();
            if let Some(gap) = stalls.gap(&schedule, now, clock_ns, &mut counters.gaps) {
                file.recorder.record(Kind::Gap(gap))?;
            }
            let mut read = stalls.time("reading the target", || {
                attached.read(&mut threads, &mut counters.reads)
            });
            // An exit or exec is asked after every failed read, and every
            // FATE_CHECK_EVERY after good ones: a new program image read
            // through the old attachment is not recorded.
            if read.is_ok()
                && attached.fate_due(false)
                && !matches!(
                    lifecycle::fate(pid, &attached.identity, None),
                    Fate::Running
                )
            {
                read = Err(crate::target::ReadError::TargetExited { pid });
            }
            match read {
                Ok(()) => {
                    last_good_read = Instant::now();
                    let started = Instant::now();
                    attached.record(&mut file.recorder, Tick { clock_ns, weight }, &threads)?;
                    stalls.note("recording the samples", started.elapsed());
                }
                Err(error) => {
                    match lifecycle::fate(pid, &attached.identity, None) {
                        Fate::Running => {}
                        Fate::Ended(ending) => {
                            process_event(
                                &mut file.recorder,
                                &attached.target,
                                ending.kind,
                                ending.code,
                                ending.detail,
                            )?;
                            break 'sampling "target exited".into();
                        }
                        Fate::Execed(now) => {
                            let program = now
                                .exe
                                .as_ref()
                                .map_or_else(|| "?".into(), |p| p.display().to_string());
                            process_event(
                                &mut file.recorder,
                                &attached.target,
                                ProcessEventKind::ProcessExeced,
                                0,
                                format!("exec'd into {program}"),
                            )?;
                            break 'sampling "target exec'd".into();
                        }
                    }
                    errors += 1;
                    counters.errors += 1;
                    stalls.time("attaching again", || attached.failed(&mut file.recorder));
                    if last_good_read.elapsed() > UNREADABLE_LIMIT {
                        break 'sampling format!("no stack readable for 10 s: {error}");
                    }
                }
            }
            stalls.time("compressing a chunk of the recording", || {
                file.recorder.maybe_flush()
            })?;

            let now = Instant::now();
            for (due, heap) in [(&mut next_snapshot, false), (&mut next_heap, true)] {
                if due.is_some_and(|at| now >= at) {
                    let every = if heap {
                        self.spec.settings.heap_every
                    } else {
                        self.spec.settings.snapshot_every
                    };
                    *due = every.map(|d| now + d);
                    let request = SnapshotRequest {
                        locals: !heap && self.spec.settings.locals,
                        heap,
                    };
                    let max_depth = self.spec.settings.max_depth as usize;
                    let taken = stalls.time("taking a snapshot", || {
                        snapshot(&mut attached, &mut file.recorder, request, max_depth)
                    });
                    match taken {
                        Ok(_) => snapshots += 1,
                        Err(error) => tracing::warn!(pid, "snapshot failed: {error:#}"),
                    }
                }
            }

            let rotation = self.spec.rotation;
            if file.bytes() >= rotation.max_bytes || file.opened.elapsed() >= rotation.max_age {
                let reason = if file.bytes() >= rotation.max_bytes {
                    "rotated (size)"
                } else {
                    "rotated (age)"
                };
                let next = self.open(&attached, "continued after rotation")?;
                let previous = std::mem::replace(&mut file, next);
                samples_before_file += previous.recorder.stats().samples;
                let missed = missed_carry + schedule.missed_ticks;
                self.finish(previous, &attached, missed, &counters, reason)?;
                counters = FileCounters {
                    missed_at_open: missed,
                    read_calls_at_open: attached.target.read_calls(),
                    ..Default::default()
                };
            }

            if last_status.elapsed() >= Duration::from_millis(100) {
                last_status = Instant::now();
                let mut status = self.status();
                status.samples = samples_before_file + file.recorder.stats().samples;
                status.ticks = ticks;
                status.missed_ticks = missed_carry + schedule.missed_ticks;
                status.errors = errors;
                status.snapshots = snapshots;
                status.rate_hz = rate;
                status.rate_changes = rate_changes;
                status.configured_rate_hz = self.spec.settings.rate_hz;
                status.cpu_seconds = thread_cpu().as_secs_f64();
            }
        };

        let samples = samples_before_file + file.recorder.stats().samples;
        if end_reason == "target exited" || end_reason.starts_with("target exec") {
            // Already recorded.
        } else {
            let (kind, code, detail) = match lifecycle::fate(pid, &attached.identity, None) {
                Fate::Ended(ending) => (ending.kind, ending.code, ending.detail),
                _ => (
                    ProcessEventKind::ProcessDetached,
                    0,
                    format!("still running when recording stopped: {end_reason}"),
                ),
            };
            process_event(&mut file.recorder, &attached.target, kind, code, detail)?;
        }
        let missed = missed_carry + schedule.missed_ticks;
        self.finish(file, &attached, missed, &counters, &end_reason)?;
        let mut status = self.status();
        status.samples = samples;
        status.ticks = ticks;
        status.missed_ticks = missed;
        status.errors = errors;
        status.snapshots = snapshots;
        status.rate_changes = rate_changes;
        status.cpu_seconds = thread_cpu().as_secs_f64();
        status.state = "finished".into();
        status.end_reason = Some(end_reason);
        Ok(())
    }
}

/// Records a process event of `target` (see [`Recorder::process_event`]).
fn process_event<W: std::io::Write>(
    recorder: &mut Recorder<W>,
    target: &Target,
    kind: ProcessEventKind,
    code: i32,
    detail: String,
) -> Result<()> {
    Ok(recorder.process_event(target, kind, code, 0, detail)?)
}

/// The default `--redact` pattern: secrets in command lines are masked in
/// the daemon's files as in `pydeep attach`'s.
/// Compiled once: `redact::compile` leaks its regex by design.
fn default_redaction() -> Option<&'static regex::Regex> {
    static PATTERN: std::sync::OnceLock<Option<&'static regex::Regex>> = std::sync::OnceLock::new();
    *PATTERN.get_or_init(|| {
        crate::redact::compile(crate::redact::DEFAULT_PATTERN, false)
            .ok()
            .flatten()
    })
}
