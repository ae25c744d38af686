//! One recording session: the sampling loop over one or more attached
//! targets, from the first tick to the footer.
//!
//! The loop runs on the calling thread on a drift-free [`Schedule`]. Each
//! tick reads every thread of every target (pausing them first in blocking
//! mode), hands the stacks to the [`Recorder`], and lets the writer close a
//! chunk when one is due, so a killed agent loses at most the last second.
//! Lateness, missed ticks, read errors and torn stacks are counted and end
//! up in the footer and the summary: the sampler never falls behind silently.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use pydeep_format::files::{Existing, OutputFile};
use pydeep_format::proto::{self, record::Kind, ProcessEventKind};
use pydeep_format::{Writer, WriterOptions};

use crate::exactness::{ReadCounts, ReadMode};
use crate::exit::{Exit, Failure};
use crate::gaps::{GapCounts, Stalls};
use crate::lifecycle::{self, Ending, Fate, Identity};
use crate::objects::Rendering;
use crate::output::BackgroundFile;
use crate::procfs;
use crate::recorder::{proto_version, Recorder, Tick};
use crate::sampled::Sampled;
use crate::schedule::Schedule;
use crate::snapshot::{SnapshotOptions, SnapshotSchedule};
use crate::status::StatusLine;
use crate::{AttachError, Target, ThreadSample};

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
    /// [`crate::exactness`]).
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
    /// recorded command lines (default: [`crate::redact::DEFAULT_PATTERN`]).
    pub redact: Option<&'static regex::Regex>,
    /// Heap count by type this often (default: none).
    pub heap_every: Option<Duration>,
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
    pub snapshots: Option<crate::snapshot::SnapshotStats>,
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

/// One attached process in the session: how it is sampled, and what
/// only `record` and `attach` follow (our child's exit status, an exec
/// away from Python).
struct Attached {
    sampled: Sampled,
    /// The child we started (record mode), whose exit status we can read.
    child: Option<Child>,
    /// Set while our child runs a program that is not Python (after an
    /// exec): when attaching was last tried.
    execed_away: Option<Instant>,
}

/// How long a recording stopped by SIGINT or SIGTERM waits for the program
/// `record` started, which got the signal too, to end.
const CHILD_GRACE: Duration = Duration::from_secs(2);

/// Nanoseconds on CLOCK_MONOTONIC, the clock recordings are timed on.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
    let root_pid = target.pid();
    // `record --subprocesses` makes pydeep the subreaper of the program's
    // tree (commands.rs): a child whose parent exited right after forking
    // is re-parented to pydeep, not to init, and is found among pydeep's
    // own descendants.
    let discovery_root = if child.is_some() && crate::lifecycle::is_subreaper() {
        std::process::id() as i32
    } else {
        root_pid
    };
    let header = header(&target, options);
    // The first write failing removes the file: nothing to verify.
    let file = open_writer(output_file, header, WriterOptions::default())
        .map_err(|e| creation_failure(output, &e))?;
    let mut recorder = Recorder::new(file, options.embed_source, options.include_idle);
    recorder.set_redaction(options.redact);
    recorder.embed_whole_files(options.full_source);

    let mut attached = vec![Attached::new(target, child, options)];
    let mut known_pids: HashSet<i32> = HashSet::from([root_pid]);
    let mut not_python: HashMap<i32, Refused> = HashMap::new();
    process_event(
        &mut recorder,
        &attached[0].sampled.target,
        ProcessEventKind::ProcessAttached,
        0,
        0,
        String::new(),
    )?;

    let start = Instant::now();
    let mut schedule = Schedule::new(start, options.rate_hz);
    let mut snapshots = SnapshotSchedule::new(
        start,
        options.snapshot_every,
        options.heap_every,
        SnapshotOptions {
            values: options.snapshot_values,
            tasks: options.snapshot_tasks,
            globals: options.snapshot_globals,
            max_depth: options.max_depth as usize,
            max_objects: options.snapshot_objects,
            rendering: Rendering {
                redact: options.redact,
                ..SnapshotOptions::default().rendering
            },
            ..SnapshotOptions::default()
        },
    );
    let mut status = StatusLine::new(options.show_status);
    let mut threads: Vec<ThreadSample> = Vec::new();
    let mut ticks = 0u64;
    let mut errors = 0u64;
    let mut last_error: Option<String> = None;
    // The failed reads of each process since its last good one (how many,
    // the last error), counted once the process is read again or recording
    // ends with it attached: reads that failed because the process was
    // exiting (its end came next) are not errors.
    let mut unconfirmed_errors: HashMap<i32, (u64, String)> = HashMap::new();
    let mut last_good_read = Instant::now();
    let mut exited_child: Option<Child> = None;
    let mut last_child_scan = start;
    let mut finished_read_calls = 0u64;
    let mut reads = ReadCounts::default();
    let mut cannot_pause: Option<String> = None;
    let mut stalls = Stalls::default();
    let mut gaps = GapCounts::default();
    // How the first target ended, for the footer's end reason.
    let mut root_ending: Option<String> = None;
    let end_reason: String;

    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            end_reason = "interrupted".into();
            break;
        }
        if options.duration.is_some_and(|d| start.elapsed() >= d) {
            end_reason = "duration reached".into();
            break;
        }
        if attached.is_empty() && options.subprocesses {
            // A last look: the program may have ended right after forking
            // a child not found yet.
            follow_children(
                discovery_root,
                &mut attached,
                &mut known_pids,
                &mut not_python,
                &mut recorder,
                options,
            )?;
        }
        if attached.is_empty() {
            end_reason = format!("target {}", root_ending.as_deref().unwrap_or("exited"));
            break;
        }
        schedule.wait();
        let now = Instant::now();
        if !schedule.take(now) {
            continue;
        }
        ticks += 1;
        snapshots.tick(schedule.missed_ticks);
        let clock_ns = monotonic_ns();
        let weight = schedule.weight();
        if let Some(gap) = stalls.gap(&schedule, now, clock_ns, &mut gaps) {
            recorder.record(Kind::Gap(gap))?;
        }
        let mut index = 0;
        while index < attached.len() {
            let entry = &mut attached[index];
            if entry.execed_away.is_some() {
                // Our child exec'd into a program that is not Python: no
                // stacks to read, but its exit status is still to come,
                // and it may yet exec a Python again.
                match entry.watch(&mut recorder)? {
                    Watch::Ended(ending) => {
                        let gone = attached.remove(index);
                        finished_read_calls += gone.sampled.target.read_calls();
                        if gone.sampled.target.pid() == root_pid {
                            root_ending = Some(ending);
                            exited_child = gone.child;
                        }
                    }
                    Watch::Waiting => index += 1,
                }
                continue;
            }
            // With --blocking a sample whose pause failed is a failed read:
            // taken unpaused, it would not be what was asked.
            let read = stalls.time("reading the target", || {
                entry.sampled.read(&mut threads, &mut reads)
            });
            if cannot_pause.is_none() {
                cannot_pause = entry.sampled.exactness.cannot_pause().map(str::to_owned);
            }
            // Whether the process ended or exec'd is asked after every
            // failed read, and every FATE_CHECK_EVERY after good ones: a
            // new program image read through the old attachment must not
            // be recorded (its samples are dropped here).
            if entry.sampled.fate_due(read.is_err()) {
                match entry.fate() {
                    Fate::Running => {}
                    Fate::Ended(ending) => {
                        let detail = ending.detail.clone();
                        unconfirmed_errors.remove(&entry.sampled.pid());
                        entry.record_ending(&mut recorder, ending)?;
                        let gone = attached.remove(index);
                        finished_read_calls += gone.sampled.target.read_calls();
                        if gone.sampled.target.pid() == root_pid {
                            root_ending = Some(detail);
                            exited_child = gone.child;
                        }
                        continue;
                    }
                    Fate::Execed(now) => {
                        match entry.execed(&mut recorder, now)? {
                            AfterExec::Attached | AfterExec::Watching => index += 1,
                            AfterExec::Detached(detail) => {
                                let gone = attached.remove(index);
                                finished_read_calls += gone.sampled.target.read_calls();
                                if gone.sampled.target.pid() == root_pid {
                                    root_ending = Some(detail);
                                } else {
                                    // A followed descendant that exec'd
                                    // (e.g. subprocess's fork exec'ing a
                                    // new interpreter not yet up) is
                                    // followed again like a new process.
                                    known_pids.remove(&gone.sampled.target.pid());
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            match read {
                Ok(()) => {
                    last_good_read = Instant::now();
                    if let Some((count, error)) = unconfirmed_errors.remove(&entry.sampled.pid()) {
                        errors += count;
                        last_error = Some(error);
                    }
                    let started = Instant::now();
                    entry
                        .sampled
                        .record(&mut recorder, Tick { clock_ns, weight }, &threads)?;
                    stalls.note("recording the samples", started.elapsed());
                    index += 1;
                }
                Err(error) => {
                    let failed = unconfirmed_errors
                        .entry(entry.sampled.pid())
                        .or_insert((0, String::new()));
                    failed.0 += 1;
                    failed.1 = error.to_string();
                    stalls.time("attaching again", || entry.sampled.failed(&mut recorder));
                    index += 1;
                }
            }
        }
        if last_good_read.elapsed() > Duration::from_secs(10) && !attached.is_empty() {
            anyhow::bail!(
                "no stack could be read for 10 s; last error: {}",
                last_error.as_deref().unwrap_or("none")
            );
        }
        if options.subprocesses && last_child_scan.elapsed() >= Duration::from_millis(100) {
            last_child_scan = Instant::now();
            stalls.time("looking for child processes", || {
                follow_children(
                    discovery_root,
                    &mut attached,
                    &mut known_pids,
                    &mut not_python,
                    &mut recorder,
                    options,
                )
            })?;
        }
        if let Some(asked) = snapshots.due(Instant::now()) {
            stalls.time("taking a snapshot", || -> Result<()> {
                for entry in &mut attached {
                    take_snapshot(&mut recorder, entry, &asked, &mut snapshots)?;
                }
                Ok(())
            })?;
            snapshots.ended(schedule.missed_ticks);
        }
        stalls.time("compressing a chunk of the recording", || {
            recorder.maybe_flush()
        })?;
        let bytes = recorder.writer().stats().bytes_written;
        status.update(
            recorder.stats().samples,
            ticks,
            start.elapsed(),
            schedule.last_lag,
            errors,
            bytes,
        );
    }
    status.clear();
    // A failed read of a process still attached at the end is an error; one
    // of a process that ended or exec'd away was its ending.
    for entry in &attached {
        if let Some((count, error)) = unconfirmed_errors.remove(&entry.sampled.pid()) {
            errors += count;
            last_error = Some(error);
        }
    }

    // SIGINT or SIGTERM reached the program `record` started too (passed
    // on by pydeep, or sent by the terminal to the whole group): give it a
    // moment to end, so that its ending is recorded rather than "still
    // running".
    if matches!(
        crate::signals::received(),
        Some(libc::SIGINT | libc::SIGTERM)
    ) {
        let deadline = Instant::now() + CHILD_GRACE;
        while Instant::now() < deadline
            && attached
                .iter_mut()
                .any(|a| a.child.is_some() && matches!(a.fate(), Fate::Running))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    for entry in &mut attached {
        match entry.fate() {
            Fate::Ended(ending) => entry.record_ending(&mut recorder, ending)?,
            _ => process_event(
                &mut recorder,
                &entry.sampled.target,
                ProcessEventKind::ProcessDetached,
                0,
                0,
                format!("still running when recording stopped ({end_reason})"),
            )?,
        }
    }
    let read_calls = finished_read_calls
        + attached
            .iter()
            .map(|a| a.sampled.target.read_calls())
            .sum::<u64>();
    let elapsed = start.elapsed();
    let stats = recorder.stats().clone();
    let footer = proto::Footer {
        sample_count: stats.samples,
        duration_ns: elapsed.as_nanos() as u64,
        missed_ticks: schedule.missed_ticks,
        dropped_samples: 0,
        torn_samples: stats.torn,
        // A torn stack is never read again (a retry is another moment's
        // stack): see crate::exactness.
        torn_retries: 0,
        paused_ticks: reads.pauses.count(),
        held_ticks: reads.held,
        errors,
        max_lag_ns: schedule.max_lag.as_nanos() as u64,
        end_reason: end_reason.clone(),
        snapshot_count: 0,
        chunk_count: 0,
        read_calls,
        gap_count: gaps.count,
        gap_ticks: gaps.ticks,
    };
    let withheld_sources = recorder.withheld_sources().to_vec();
    recorder
        .finish(footer)
        .and_then(|file| Ok(file.close()?))
        .map_err(|e| output_failure(output, &e))?;
    let child = exited_child.or_else(|| attached.into_iter().find_map(|a| a.child));
    Ok((
        SessionSummary {
            output: output.to_owned(),
            samples: stats.samples,
            ticks,
            missed_ticks: schedule.missed_ticks,
            max_lag: schedule.max_lag,
            errors,
            torn: stats.torn,
            elapsed,
            bytes: std::fs::metadata(output).map_or(0, |m| m.len()),
            end_reason,
            read_calls,
            last_error,
            snapshots: (options.snapshot_every.is_some() || options.heap_every.is_some())
                .then(|| snapshots.stats.clone()),
            reads,
            cannot_pause,
            gaps,
            withheld_sources,
        },
        child,
    ))
}

impl Attached {
    fn new(target: Target, child: Option<Child>, options: &SessionOptions) -> Self {
        Attached {
            sampled: Sampled::new(target, options.read_mode, options.max_depth),
            child,
            execed_away: None,
        }
    }

    /// What became of the process since it was attached (see [`lifecycle`]).
    fn fate(&mut self) -> Fate {
        lifecycle::fate(
            self.sampled.target.pid(),
            &self.sampled.identity,
            self.child.as_mut(),
        )
    }

    /// Writes the process event of `ending`.
    fn record_ending<W: Write>(&self, recorder: &mut Recorder<W>, ending: Ending) -> Result<()> {
        process_event(
            recorder,
            &self.sampled.target,
            ending.kind,
            ending.code,
            0,
            ending.detail,
        )
    }

    /// The process exec'd into `now`: records it, then attaches to the new
    /// program if it is a Python. Otherwise our own child is watched until
    /// it exits (its status is still to come); any other process is left.
    fn execed<W: Write>(&mut self, recorder: &mut Recorder<W>, now: Identity) -> Result<AfterExec> {
        let program = now
            .exe
            .as_ref()
            .map_or_else(|| "?".into(), |p| p.display().to_string());
        let argv = recorder.command_line(&now.argv);
        let detail = format!("exec'd into {program} ({})", argv.join(" "));
        recorder.record(Kind::ProcessEvent(proto::ProcessEvent {
            time_ns: monotonic_ns(),
            pid: self.sampled.target.pid() as u32,
            kind: ProcessEventKind::ProcessExeced as i32,
            code: 0,
            parent_pid: 0,
            python_version: None,
            argv,
            detail: detail.clone(),
        }))?;
        self.sampled.identity = now;
        if self.try_attach_again(recorder)? {
            return Ok(AfterExec::Attached);
        }
        if self.child.is_some() {
            self.execed_away = Some(Instant::now());
            return Ok(AfterExec::Watching);
        }
        process_event(
            recorder,
            &self.sampled.target,
            ProcessEventKind::ProcessDetached,
            0,
            0,
            format!("{detail}, not a Python pydeep can read: detached"),
        )?;
        Ok(AfterExec::Detached(format!("{detail}, not a Python")))
    }

    /// Attaches to the process's new program; true (and an ATTACHED event)
    /// if it is a Python pydeep reads.
    fn try_attach_again<W: Write>(&mut self, recorder: &mut Recorder<W>) -> Result<bool> {
        let Ok(fresh) = Target::attach(self.sampled.target.pid()) else {
            return Ok(false);
        };
        // Nothing known of the old image may name a frame of the new one.
        self.sampled.replace(fresh, recorder);
        self.execed_away = None;
        process_event(
            recorder,
            &self.sampled.target,
            ProcessEventKind::ProcessAttached,
            0,
            0,
            "after exec".into(),
        )?;
        Ok(true)
    }

    /// One tick of watching a child that exec'd away from Python: has it
    /// ended, or (tried once a second) become a Python again?
    fn watch<W: Write>(&mut self, recorder: &mut Recorder<W>) -> Result<Watch> {
        match self.fate() {
            Fate::Ended(ending) => {
                let detail = ending.detail.clone();
                self.record_ending(recorder, ending)?;
                return Ok(Watch::Ended(detail));
            }
            Fate::Execed(now) => {
                self.sampled.identity = now;
                self.execed_away = Some(Instant::now());
                self.try_attach_again(recorder)?;
            }
            Fate::Running => {
                if self
                    .execed_away
                    .is_some_and(|at| at.elapsed() >= Duration::from_secs(1))
                {
                    self.execed_away = Some(Instant::now());
                    self.try_attach_again(recorder)?;
                }
            }
        }
        Ok(Watch::Waiting)
    }
}

/// What [`Attached::execed`] did.
enum AfterExec {
    /// The new program is a Python and is sampled.
    Attached,
    /// Our child: watched until it exits.
    Watching,
    /// Left, with why.
    Detached(String),
}

/// What [`Attached::watch`] found.
enum Watch {
    /// It ended, as said.
    Ended(String),
    /// Still running something else.
    Waiting,
}

/// Takes one snapshot of `entry` and records it; a failed snapshot is
/// counted, not fatal (the target may be exiting).
fn take_snapshot<W: Write>(
    recorder: &mut Recorder<W>,
    entry: &mut Attached,
    asked: &SnapshotOptions,
    schedule: &mut SnapshotSchedule,
) -> Result<()> {
    let taken = match crate::snapshot::take(&mut entry.sampled.target, asked) {
        Ok(taken) => taken,
        Err(_) => {
            schedule.stats.failures += 1;
            return Ok(());
        }
    };
    schedule.taken(&taken);
    if asked.scopes {
        entry.sampled.read_names();
    }
    let record = crate::snapshot::to_record_of_target(
        recorder,
        &mut entry.sampled.target,
        &taken,
        &entry.sampled.names,
    );
    recorder.record(Kind::Snapshot(record))?;
    Ok(())
}

fn process_event<W: Write>(
    recorder: &mut Recorder<W>,
    target: &Target,
    kind: ProcessEventKind,
    code: i32,
    parent_pid: i32,
    detail: String,
) -> Result<()> {
    Ok(recorder.process_event(target, kind, code, parent_pid, detail)?)
}

/// A descendant that could not be attached, as it was then.
struct Refused {
    exe: PathBuf,
    argv: Vec<String>,
    at: Instant,
}

impl Refused {
    /// True if `now` is the same program, seen again within a second.
    fn still_applies(&self, now: &Refused) -> bool {
        self.exe == now.exe && self.argv == now.argv && now.at - self.at < Duration::from_secs(1)
    }
}

/// Attaches to new Python descendants of `root_pid` (pydeep's own pid when it
/// is the subreaper of the program it started).
fn follow_children<W: Write>(
    root_pid: i32,
    attached: &mut Vec<Attached>,
    known: &mut HashSet<i32>,
    not_python: &mut HashMap<i32, Refused>,
    recorder: &mut Recorder<W>,
    options: &SessionOptions,
) -> Result<()> {
    for (pid, parent) in procfs::descendants(root_pid) {
        if known.contains(&pid) {
            continue;
        }
        // A fork that has not exec'd yet, or a non-Python program, is tried
        // again when its executable or command line changes (an exec of the
        // same interpreter changes only the latter), or a second later.
        let seen = Refused {
            exe: procfs::executable(pid).unwrap_or_default(),
            argv: procfs::cmdline(pid),
            at: Instant::now(),
        };
        if not_python
            .get(&pid)
            .is_some_and(|refused| refused.still_applies(&seen))
        {
            continue;
        }
        match Target::attach(pid) {
            Ok(target) => {
                known.insert(pid);
                not_python.remove(&pid);
                process_event(
                    recorder,
                    &target,
                    ProcessEventKind::ProcessSpawned,
                    0,
                    parent,
                    String::new(),
                )?;
                attached.push(Attached::new(target, None, options));
            }
            Err(AttachError::NoSuchProcess { .. }) | Err(AttachError::TargetExited { .. }) => {
                known.insert(pid);
            }
            Err(_) => {
                not_python.insert(pid, seen);
            }
        }
    }
    Ok(())
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
        argv: crate::redact::command_line(options.redact, &procfs::cmdline(pid)),
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
        start_clock_ns: monotonic_ns(),
        mode: options.mode.into(),
        // Drawn by the writer, one per file.
        recording_id: 0,
    }
}
