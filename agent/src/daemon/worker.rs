//! One target's recorder: a dedicated OS thread that attaches and runs the
//! one sampling loop ([`crate::recording::sampler`]) as a thin driver: between ticks
//! it obeys commands from the control plane (snapshot, flush, reconfigure,
//! stop), follows the CPU budget's rate and publishes its status. The
//! target's stream of rotated files is written by its sink
//! ([`crate::recording::sink`]) on a thread of its own. Sampling makes blocking
//! system calls (`process_vm_readv`, ptrace) at up to kHz rates: it never
//! runs on the async executor.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::budget::{effective_rate, thread_cpu, RateFactor};
use super::config::TargetSettings;
use super::discovery::Process;
use crate::cli::session::{self, SessionOptions};
use crate::recording::exactness::ReadMode;
use crate::recording::rotation::Rotation;
use crate::recording::rotation::StreamFile;
use crate::recording::sampler::{Driver, Sampler};
use crate::recording::sink::{Destination, FileNews, Input, Sink, Stream};
use crate::recording::snapshot::SnapshotOptions;
use crate::{AttachError, Target};

pub use crate::recording::snapshot::SnapshotReport;

/// How long a selected process may take to become attachable: a process
/// found just after `exec` has no interpreter yet.
const ATTACH_GRACE: Duration = Duration::from_secs(5);

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotRequest {
    /// Each frame's variables with their values.
    pub locals: bool,
    /// Objects counted by type from the GC lists.
    pub heap: bool,
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
    /// Open a bounded trace window into the recording (`ctl trace`).
    Trace {
        /// The window.
        options: crate::trace::TraceOptions,
        /// Answered when it is over: what it traced.
        reply: oneshot::Sender<Result<crate::trace::Summary, String>>,
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
    /// True while a trace window (`ctl trace`) has its hooks in.
    pub tracing: bool,
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
            trace: None,
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

    /// Creates the stream's first file and starts its sink.
    fn start_sink(&self, target: &Target, options: &SessionOptions) -> Result<Sink> {
        let header = session::header(target, options);
        let spec = &self.spec;
        let (file, writer) = StreamFile::create(
            &spec.output_dir,
            &spec.name,
            spec.process.pid,
            header.clone(),
        )
        .with_context(|| format!("creating a recording in {}", spec.output_dir.display()))?;
        let status = self.status.clone();
        let reports = self.reports.clone();
        let pid = spec.process.pid;
        let news = move |news: FileNews| {
            let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
            match news {
                FileNews::Opened(path) => {
                    tracing::debug!(pid, file = %path.display(), "opened");
                    status.current_file = Some(path);
                }
                FileNews::Finished(path, size) => {
                    tracing::info!(pid, file = %path.display(), bytes = size, "finished");
                    status.files_finished += 1;
                    status.bytes += size;
                    status.last_file = Some(path.clone());
                    status.current_file = None;
                    let _ = reports.send(Report::FileFinished { path });
                }
            }
        };
        let stream = Stream {
            file,
            dir: spec.output_dir.clone(),
            name: spec.name.clone(),
            pid,
            header,
            rotation: spec.rotation,
            news: Box::new(news),
        };
        let sink = Sink::start(
            Destination::Stream(writer, Box::new(stream)),
            session::sink_options(options),
        )?;
        Ok(sink)
    }

    fn run(&mut self) -> Result<()> {
        let Some(target) = self.attach() else {
            return Ok(());
        };
        let pid = target.pid();
        let version = target.python_version();
        tracing::info!(pid, target = %self.spec.name, python = %version, "attached");
        let rate = effective_rate(self.spec.settings.rate_hz, self.factor.get());
        let options = SessionOptions {
            rate_hz: rate,
            ..self.session_options()
        };
        let sink = self.start_sink(&target, &options)?;
        let mut sampler = Sampler::new(target, None, sink, &options, "");
        {
            let mut status = self.status();
            status.state = "recording".into();
            status.python_version = version.to_string();
            status.configured_rate_hz = self.spec.settings.rate_hz;
            status.rate_hz = rate;
        }
        let mut driver = Daemon {
            worker: self,
            rate_changes: 0,
            last_status: Instant::now(),
            trace: None,
        };
        let end_reason = sampler.run(&mut driver);
        driver.end_trace(&mut sampler);
        let end_reason = end_reason?;
        let rate_changes = driver.rate_changes;
        let ticks = sampler.ticks();
        let snapshots = sampler.snapshots_taken();
        let finished = sampler
            .finish(end_reason)
            .context("finishing a recording")?;
        let mut status = self.status();
        status.samples = finished.sink.samples_total;
        status.ticks = ticks;
        status.missed_ticks = finished.counters.missed_ticks;
        status.errors = finished.counters.errors;
        status.snapshots = snapshots;
        status.rate_changes = rate_changes;
        status.cpu_seconds = thread_cpu().as_secs_f64();
        status.state = "finished".into();
        status.end_reason = Some(finished.end_reason);
        Ok(())
    }
}

/// A daemon target between ticks: its commands, its rate, its status.
struct Daemon<'a> {
    worker: &'a mut Worker,
    rate_changes: u64,
    last_status: Instant,
    /// The open trace window (`ctl trace`) and where its answer goes.
    trace: Option<TraceWindowAsked>,
}

/// A trace window asked for by `ctl trace`.
type TraceWindowAsked = (
    crate::trace::window::TraceWindow,
    oneshot::Sender<Result<crate::trace::Summary, String>>,
);

impl Daemon<'_> {
    /// Steps the open trace window (or, with `close`, ends it); answers
    /// once it is over.
    fn step_trace(&mut self, sampler: &mut Sampler, close: bool) {
        let Some((window, _)) = &mut self.trace else {
            return;
        };
        let pid = self.worker.spec.process.pid;
        if !sampler.trace(Some(pid), window, close) {
            window.process_gone();
        }
        let tracing = window.tracing();
        if self.worker.status().tracing != tracing {
            self.worker.status().tracing = tracing;
        }
        if window.done() {
            let (window, reply) = self.trace.take().expect("open");
            let answer = match &window.failure {
                Some(error) => Err(format!("{error:#}")),
                None if window.ended_with_the_process() && window.summary().events == 0 => {
                    Err(format!("process {pid} ended before the window opened"))
                }
                None => Ok(window.summary()),
            };
            let _ = reply.send(answer);
        }
    }

    /// Ends the trace window, if one is open, before the recording ends.
    fn end_trace(&mut self, sampler: &mut Sampler) {
        self.step_trace(sampler, true);
    }
}

impl Driver for Daemon<'_> {
    fn between_ticks(&mut self, sampler: &mut Sampler) -> Option<String> {
        // Commands first: a stop or a snapshot never waits a whole tick.
        loop {
            let command = match self.worker.commands.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Some("daemon stopped".into()),
            };
            match command {
                Command::Stop { reason } => return Some(reason),
                Command::Flush { reply } => {
                    sampler.sink().send(Input::Flush(Box::new(move |flushed| {
                        let _ = reply.send(flushed);
                    })));
                }
                Command::Snapshot { request, reply } => {
                    let asked = SnapshotOptions {
                        scopes: true,
                        values: request.locals,
                        heap: request.heap,
                        max_depth: self.worker.spec.settings.max_depth as usize,
                        ..SnapshotOptions::default()
                    };
                    let result = sampler.snapshot_now(&asked);
                    let _ = reply.send(result.map_err(|e| format!("{e:#}")));
                }
                Command::Trace { options, reply } => {
                    if self.trace.is_some() {
                        let _ = reply.send(Err(format!(
                            "a trace window is already open in process {}",
                            self.worker.spec.process.pid
                        )));
                    } else {
                        self.trace = Some((crate::trace::window::TraceWindow::new(options), reply));
                    }
                }
                Command::Reconfigure { settings, rotation } => {
                    self.worker.spec.settings = settings;
                    self.worker.spec.rotation = rotation;
                    sampler.set_snapshots(&self.worker.session_options());
                    sampler.sink().send(Input::Rotation(rotation));
                }
            }
        }
        self.step_trace(sampler, false);
        // The CPU budget (or a new configuration) may have moved the rate.
        let factor = self.worker.factor.get();
        let wanted = effective_rate(self.worker.spec.settings.rate_hz, factor);
        let rate = sampler.rate();
        if (wanted - rate).abs() > 0.02 * rate {
            let why = if factor < 1.0 {
                "cpu budget"
            } else {
                "configuration"
            };
            sampler.set_rate(wanted, why);
            self.rate_changes += 1;
        }
        None
    }

    fn after_tick(&mut self, sampler: &Sampler) {
        if self.last_status.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_status = Instant::now();
        let mut status = self.worker.status();
        status.samples = sampler.sink().samples_written();
        status.ticks = sampler.ticks();
        status.missed_ticks = sampler.missed_ticks();
        status.errors = sampler.errors();
        status.snapshots = sampler.snapshots_taken();
        status.rate_hz = sampler.rate();
        status.rate_changes = self.rate_changes;
        status.configured_rate_hz = self.worker.spec.settings.rate_hz;
        status.cpu_seconds = thread_cpu().as_secs_f64();
    }
}

/// The default `--redact` pattern: secrets in command lines are masked in
/// the daemon's files as in `pydeep attach`'s.
/// Compiled once: `redact::compile` leaks its regex by design.
fn default_redaction() -> Option<&'static regex::Regex> {
    static PATTERN: std::sync::OnceLock<Option<&'static regex::Regex>> = std::sync::OnceLock::new();
    *PATTERN.get_or_init(|| {
        crate::reading::redact::compile(crate::reading::redact::DEFAULT_PATTERN, false)
            .ok()
            .flatten()
    })
}
