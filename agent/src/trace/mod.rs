//! `pydeep trace PID`: exact calls and returns of a running process, from a
//! tracer library loaded into it ([`inject`]) and drained from its memory
//! ([`ring`]), written into a `.pdr` with the recording writer.
//!
//! One window, phase by phase:
//! 1. the output file is created (0600, never through a link) and the
//!    target attached for reading, like `pydeep attach`;
//! 2. the tracer is loaded at a safe point and started, or, if an earlier
//!    window loaded it, only started;
//! 3. the watchdog in the target installs the hooks (or refuses: another
//!    profiler is installed), and the agent drains the ring every few
//!    milliseconds, bumping the heartbeat, until the duration is over or a
//!    signal (Ctrl-C, SIGTERM, SIGHUP) arrives;
//! 4. stop: every hook is removed; what is left in the ring is drained and
//!    every code object it names read; then the tracer releases them.
//!
//! The window is its own command for now; with the per-target sampler and
//! recording sink (issue #15) it becomes one more source of records for that
//! sink: [`Drain::poll`] is what the sink's thread would call.

#[path = "../../../tracer/src/abi.rs"]
#[allow(dead_code)]
pub mod abi;
pub mod elf;
#[cfg(target_arch = "x86_64")]
pub mod inject;
pub mod ring;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pydeep_format::proto;

use crate::exit::{Exit, Failure};
use crate::Target;

/// Options of `pydeep trace`.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// How long the window stays open (default 5 s); None: until Ctrl-C.
    pub duration: Option<Duration>,
    /// The recording to write.
    pub output: PathBuf,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Record C calls too.
    pub c_calls: bool,
    /// Record line events too.
    pub lines: bool,
    /// Only code objects whose `FILE:QUALNAME` this matches.
    pub functions: Option<regex::Regex>,
    /// How long to wait for a thread at a safe point (default 5 s).
    pub start_timeout: Duration,
}

/// Runs `pydeep trace`.
pub fn run(pid: i32, options: &TraceOptions) -> Result<Exit> {
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pid, options);
        return Err(Failure::new(
            Exit::Failure,
            "pydeep trace loads its tracer by ptrace on x86_64 only; this machine is not x86_64",
        )
        .into());
    }
    #[cfg(target_arch = "x86_64")]
    run_x86_64(pid, options)
}

#[cfg(target_arch = "x86_64")]
fn run_x86_64(pid: i32, options: &TraceOptions) -> Result<Exit> {
    let output = crate::session::create_output(&options.output, options.overwrite)?;
    let mut target = Target::attach(pid).map_err(crate::commands::attach_failure)?;
    let version = target.python_version();
    if version.free_threaded {
        // Refused before anything is written: no empty recording left.
        drop(output);
        let _ = std::fs::remove_file(&options.output);
        return Err(Failure::new(
            Exit::UnsupportedVersion,
            format!("process {pid} runs a free-threaded CPython ({version}): pydeep trace's ring has one writer at a time, which only the GIL guarantees"),
        )
        .into());
    }
    let header = header(&target);
    let start_clock_ns = header.start_clock_ns;
    let writer_options = pydeep_format::WriterOptions {
        compression_level: TRACE_COMPRESSION_LEVEL,
        ..Default::default()
    };
    let writer = crate::session::open_writer(output, header, writer_options)
        .map_err(|e| crate::session::creation_failure(&options.output, &e))?;
    let mut recorder = crate::recorder::Recorder::new(writer, true, true);
    let result = trace_into(&mut target, &mut recorder, pid, options, start_clock_ns);
    let events = match &result {
        Ok(summary) => summary.events,
        Err((_, summary)) => summary.events,
    };
    let finished = recorder
        .finish(proto::Footer::default())
        .map_err(|e| anyhow::Error::from(crate::session::output_failure(&options.output, &e)));
    let summary = match result {
        Ok(summary) => summary,
        Err((error, _)) => {
            if events == 0 {
                // Nothing traced: no recording left behind.
                let _ = std::fs::remove_file(&options.output);
            }
            return Err(error);
        }
    };
    finished?;
    eprintln!(
        "pydeep: traced {} events on {} threads ({} lost{}) into {}",
        summary.events,
        summary.threads_hooked,
        summary.lost,
        if options.functions.is_some() {
            format!(
                "; {} code objects selected, {} not",
                summary.selected, summary.not_selected
            )
        } else {
            String::new()
        },
        options.output.display()
    );
    Ok(Exit::Ok)
}

#[cfg(target_arch = "x86_64")]
fn trace_into<W: std::io::Write>(
    target: &mut Target,
    recorder: &mut crate::recorder::Recorder<W>,
    pid: i32,
    options: &TraceOptions,
    start_clock_ns: u64,
) -> std::result::Result<Summary, (anyhow::Error, Summary)> {
    let none = |e: anyhow::Error| (e, Summary::default());
    let flags = abi::FLAG_CALLS
        | if options.c_calls {
            abi::FLAG_C_CALLS
        } else {
            0
        }
        | if options.lines { abi::FLAG_LINES } else { 0 }
        | if options.functions.is_some() {
            abi::FLAG_SELECT
        } else {
            0
        };
    let reuse = inject::loaded_control(&inject::maps(pid).map_err(inject_failure).map_err(none)?)
        .filter(|control| ring::is_tracer(target, *control));
    let loaded =
        inject::load_and_start(pid, std::process::id(), flags, options.start_timeout, reuse)
            .map_err(inject_failure)
            .map_err(none)?;
    match loaded.start_result {
        0 => {}
        -1 => {
            return Err(none(
                Failure::new(
                    Exit::TraceRefused,
                    format!("process {pid} is already being traced by another pydeep trace; wait for it to end"),
                )
                .into(),
            ))
        }
        other => {
            let message = ring::read_control(target, loaded.control)
                .map(|c| c.message)
                .unwrap_or_default();
            return Err(none(anyhow::anyhow!(
                "the tracer could not start in process {pid} ({other}): {message}"
            )));
        }
    }
    tracing::info!(
        "tracer {} at the {}",
        if loaded.reused { "restarted" } else { "loaded" },
        loaded.safe_point
    );
    let mut drain = Drain::new(target, loaded.control, start_clock_ns);
    if let Some(functions) = &options.functions {
        drain.select(functions.clone());
    }
    drain.lines(options.lines);
    let result = drain.window(recorder, options);
    let summary = drain.summary();
    match result {
        Ok(()) => Ok(summary),
        Err(error) => Err((error, summary)),
    }
}

#[cfg(target_arch = "x86_64")]
fn inject_failure(error: inject::InjectError) -> anyhow::Error {
    use inject::InjectError;
    let exit = match &error {
        InjectError::NoSafePoint { .. } => Exit::NoSafePoint,
        InjectError::Permission { .. } => Exit::PermissionDenied,
        InjectError::Exited(_) => Exit::TargetExited,
        InjectError::Other(_) => Exit::Failure,
    };
    Failure::new(exit, error.to_string()).into()
}

/// Deflate level of a trace recording's chunks. The agent compresses each
/// chunk on the thread that drains the ring, and at the sampler's level 6
/// deflate took 40% of the agent's time (perf, ~1 M events/s drained on a
/// loaded 2-core machine) while the ring overflowed; level 1 is several
/// times faster for a few more bytes per event.
const TRACE_COMPRESSION_LEVEL: u32 = 1;

fn header(target: &Target) -> proto::Header {
    let pid = target.pid();
    proto::Header {
        format_version: pydeep_format::FORMAT_VERSION,
        pydeep_version: env!("CARGO_PKG_VERSION").into(),
        pid: pid as u32,
        argv: crate::redact::command_line(None, &crate::procfs::cmdline(pid)),
        executable: crate::procfs::executable(pid)
            .unwrap_or_default()
            .display()
            .to_string(),
        python_version: Some(crate::recorder::proto_version(&target.python_version())),
        host_name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        start_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        clock: proto::ClockKind::ClockMonotonic as i32,
        sampling: None,
        start_clock_ns: crate::session::monotonic_ns(),
        mode: "trace".into(),
        recording_id: 0,
    }
}

/// What a window saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Events written into the recording.
    pub events: u64,
    /// Events the tracer dropped.
    pub lost: u64,
    /// Threads that got the hook.
    pub threads_hooked: u32,
    /// Code objects `--functions` selected, and those it did not.
    pub selected: u64,
    /// See `selected`.
    pub not_selected: u64,
}

/// `--functions`: the agent's decisions, mirrored into the tracer's
/// selection table so that the tracer skips the events of code objects
/// not selected. The agent decides on each code object the first time an
/// event names it and filters every event by its own decision, so the
/// tracer's copy only saves work: an event of a code object it has no
/// decision for yet is written and filtered here.
struct Selection {
    regex: regex::Regex,
    /// Code object address → selected. The tracer keeps every code object
    /// an event named alive until the window ends, so an address names one
    /// code object for the whole window.
    decided: std::collections::HashMap<u64, bool>,
    /// What the agent wrote into the tracer's table, slot by slot.
    slots: Vec<u64>,
}

/// Events per batch record.
const BATCH: usize = 8192;
/// How long the tracer may take to install or remove its hooks (it waits
/// for the GIL, which a thread in a long C call may hold).
const GIL_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's side of one window: drains the ring into the recording.
pub struct Drain<'a> {
    target: &'a mut Target,
    control: u64,
    read_pos: u64,
    heartbeat: u64,
    batch: proto::TraceEventBatch,
    last_time_ns: u64,
    threads: std::collections::HashMap<u32, u32>,
    frames: std::collections::HashMap<(u64, bool), u64>,
    lines: std::collections::HashMap<(u64, u32, u32), u64>,
    native: std::collections::HashMap<String, u64>,
    seen_dropped: u64,
    buffer: Vec<u8>,
    summary: Summary,
    first_batch: bool,
    selection: Option<Selection>,
    select_address: u64,
    lines_asked: bool,
}

impl<'a> Drain<'a> {
    /// A drain of the tracer whose control block is at `control`.
    /// `start_clock_ns` is the recording header's: the first event's time
    /// counts from it.
    pub fn new(target: &'a mut Target, control: u64, start_clock_ns: u64) -> Self {
        let start = start_clock_ns;
        Drain {
            target,
            control,
            read_pos: 0,
            heartbeat: 0,
            batch: proto::TraceEventBatch::default(),
            last_time_ns: start,
            threads: Default::default(),
            frames: Default::default(),
            lines: Default::default(),
            native: Default::default(),
            seen_dropped: 0,
            buffer: Vec::new(),
            summary: Summary::default(),
            first_batch: true,
            selection: None,
            select_address: 0,
            lines_asked: false,
        }
    }

    /// Says in the recording that line events were asked for.
    pub fn lines(&mut self, asked: bool) {
        self.lines_asked = asked;
    }

    /// Records only code objects whose `FILE:QUALNAME` `regex` matches.
    pub fn select(&mut self, regex: regex::Regex) {
        self.selection = Some(Selection {
            regex,
            decided: Default::default(),
            slots: vec![0; abi::SELECT_CAPACITY],
        });
    }

    /// True if events of the code object at `code` are recorded.
    fn selected(&mut self, code: u64) -> bool {
        let Some(selection) = &mut self.selection else {
            return true;
        };
        if let Some(&decided) = selection.decided.get(&code) {
            return decided;
        }
        let chosen = match self.target.code_object(code) {
            Ok((_, object)) => selection
                .regex
                .is_match(&format!("{}:{}", object.filename, object.qualname)),
            Err(_) => false,
        };
        selection.decided.insert(code, chosen);
        if chosen {
            self.summary.selected += 1;
        } else {
            self.summary.not_selected += 1;
        }
        // Tell the tracer (best effort: a full probe sequence leaves the
        // code object undecided there, and its events filtered here).
        if self.select_address != 0 {
            let mut slot = abi::select_slot(code);
            for _ in 0..abi::SELECT_PROBES {
                if selection.slots[slot] == 0 {
                    let entry = code
                        | if chosen {
                            abi::SELECT_YES
                        } else {
                            abi::SELECT_NO
                        };
                    let address = self.select_address + slot as u64 * 8;
                    if ring::write_u64(self.target.pid(), address, entry).is_ok() {
                        selection.slots[slot] = entry;
                    }
                    break;
                }
                slot = (slot + 1) & (abi::SELECT_CAPACITY - 1);
            }
        }
        chosen
    }

    /// What the window saw so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    fn beat(&mut self) -> Result<()> {
        self.heartbeat += 1;
        ring::write_u64(
            self.target.pid(),
            self.control + abi::offset::HEARTBEAT,
            self.heartbeat,
        )
        .context("cannot write the tracer's heartbeat")
    }

    fn command(&mut self, command: u32) -> Result<()> {
        ring::write_u32(
            self.target.pid(),
            self.control + abi::offset::COMMAND,
            command,
        )
        .context("cannot write the tracer's command word")
    }

    /// Waits (draining) until the tracer's state is one of `states`.
    fn wait_state<W: std::io::Write>(
        &mut self,
        recorder: &mut crate::recorder::Recorder<W>,
        states: &[u32],
        timeout: Duration,
    ) -> Result<ring::ControlBlock> {
        let until = Instant::now() + timeout;
        loop {
            self.beat()?;
            let control = self.poll(recorder)?;
            if states.contains(&control.state) {
                return Ok(control);
            }
            if !crate::procfs::is_alive(self.target.pid()) {
                return Err(Failure::new(
                    Exit::TargetExited,
                    format!(
                        "process {} exited during the trace window",
                        self.target.pid()
                    ),
                )
                .into());
            }
            if Instant::now() >= until {
                anyhow::bail!(
                    "the tracer in process {} did not reach state {states:?} within {timeout:?} (state {}): a thread holds the GIL in a long C call",
                    self.target.pid(),
                    control.state
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// One whole window: wait for the hooks, drain until the end, stop,
    /// drain the rest, release.
    pub fn window<W: std::io::Write>(
        &mut self,
        recorder: &mut crate::recorder::Recorder<W>,
        options: &TraceOptions,
    ) -> Result<()> {
        let started = self.wait_state(
            recorder,
            &[
                abi::STATE_TRACING,
                abi::STATE_REFUSED,
                abi::STATE_FAILED,
                abi::STATE_RELEASED,
            ],
            GIL_TIMEOUT,
        )?;
        match started.state {
            abi::STATE_TRACING => {}
            abi::STATE_REFUSED => {
                return Err(Failure::new(
                    Exit::TraceRefused,
                    format!("process {}: {}", self.target.pid(), started.message),
                )
                .into())
            }
            _ => anyhow::bail!(
                "the tracer in process {} failed: {}",
                self.target.pid(),
                started.message
            ),
        }
        eprintln!(
            "pydeep: tracing process {} (hooks on {} threads){}",
            self.target.pid(),
            started.threads_hooked,
            match options.duration {
                Some(d) => format!(" for {d:?}"),
                None => " until Ctrl-C".into(),
            }
        );
        let end = options.duration.map(|d| Instant::now() + d);
        let outcome = (|| -> Result<()> {
            loop {
                if crate::signals::received().is_some() {
                    return Ok(());
                }
                if end.is_some_and(|end| Instant::now() >= end) {
                    return Ok(());
                }
                self.beat()?;
                let before = self.read_pos;
                let control = self.poll(recorder)?;
                if control.state != abi::STATE_TRACING {
                    // The watchdog ended the window by itself (it saw no
                    // heartbeat: this agent was stopped too long).
                    return Ok(());
                }
                if !crate::procfs::is_alive(self.target.pid()) {
                    return Err(Failure::new(
                        Exit::TargetExited,
                        format!(
                            "process {} exited during the trace window",
                            self.target.pid()
                        ),
                    )
                    .into());
                }
                // Sleep only while the ring is quiet.
                if self.read_pos - before < abi::CAPACITY / 16 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })();
        // Whatever ended the window: stop, drain, release.
        let stop = self.command(abi::COMMAND_STOP).and_then(|()| {
            self.wait_state(
                recorder,
                &[abi::STATE_STOPPED, abi::STATE_RELEASED],
                GIL_TIMEOUT,
            )
        });
        let drained = stop.and_then(|control| {
            self.poll(recorder)?;
            self.summary.threads_hooked = control.threads_hooked;
            self.flush(recorder, Some(&control))
        });
        let released = self.command(abi::COMMAND_RELEASE);
        outcome?;
        drained?;
        released?;
        Ok(())
    }

    /// Reads what the ring holds into the batch; returns the control block.
    pub fn poll<W: std::io::Write>(
        &mut self,
        recorder: &mut crate::recorder::Recorder<W>,
    ) -> Result<ring::ControlBlock> {
        let pid = self.target.pid();
        let control = ring::read_control(self.target, self.control)
            .context("cannot read the tracer's control block")?;
        self.select_address = control.select_address;
        let available = control
            .write_pos
            .saturating_sub(self.read_pos)
            .min(abi::CAPACITY);
        if available > 0 {
            let mut left = available;
            while left > 0 {
                let index = self.read_pos % abi::CAPACITY;
                let count = left.min(abi::CAPACITY - index).min(65_536);
                self.buffer.resize((count * abi::EVENT_SIZE) as usize, 0);
                self.target
                    .memory()
                    .read(
                        control.ring_address + index * abi::EVENT_SIZE,
                        &mut self.buffer,
                    )
                    .context("cannot read the tracer's ring")?;
                let buffer = std::mem::take(&mut self.buffer);
                for event in buffer.chunks_exact(abi::EVENT_SIZE as usize) {
                    self.event(recorder, pid, event);
                }
                self.buffer = buffer;
                self.read_pos += count;
                left -= count;
                ring::write_u64(pid, self.control + abi::offset::READ_POS, self.read_pos)
                    .context("cannot write the tracer's read position")?;
            }
        }
        if control.dropped > self.seen_dropped {
            self.batch.lost += control.dropped - self.seen_dropped;
            if self.batch.lost_first_ns == 0 {
                self.batch.lost_first_ns = control.first_drop_ns;
            }
            self.batch.lost_last_ns = control.last_drop_ns;
            self.summary.lost += control.dropped - self.seen_dropped;
            self.seen_dropped = control.dropped;
        }
        if self.first_batch && control.start_ns != 0 {
            self.batch.window_start_ns = control.start_ns;
        }
        if self.batch.kind.len() >= BATCH {
            self.flush(recorder, None)?;
        }
        Ok(control)
    }

    fn event<W: std::io::Write>(
        &mut self,
        recorder: &mut crate::recorder::Recorder<W>,
        pid: i32,
        event: &[u8],
    ) {
        use abi::event as e;
        let u64_at =
            |at: usize| u64::from_le_bytes(event[at..at + 8].try_into().unwrap_or_default());
        let u32_at =
            |at: usize| u32::from_le_bytes(event[at..at + 4].try_into().unwrap_or_default());
        let time_ns = u64_at(e::TIME_NS);
        let object = u64_at(e::OBJECT);
        let native_id = u32_at(e::THREAD);
        let kind = match u32_at(e::KIND) {
            abi::KIND_LINE => proto::TraceEventKind::TraceLine,
            abi::KIND_CALL => proto::TraceEventKind::TraceCall,
            abi::KIND_RETURN => proto::TraceEventKind::TraceReturn,
            abi::KIND_C_CALL => proto::TraceEventKind::TraceCCall,
            abi::KIND_C_RETURN => proto::TraceEventKind::TraceCReturn,
            _ => return,
        };
        let c_function = matches!(
            kind,
            proto::TraceEventKind::TraceCCall | proto::TraceEventKind::TraceCReturn
        );
        if !c_function && !self.selected(object) {
            return;
        }
        let thread = match self.threads.get(&native_id) {
            Some(id) => *id,
            None => {
                let id = self.define_thread(recorder, pid, native_id);
                self.threads.insert(native_id, id);
                id
            }
        };
        let frame = if kind == proto::TraceEventKind::TraceLine {
            let offset = u32_at(e::OFFSET);
            let line = u32_at(e::LINE);
            match self.lines.get(&(object, offset, line)) {
                Some(id) => *id,
                None => {
                    let version = self.target.python_version();
                    let id = recorder.line_frame(self.target, pid, &version, object, offset, line);
                    self.lines.insert((object, offset, line), id);
                    id
                }
            }
        } else {
            match self.frames.get(&(object, c_function)) {
                Some(id) => *id,
                None => {
                    let id = if c_function {
                        let name = ring::c_function_name(self.target, object)
                            .unwrap_or_else(|| "<C function>".into());
                        *self
                            .native
                            .entry(name.clone())
                            .or_insert_with(|| recorder.native_frame(&name))
                    } else {
                        let version = self.target.python_version();
                        recorder.frame(
                            self.target,
                            pid,
                            &version,
                            &crate::FrameSample {
                                code_address: object,
                                instruction_offset: 0,
                                is_generator: false,
                                is_shim: false,
                            },
                        )
                    };
                    self.frames.insert((object, c_function), id);
                    id
                }
            }
        };
        self.batch
            .time_delta_ns
            .push(time_ns.saturating_sub(self.last_time_ns));
        self.last_time_ns = self.last_time_ns.max(time_ns);
        self.batch.thread.push(thread);
        self.batch.kind.push(kind as i32);
        self.batch.frame.push(frame);
        self.summary.events += 1;
    }

    fn define_thread<W: std::io::Write>(
        &mut self,
        recorder: &mut crate::recorder::Recorder<W>,
        pid: i32,
        native_id: u32,
    ) -> u32 {
        let mut threads = Vec::new();
        let _ = self.target.sample_threads_without_frames(&mut threads);
        let names = self.target.thread_names().unwrap_or_default();
        let sample = threads
            .into_iter()
            .find(|t| t.native_id == native_id as u64)
            .unwrap_or(crate::ThreadSample {
                thread_id: native_id as u64,
                native_id: native_id as u64,
                is_main: native_id as i32 == pid,
                ..Default::default()
            });
        let name = names.get(&sample.thread_id).cloned();
        recorder.thread(pid, &sample, name.as_deref())
    }

    fn flush<W: std::io::Write>(
        &mut self,
        recorder: &mut crate::recorder::Recorder<W>,
        last: Option<&ring::ControlBlock>,
    ) -> Result<()> {
        if let Some(control) = last {
            self.batch.window_end_ns = control.stop_ns.max(1);
            self.batch.threads_hooked = control.threads_hooked;
            self.batch.threads_line_hooked = control.threads_line_hooked;
            if self.first_batch {
                self.batch.window_start_ns = control.start_ns;
            }
        }
        if self.first_batch {
            self.batch.lines = self.lines_asked;
            if let Some(selection) = &self.selection {
                self.batch.functions = selection.regex.as_str().to_owned();
            }
        }
        let batch = std::mem::take(&mut self.batch);
        self.first_batch = false;
        recorder
            .record(proto::record::Kind::TraceEvents(batch))
            .context("cannot write trace events")?;
        recorder
            .maybe_flush()
            .context("cannot write the recording")?;
        Ok(())
    }
}
