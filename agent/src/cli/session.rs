//! `record` and `attach`: a thin driver of the one sampling loop
//! ([`crate::recording::sampler`]) over a recording's sink ([`crate::recording::sink`]).
//!
//! It creates the file and its header, starts the sink, runs the loop on
//! the calling thread until Ctrl-C, the duration or the targets' end (a
//! status line on stderr between ticks), and turns what the loop and the
//! sink counted into the summary. Lateness, missed ticks, dropped samples,
//! read errors and torn stacks end up in the footer and the summary: the
//! sampler never falls behind silently.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use pydeep_format::files::{Existing, OutputFile};
use pydeep_format::proto;
use pydeep_format::{Writer, WriterOptions};

use crate::cli::exit::{Exit, Failure};
use crate::cli::status::StatusLine;
use crate::process::procfs;
use crate::recording::exactness::{ReadCounts, ReadMode};
use crate::recording::gaps::GapCounts;
use crate::recording::output::BackgroundFile;
use crate::recording::recorder::proto_version;
use crate::recording::sampler::{Driver, Sampler};
use crate::recording::sink::{Destination, Sink, SinkOptions};
use crate::Target;

/// Set by SIGINT / SIGTERM: stop at the next tick and finalize the file.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How a session samples. Defaults are those of the command line.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Samples per second per thread (default 100).
    pub rate_hz: f64,
    /// Stop after this long (default: until interrupted or the target exits).
    pub duration: Option<Duration>,
    /// When ticks are read with the targets paused (default: only while
    /// their stacks change too fast to read them running; see
    /// [`crate::recording::exactness`]).
    pub read_mode: ReadMode,
    /// Record idle threads too (default false).
    pub include_idle: bool,
    /// Follow child processes (default false).
    pub subprocesses: bool,
    /// Embed source files (default true).
    pub embed_source: bool,
    /// Embed whole source files rather than the lines of the code objects
    /// recorded (default false; see sources.rs).
    pub full_source: bool,
    /// Deepest stack read (default 4096).
    pub max_depth: u32,
    /// Show a live status line on stderr (default: when stderr is a terminal).
    pub show_status: bool,
    /// "attach" or "record".
    pub mode: &'static str,
    /// Snapshot of every thread's frames this often (default: none).
    pub snapshot_every: Option<Duration>,
    /// Snapshots include variables, their values and the objects they
    /// reference (default false).
    pub snapshot_values: bool,
    /// Snapshots include asyncio tasks (default false).
    pub snapshot_tasks: bool,
    /// Snapshots include module globals with values (default false).
    pub snapshot_globals: bool,
    /// Most objects per snapshot (default 200).
    pub snapshot_objects: usize,
    /// Values of names matching this are masked in snapshots and in the
    /// recorded command lines (default: [`crate::reading::redact::DEFAULT_PATTERN`]).
    pub redact: Option<&'static regex::Regex>,
    /// Heap count by type this often (default: none).
    pub heap_every: Option<Duration>,
    /// `record --trace`: a trace window opened as soon as the target is
    /// attached, whose events go into the same recording.
    pub trace: Option<crate::trace::TraceOptions>,
}

/// What a session did, printed when it ends.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The recording written.
    pub output: PathBuf,
    /// Samples written.
    pub samples: u64,
    /// Ticks taken.
    pub ticks: u64,
    /// Ticks missed because the sampler was late.
    pub missed_ticks: u64,
    /// Largest lateness of a tick.
    pub max_lag: Duration,
    /// Failed reads.
    pub errors: u64,
    /// Samples flagged torn.
    pub torn: u64,
    /// Samples the recording's sink could not take in time (dropped, not
    /// late: see [`crate::recording::sink`]).
    pub dropped: u64,
    /// Wall time sampled.
    pub elapsed: Duration,
    /// Size of the file.
    pub bytes: u64,
    /// Why it stopped.
    pub end_reason: String,
    /// process_vm_readv calls made.
    pub read_calls: u64,
    /// The last read error seen, if any.
    pub last_error: Option<String>,
    /// Snapshots taken and what they cost (None without snapshots).
    pub snapshots: Option<crate::recording::snapshot::SnapshotStats>,
    /// How the ticks were read: paused (and how long that stopped the
    /// targets) or not.
    pub reads: ReadCounts,
    /// Why ticks the default mode would have read paused were not (a
    /// pause failed), if one did.
    pub cannot_pause: Option<String>,
    /// Stretches the sampler did not observe (recorded as gaps).
    pub gaps: GapCounts,
    /// Source files withheld because the target's own user could not read
    /// them: (name, why).
    pub withheld_sources: Vec<(String, String)>,
}

impl std::fmt::Display for SessionSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(f, "pydeep: wrote {}", self.output.display())?;
        writeln!(
            f,
            "  {} samples in {:.2} s ({} ticks, {:.1} ticks/s achieved), stopped: {}",
            self.samples,
            seconds,
            self.ticks,
            self.ticks as f64 / seconds,
            self.end_reason
        )?;
        writeln!(
            f,
            "  missed ticks {}, max lag {:.2} ms, read errors {}, torn samples {}, reads/tick {:.2}",
            self.missed_ticks,
            self.max_lag.as_secs_f64() * 1e3,
            self.errors,
            self.torn,
            self.read_calls as f64 / self.ticks.max(1) as f64,
        )?;
        write!(
            f,
            "  {} bytes, {:.2} bytes/sample",
            self.bytes,
            self.bytes as f64 / self.samples.max(1) as f64
        )?;
        if self.dropped > 0 {
            write!(
                f,
                "\n  dropped samples {} (the recording's writer fell behind)",
                self.dropped
            )?;
        }
        write!(f, "\n  {}", self.reads)?;
        write!(f, "\n  {}", self.gaps)?;
        for (name, why) in &self.withheld_sources {
            write!(
                f,
                "\n  source withheld: {}: {}",
                pydeep_format::text::escape(name),
                pydeep_format::text::escape(why)
            )?;
        }
        if let Some(why) = &self.cannot_pause {
            write!(
                f,
                "\n  warning: could not pause the target ({why}): stacks that changed while read are flagged torn"
            )?;
        }
        if let Some(snapshots) = &self.snapshots {
            write!(f, "\n{snapshots}")?;
        }
        if let Some(error) = &self.last_error {
            write!(f, "\n  last read error: {error}")?;
        }
        Ok(())
    }
}

/// Records `target` (and, with `subprocesses`, its descendants) into
/// `output` until the duration ends, the session is interrupted or every
/// target has exited. `child` is the process `pydeep record` started.
///
/// A failure to write the recording (a full disk, a file size limit) ends
/// the session at once with [`Exit::OutputError`] and a message naming the
/// cause and the fix; what was written before stays readable.
pub fn run(
    target: Target,
    child: Option<Child>,
    file: OutputFile,
    options: &SessionOptions,
) -> Result<(SessionSummary, Option<Child>)> {
    let output = &file.path().to_path_buf();
    record(target, child, file, options).map_err(|error| {
        let format_error = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<pydeep_format::FormatError>());
        match format_error {
            Some(format_error) if error.downcast_ref::<Failure>().is_none() => {
                output_failure(output, format_error).into()
            }
            _ => error,
        }
    })
}

/// Says why writing `output` failed and what to do, with exit code 9.
pub fn output_failure(output: &Path, error: &pydeep_format::FormatError) -> Failure {
    let path = output.display();
    Failure::new(
        Exit::OutputError,
        format!(
            "cannot write the recording {path}: {}. What was written before the failure is readable: `pydeep verify {path}` says how much",
            output_cause(error)
        ),
    )
}

/// Says why `output` could not be created and what to do, with exit code 9.
pub fn creation_failure(output: &Path, error: &pydeep_format::FormatError) -> Failure {
    Failure::new(
        Exit::OutputError,
        format!(
            "cannot create {}: {}",
            output.display(),
            output_cause(error)
        ),
    )
}

/// The cause of an output error in words, with the fix for the usual ones.
fn output_cause(error: &pydeep_format::FormatError) -> String {
    match error {
        pydeep_format::FormatError::Io(io) => match io.raw_os_error() {
            Some(libc::ENOSPC) => "no space left on device (ENOSPC): free some space, or record to another file system with -o".to_string(),
            Some(libc::EDQUOT) => "disk quota exceeded (EDQUOT): free some space, or record elsewhere with -o".to_string(),
            Some(libc::EFBIG) => "file too large (EFBIG): a file size limit (ulimit -f) was reached; raise it, or record for less time (--duration)".to_string(),
            Some(libc::EIO) => "input/output error (EIO) from the storage device: record to another file system with -o".to_string(),
            _ => format!("{error}"),
        },
        other => format!("{other}"),
    }
}

/// Creates the recording's file at `output` (before attaching or starting
/// anything, so a bad path fails first): never through a symbolic link,
/// mode 0600, an existing file refused, or replaced with `overwrite` by a
/// new file renamed over it. Dropped unused, the file is removed (and a
/// file it was to replace is left as it was).
pub fn create_output(output: &Path, overwrite: bool) -> Result<OutputFile, Failure> {
    let existing = if overwrite {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    OutputFile::create(output, existing, 0o600).map_err(|e| creation_failure(output, &e))
}

/// The recording's writer over `output`, its bytes written by a thread of
/// their own ([`BackgroundFile`]): the sampler never waits on the disk.
/// If the header cannot be written the file is removed. `options`: the
/// default for samples; a trace window deflates faster (trace/mod.rs).
pub fn open_writer(
    output: OutputFile,
    header: proto::Header,
    options: WriterOptions,
) -> Result<Writer<BackgroundFile>, pydeep_format::FormatError> {
    let path = output.path().to_path_buf();
    let file = BackgroundFile::new(output.commit()?)?;
    let remove = |e| {
        let _ = std::fs::remove_file(&path);
        e
    };
    let writer = Writer::new(file, header, options).map_err(remove)?;
    // The header must be on disk: a full disk fails here, not later.
    writer.sink().sync().map_err(|e| remove(e.into()))?;
    Ok(writer)
}

fn record(
    target: Target,
    child: Option<Child>,
    output_file: OutputFile,
    options: &SessionOptions,
) -> Result<(SessionSummary, Option<Child>)> {
    let output = &output_file.path().to_path_buf();
    let header = header(&target, options);
    // The first write failing removes the file: nothing to verify.
    let writer = open_writer(output_file, header, WriterOptions::default())
        .map_err(|e| creation_failure(output, &e))?;
    let sink = Sink::start(Destination::File(writer), sink_options(options))?;
    let mut sampler = Sampler::new(target, child, sink, options, "");
    let mut driver = Session {
        options,
        status: StatusLine::new(options.show_status),
        trace: options
            .trace
            .clone()
            .map(crate::trace::window::TraceWindow::new),
    };
    let stopped = sampler.run(&mut driver);
    driver.status.clear();
    driver.end_trace(&mut sampler);
    let end_reason = stopped?;
    let finished = sampler.finish(end_reason)?;
    if let Some(why) = &finished.gave_up {
        anyhow::bail!("{why}");
    }
    let counters = &finished.counters;
    let stats = &finished.sink.stats;
    Ok((
        SessionSummary {
            output: output.to_owned(),
            samples: stats.samples,
            ticks: finished.ticks,
            missed_ticks: counters.missed_ticks,
            max_lag: finished.max_lag,
            errors: counters.errors,
            torn: stats.torn,
            dropped: counters.dropped_samples,
            elapsed: finished.elapsed,
            bytes: std::fs::metadata(output).map_or(0, |m| m.len()),
            end_reason: finished.end_reason.clone(),
            read_calls: counters.read_calls,
            last_error: finished.last_error.clone(),
            snapshots: (options.snapshot_every.is_some() || options.heap_every.is_some())
                .then(|| finished.snapshots.clone()),
            reads: finished.reads.clone(),
            cannot_pause: finished.cannot_pause.clone(),
            gaps: finished.gaps.clone(),
            withheld_sources: finished.sink.withheld_sources.clone(),
        },
        finished.child,
    ))
}

/// What the sink of a recording made with `options` records.
pub fn sink_options(options: &SessionOptions) -> SinkOptions {
    SinkOptions {
        embed_source: options.embed_source,
        full_source: options.full_source,
        include_idle: options.include_idle,
        redact: options.redact,
    }
}

/// `record` and `attach` between ticks: Ctrl-C, the duration, the status
/// line.
struct Session<'a> {
    options: &'a SessionOptions,
    status: StatusLine,
    /// `record --trace`'s window, until it is over.
    trace: Option<crate::trace::window::TraceWindow>,
}

impl Session<'_> {
    /// Ends the trace window if it is still open (the recording ends
    /// first: Ctrl-C, `--duration`), and says what it traced or why it
    /// failed.
    fn end_trace(&mut self, sampler: &mut Sampler) {
        let Some(mut window) = self.trace.take() else {
            return;
        };
        if !window.done() && !sampler.trace(None, &mut window, true) {
            window.process_gone();
        }
        report_trace(&window);
    }
}

/// Says how a `record --trace` window went.
fn report_trace(window: &crate::trace::window::TraceWindow) {
    let summary = window.summary();
    match &window.failure {
        Some(error) => eprintln!(
            "pydeep: error: the trace window failed, the recording has samples only{}: {error:#}",
            if summary.events > 0 {
                format!(" and {} trace events", summary.events)
            } else {
                String::new()
            }
        ),
        None => eprintln!(
            "pydeep: traced {} events on {} threads ({} lost){}",
            summary.events,
            summary.threads_hooked,
            summary.lost,
            if window.ended_with_the_process() {
                "; the program ended inside the window: events after the last drain (every tick) are not recorded"
            } else {
                ""
            }
        ),
    }
    // The names are read where the recording is written (the sink): the
    // recording has them, this says where to look.
    if let Some(warning) = crate::trace::unwatched_warning(summary.unwatched, &[]) {
        eprintln!(
            "pydeep: warning: {warning}; `pydeep-view top --trace` on the recording names {}",
            if summary.unwatched == 1 { "it" } else { "them" }
        );
    }
}

impl Driver for Session<'_> {
    fn between_ticks(&mut self, sampler: &mut Sampler) -> Option<String> {
        if let Some(window) = &mut self.trace {
            if !sampler.trace(None, window, false) {
                window.process_gone();
            }
            if window.done() {
                let window = self.trace.take().expect("open");
                report_trace(&window);
            }
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Some("interrupted".into());
        }
        if self
            .options
            .duration
            .is_some_and(|d| sampler.started().elapsed() >= d)
        {
            return Some("duration reached".into());
        }
        None
    }

    fn after_tick(&mut self, sampler: &Sampler) {
        self.status.update(
            sampler.sink().samples_written(),
            sampler.ticks(),
            sampler.started().elapsed(),
            sampler.last_lag(),
            sampler.errors(),
            sampler.sink().bytes(),
        );
    }
}

/// The recording header for `target` sampled with `options` (also used
/// by the daemon for each file of a stream).
pub fn header(target: &Target, options: &SessionOptions) -> proto::Header {
    let pid = target.pid();
    let start_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    proto::Header {
        format_version: pydeep_format::FORMAT_VERSION,
        pydeep_version: env!("CARGO_PKG_VERSION").into(),
        pid: pid as u32,
        argv: crate::reading::redact::command_line(options.redact, &procfs::cmdline(pid)),
        executable: procfs::executable(pid)
            .unwrap_or_default()
            .display()
            .to_string(),
        python_version: Some(proto_version(&target.python_version())),
        host_name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        start_unix_ns,
        clock: proto::ClockKind::ClockMonotonic as i32,
        sampling: Some(proto::SamplingConfig {
            rate_hz: options.rate_hz,
            blocking: options.read_mode == ReadMode::Paused,
            include_idle: options.include_idle,
            subprocesses: options.subprocesses,
            embed_source: options.embed_source,
            record_values: options.snapshot_values || options.snapshot_globals,
            max_depth: options.max_depth,
        }),
        start_clock_ns: crate::recording::schedule::monotonic_ns(),
        mode: options.mode.into(),
        // Drawn by the writer, one per file.
        recording_id: 0,
    }
}
