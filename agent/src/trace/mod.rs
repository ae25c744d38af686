//! `pydeep trace PID`: exact calls and returns of a running process, from a
//! tracer library loaded into it ([`inject`]) and drained from its memory
//! ([`ring`]), written into a `.pdr` with the recording writer.
//!
//! One window, phase by phase:
//! 1. the output file is created (0600, never through a link) and the
//!    target attached for reading, like `pydeep attach`;
//! 2. the tracer is loaded at a safe point and started, or, if an earlier
//!    window loaded it, only started (3.14+: by CPython's remote-debugger
//!    protocol, [`remote_exec`], instead of ptrace; chosen in [`Start::of`]);
//! 3. the watchdog in the target installs the hooks (or refuses: another
//!    profiler is installed), and the agent drains the ring every few
//!    milliseconds, bumping the heartbeat, until the duration is over or a
//!    signal (Ctrl-C, SIGTERM, SIGHUP) arrives;
//! 4. stop: every hook is removed; what is left in the ring is drained and
//!    every code object it names read; then the tracer releases them.
//!
//! The same [`Drain`] is also one more source of a sampled target's
//! recording ([`window`]: `record --trace`, `ctl trace`): stepped on the
//! sampler thread, its batches interned by the recording's sink
//! ([`intern`]) with the samples' recorder.

#[path = "../../../tracer/src/abi.rs"]
#[allow(dead_code)]
pub mod abi;
pub mod clock;
pub mod elf;
#[cfg(target_arch = "x86_64")]
pub mod inject;
pub mod intern;
pub mod remote_exec;
pub mod ring;
#[cfg(target_arch = "x86_64")]
pub mod window;

pub use intern::{Interner, RawBatch, RawEvent};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pydeep_format::proto;

use crate::cli::exit::{Exit, Failure};
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
    /// Count every instruction of the selected code objects.
    pub opcodes: bool,
    /// Only code objects whose `FILE:QUALNAME` this matches.
    pub functions: Option<regex::Regex>,
    /// How long to wait for a thread at a safe point (default 5 s).
    pub start_timeout: Duration,
    /// The control block of a tracer already started in the target
    /// (`record --trace` starts it before the program's first line,
    /// [`start_early`]): the window only drains it.
    pub preloaded: Option<u64>,
}

/// The tracer flags of a window with `options`.
fn flags_of(options: &TraceOptions) -> u32 {
    abi::FLAG_CALLS
        | if options.c_calls {
            abi::FLAG_C_CALLS
        } else {
            0
        }
        | if options.lines { abi::FLAG_LINES } else { 0 }
        | if options.opcodes {
            abi::FLAG_OPCODES
        } else {
            0
        }
        | if options.functions.is_some() {
            abi::FLAG_SELECT
        } else {
            0
        }
        | if clock::tsc_invariant() {
            abi::FLAG_TSC
        } else {
            0
        }
        | calls_forced()
}

/// `PYDEEP_TRACE_CALLS=profile|eval-frame|monitoring`: forces how the
/// tracer records Python calls, for measurements and tests (the tracer
/// falls back to its own choice where the one asked for is not available;
/// `--c-calls` always uses the profile function). Unset: the tracer
/// decides per version (notes/tracing.md, "Cost").
fn calls_forced() -> u32 {
    let asked = std::env::var("PYDEEP_TRACE_CALLS").unwrap_or_default();
    CALLS_BY
        .iter()
        .find(|by| by.name == asked)
        .map_or(0, |by| by.flag)
}

/// One way the tracer records Python calls (`abi::CALLS_BY_*`).
struct CallsBy {
    /// The control block's word.
    word: u32,
    /// The flag that forces it.
    flag: u32,
    /// Its name in `PYDEEP_TRACE_CALLS` and in the recording
    /// (`TraceEventBatch.calls_by`).
    name: &'static str,
    /// What `pydeep trace` says when the window opens.
    description: &'static str,
}

/// Every way the tracer records calls (notes/tracing.md, "Cost").
const CALLS_BY: [CallsBy; 3] = [
    CallsBy {
        word: abi::CALLS_BY_EVAL_FRAME,
        flag: abi::FLAG_CALLS_BY_EVAL_FRAME,
        name: "eval-frame",
        description: "PEP 523's eval-frame hook",
    },
    CallsBy {
        word: abi::CALLS_BY_MONITORING,
        flag: abi::FLAG_CALLS_BY_MONITORING,
        name: "monitoring",
        description: "a sys.monitoring tool",
    },
    CallsBy {
        word: abi::CALLS_BY_PROFILE,
        flag: abi::FLAG_CALLS_BY_PROFILE,
        name: "profile",
        description: "a C profile function",
    },
];

/// The name the recording gives the control block's `calls_by` word
/// (empty if the tracer did not say).
pub fn calls_by_name(word: u32) -> &'static str {
    CALLS_BY
        .iter()
        .find(|by| by.word == word)
        .map_or("", |by| by.name)
}

/// How `pydeep trace` describes the control block's `calls_by` word.
fn calls_by_description(word: u32) -> &'static str {
    CALLS_BY
        .iter()
        .find(|by| by.word == word)
        .map_or("an unknown way", |by| by.description)
}

/// `record --trace`: starts the tracer in the program `record` just
/// started with `PTRACE_TRACEME` (stopped at its exec), at `Py_RunMain`,
/// with the hooks in before the program's first line
/// ([`inject::start_at_main`]). The control block's address, or why not
/// (the program then runs on untouched).
#[cfg(target_arch = "x86_64")]
pub fn start_early(pid: i32, options: &TraceOptions) -> Result<u64> {
    let loaded = inject::start_at_main(
        pid,
        std::process::id(),
        flags_of(options),
        options.start_timeout,
    )
    .map_err(inject_failure)?;
    if loaded.start_result != 0 {
        anyhow::bail!(
            "the tracer could not start in process {pid} ({})",
            loaded.start_result
        );
    }
    if std::env::var_os("PYDEEP_TRACE_PHASES").is_some() {
        eprintln!(
            "pydeep: tracer started in process {pid} at the {} ({:.1} ms after the exec)",
            loaded.safe_point,
            loaded
                .phases
                .iter()
                .map(|(_, took)| took.as_secs_f64() * 1e3)
                .sum::<f64>()
        );
    }
    Ok(loaded.control)
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
    let output = crate::cli::session::create_output(&options.output, options.overwrite)?;
    let mut target = Target::attach(pid).map_err(crate::cli::commands::attach_failure)?;
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
    let writer_options = pydeep_format::WriterOptions {
        compression_level: TRACE_COMPRESSION_LEVEL,
        ..Default::default()
    };
    let writer = crate::cli::session::open_writer(output, header, writer_options)
        .map_err(|e| crate::cli::session::creation_failure(&options.output, &e))?;
    let mut recorder = crate::recording::recorder::Recorder::new(writer, true, true);
    let result = trace_into(&mut target, &mut recorder, pid, options);
    let events = match &result {
        Ok((summary, _)) => summary.events,
        Err((_, summary)) => summary.events,
    };
    let finished = recorder
        .finish(proto::Footer::default())
        .map_err(|e| anyhow::Error::from(crate::cli::session::output_failure(&options.output, &e)));
    let (summary, unwatched) = match result {
        Ok(done) => done,
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
        "pydeep: traced {} events on {} threads ({} lost{}{}) into {}",
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
        if options.opcodes {
            format!(
                "; {} executions of {} instructions counted, {} not",
                summary.executions, summary.instructions, summary.executions_lost
            )
        } else {
            String::new()
        },
        options.output.display()
    );
    if let Some(warning) = unwatched_warning(summary.unwatched, &unwatched) {
        eprintln!("pydeep: warning: {warning}");
    }
    Ok(Exit::Ok)
}

#[cfg(target_arch = "x86_64")]
fn trace_into<W: std::io::Write>(
    target: &mut Target,
    recorder: &mut crate::recording::recorder::Recorder<W>,
    pid: i32,
    options: &TraceOptions,
) -> std::result::Result<(Summary, Vec<String>), (anyhow::Error, Summary)> {
    let mut drain = open(target, pid, options).map_err(|e| (e, Summary::default()))?;
    let mut direct = Direct {
        recorder,
        interner: Interner::default(),
        codes: crate::recording::codes::ReadThenRecord::default(),
        unwatched: Vec::new(),
    };
    let result = drain.window(target, &mut direct, options);
    let summary = drain.summary();
    match result {
        Ok(()) => Ok((summary, direct.unwatched)),
        Err(error) => Err((error, summary)),
    }
}

/// Loads (or reuses) the tracer in `target` and starts a window as
/// `options` say: the drain of that window, its hooks not yet confirmed
/// (the watchdog installs them when it gets the GIL).
#[cfg(target_arch = "x86_64")]
pub fn open(target: &mut Target, pid: i32, options: &TraceOptions) -> Result<Drain> {
    let start = Start::of(target, pid, options)?;
    let loaded = start.load();
    start.opened(target, options, loaded)
}

/// What loading the tracer into a process needs, gathered on the thread
/// that reads the target (cheap: its maps and a control block); the load
/// itself ([`Start::load`]: ELF symbols, ptrace) may then run on another
/// thread ([`window::TraceWindow`] does, so that sampling goes on).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone)]
pub struct Start {
    pid: i32,
    flags: u32,
    reuse: Option<u64>,
    /// 3.14+: where the PEP 768 request goes ([`remote_exec`]); `None`:
    /// ptrace injection (3.9-3.13).
    remote_exec: Option<remote_exec::Plan>,
    start_timeout: Duration,
    /// The first (TSC, CLOCK_MONOTONIC) pair, taken before any event of
    /// the window can exist.
    first_pair: Option<(u64, u64)>,
}

#[cfg(target_arch = "x86_64")]
impl Start {
    /// The start of a window in `target` as `options` say.
    pub fn of(target: &Target, pid: i32, options: &TraceOptions) -> Result<Start> {
        let flags = flags_of(options);
        let first_pair = clock::pair();
        let reuse = inject::loaded_control(&inject::maps(pid).map_err(inject_failure)?)
            .filter(|control| ring::is_tracer(target, *control));
        // The one place that chooses: a table with a debugger_support
        // section (3.14+) means PEP 768, anything older ptrace.
        let remote_exec = match remote_exec::format_for(&target.layout().semantics) {
            Some(format) => {
                let version = target.python_version();
                let fail = |e: remote_exec::RemoteExecError| inject_failure(e.into());
                let support = remote_exec::read_support(
                    target.memory(),
                    target.runtime_address(),
                    format,
                    &version,
                    pid,
                )
                .map_err(fail)?;
                Some(
                    remote_exec::locate(
                        target.memory(),
                        target.runtime_address(),
                        support,
                        pid,
                        &version,
                    )
                    .map_err(fail)?,
                )
            }
            None => None,
        };
        Ok(Start {
            pid,
            flags,
            reuse,
            remote_exec,
            start_timeout: options.start_timeout,
            first_pair,
        })
    }

    /// Loads (or restarts) the tracer: reads the target's libc and
    /// interpreter symbols, waits for a thread at a safe point, calls
    /// into it. Touches nothing but the process (no `Target`), so it may
    /// run on any thread: every ptrace request of it is made by the
    /// thread that calls this.
    pub fn load(&self) -> std::result::Result<inject::Loaded, inject::InjectError> {
        if let Some(plan) = &self.remote_exec {
            return self.load_by_remote_exec(plan);
        }
        inject::load_and_start(
            self.pid,
            std::process::id(),
            self.flags,
            self.start_timeout,
            self.reuse,
        )
    }

    /// 3.14+: [`Start::load`] through PEP 768 ([`remote_exec`]).
    fn load_by_remote_exec(
        &self,
        plan: &remote_exec::Plan,
    ) -> std::result::Result<inject::Loaded, inject::InjectError> {
        let pid = self.pid;
        // A library an earlier window loaded: call its start function.
        let reuse_start = self.reuse.map(inject::start_function).transpose()?;
        // Files owned by the target's user when pydeep runs as another
        // (root); pydeep's own user otherwise.
        let owner = remote_exec::owner_of(pid).map_err(|e| {
            inject::InjectError::Other(format!("cannot read /proc/{pid}/status: {e}"))
        })?;
        // SAFETY: no arguments.
        let own = unsafe { (libc::geteuid(), libc::getegid()) };
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let request = remote_exec::Request {
            root: &root,
            owner: (owner.0 != own.0).then_some(owner),
            library: inject::TRACER_LIBRARY,
            reuse_start,
            agent_pid: std::process::id(),
            flags: self.flags,
            timeout: self.start_timeout,
        };
        let memory = crate::process::memory::LiveMemory::new(pid);
        let started = remote_exec::run(plan, &memory, &mut remote_exec::LiveWrites(pid), &request)?;
        let control = match self.reuse {
            Some(control) => control,
            None => inject::loaded_control(&inject::maps(pid)?).ok_or_else(|| {
                inject::InjectError::Other(format!(
                    "the start script ran in process {pid}, but the tracer is not in its maps"
                ))
            })?,
        };
        Ok(inject::Loaded {
            control,
            reused: self.reuse.is_some(),
            start_result: started.start_result,
            safe_point: "main thread's eval-breaker check (PEP 768)".into(),
            phases: started.phases,
        })
    }

    /// The drain of the window [`Start::load`] started, or why it did not.
    pub fn opened(
        &self,
        target: &mut Target,
        options: &TraceOptions,
        loaded: std::result::Result<inject::Loaded, inject::InjectError>,
    ) -> Result<Drain> {
        let pid = self.pid;
        let loaded = loaded.map_err(inject_failure)?;
        match loaded.start_result {
            0 => {}
            -1 => {
                return Err(Failure::new(
                    Exit::TraceRefused,
                    format!("process {pid} is already being traced by another pydeep trace; wait for it to end"),
                )
                .into())
            }
            other => {
                let message = ring::read_control(target, loaded.control)
                    .map(|c| c.message)
                    .unwrap_or_default();
                anyhow::bail!("the tracer could not start in process {pid} ({other}): {message}");
            }
        }
        let said = format!(
            "tracer {} in process {pid} at the {} ({})",
            if loaded.reused { "restarted" } else { "loaded" },
            loaded.safe_point,
            loaded
                .phases
                .iter()
                .map(|(what, took)| format!("{what} {:.1} ms", took.as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A measuring aid (notes/tracing.md): where opening a window goes.
        if std::env::var_os("PYDEEP_TRACE_PHASES").is_some() {
            eprintln!("pydeep: {said}");
        }
        tracing::info!("{said}");
        Ok(Drain::for_window(loaded.control, options, self.first_pair))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn inject_failure(error: inject::InjectError) -> anyhow::Error {
    use inject::InjectError;
    let exit = match &error {
        InjectError::NoSafePoint { .. } => Exit::NoSafePoint,
        InjectError::Permission { .. } => Exit::PermissionDenied,
        InjectError::Exited(_) => Exit::TargetExited,
        InjectError::Other(_) => Exit::Failure,
        InjectError::RemoteExec(e) => {
            use remote_exec::RemoteExecError as R;
            match e {
                R::Disabled { .. } => Exit::RemoteDebugDisabled,
                R::FreeThreaded(_) => Exit::UnsupportedVersion,
                R::NeverRan { .. } => Exit::NoSafePoint,
                R::Exited(_) => Exit::TargetExited,
                R::Files { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    Exit::PermissionDenied
                }
                _ => Exit::Failure,
            }
        }
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
        argv: crate::reading::redact::command_line(None, &crate::process::procfs::cmdline(pid)),
        executable: crate::process::procfs::executable(pid)
            .unwrap_or_default()
            .display()
            .to_string(),
        python_version: Some(crate::recording::recorder::proto_version(
            &target.python_version(),
        )),
        host_name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        start_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        clock: proto::ClockKind::ClockMonotonic as i32,
        sampling: None,
        start_clock_ns: crate::recording::schedule::monotonic_ns(),
        mode: "trace".into(),
        recording_id: 0,
    }
}

/// What to tell the user about `unwatched` functions a window found as it
/// ended, `named` those of them the tracer named (labels, at most
/// `abi::UNWATCHED_CODES_CAPACITY`), one per line; None if none.
pub(crate) fn unwatched_warning(unwatched: u32, named: &[String]) -> Option<String> {
    (unwatched > 0).then(|| {
        let mut warning = format!(
            "{unwatched} {} CPython can run inline, past the eval-frame hook, had no call \
             events as the window ended (a class's __init__ on 3.13 or __getitem__ on \
             3.11.0-3.11.3, set during the window outside a class body under another name): \
             calls of {} may be missing (notes/tracing.md, \"Not done (yet)\")",
            if unwatched == 1 {
                "function"
            } else {
                "functions"
            },
            if unwatched == 1 { "it" } else { "them" },
        );
        for label in named {
            warning.push_str("\n  unwatched: ");
            warning.push_str(label);
        }
        let more = (unwatched as usize).saturating_sub(named.len());
        if more > 0 && !named.is_empty() {
            warning.push_str(&format!("\n  and {more} more, not named"));
        }
        warning
    })
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
    /// `--opcodes`: instructions with a count, their executions, and the
    /// executions the tracer could not count.
    pub instructions: u64,
    /// See `instructions`.
    pub executions: u64,
    /// See `instructions`.
    pub executions_lost: u64,
    /// Functions CPython could have called past the window's call events
    /// (`TraceEventBatch.unwatched_functions`).
    pub unwatched: u32,
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
    decided: crate::process::address_hash::AddressMap<u64, bool>,
    /// What the agent wrote into the tracer's table, slot by slot.
    slots: Vec<u64>,
}

/// A set hashed by address (looked up per event: not SipHash).
type AddressSet<K> = std::collections::HashSet<
    K,
    std::hash::BuildHasherDefault<crate::process::address_hash::AddressHasher>,
>;

/// Events per batch record.
const BATCH: usize = 8192;
/// How long the tracer may take to install or remove its hooks (it waits
/// for the GIL, which a thread in a long C call may hold).
const GIL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the agent waits for the tracer to release its objects and its
/// thread state after the window.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Where a drain's batches go: interned at once (`pydeep trace`), or sent
/// to the recording's sink ([`window::TraceWindow`]).
pub trait TraceOut {
    /// Takes one batch drained from `target`.
    fn send(&mut self, target: &mut Target, batch: RawBatch) -> Result<()>;
}

/// `pydeep trace`: interns each batch at once with its own recorder, the
/// code objects it names resolved first, as a sampler does for its sink.
pub struct Direct<'r, W: std::io::Write> {
    recorder: &'r mut crate::recording::recorder::Recorder<W>,
    interner: Interner,
    codes: crate::recording::codes::ReadThenRecord,
    /// The unwatched functions the window named, as `pydeep trace` prints
    /// them ([`intern::function_label`]).
    unwatched: Vec<String>,
}

impl<W: std::io::Write> TraceOut for Direct<'_, W> {
    fn send(&mut self, target: &mut Target, batch: RawBatch) -> Result<()> {
        let pid = target.pid();
        let version = target.python_version();
        use crate::recording::recorder::CodeSource as _;
        let codes = self.codes.resolve(target, batch.distinct_code_addresses());
        for &code in &batch.unwatched {
            // The code object as the recording gets it, from the same read.
            self.unwatched.push(
                codes
                    .code_object(code)
                    .map(|(_, code)| intern::function_label(code))
                    .unwrap_or_else(|| format!("<unreadable code object at {code:#x}>")),
            );
        }
        let record = self
            .interner
            .batch(self.recorder, codes, pid, &version, batch);
        self.recorder
            .record(proto::record::Kind::TraceEvents(record))
            .context("cannot write trace events")?;
        self.recorder
            .maybe_flush()
            .context("cannot write the recording")?;
        Ok(())
    }
}

/// The agent's side of one window: drains the ring into batches.
pub struct Drain {
    control: u64,
    read_pos: u64,
    heartbeat: u64,
    batch: RawBatch,
    threads: AddressSet<u32>,
    c_functions: AddressSet<u64>,
    /// The thread of the last event (events come in runs of one thread):
    /// seen, without a lookup.
    last_thread: Option<u32>,
    seen_dropped: u64,
    buffer: Vec<u8>,
    summary: Summary,
    first_batch: bool,
    selection: Option<Selection>,
    select_address: u64,
    lines_asked: bool,
    opcodes_asked: bool,
    /// The (TSC, CLOCK_MONOTONIC) pairs of the window, used when the
    /// tracer's events carry TSC ticks (`abi::offset::CLOCK`).
    tsc: clock::TscClock,
}

impl Drain {
    /// A drain of the tracer whose control block is at `control`.
    pub fn new(control: u64) -> Self {
        Drain {
            control,
            read_pos: 0,
            heartbeat: 0,
            batch: RawBatch::default(),
            threads: Default::default(),
            c_functions: Default::default(),
            last_thread: None,
            seen_dropped: 0,
            buffer: Vec::new(),
            summary: Summary::default(),
            first_batch: true,
            selection: None,
            select_address: 0,
            lines_asked: false,
            opcodes_asked: false,
            tsc: clock::TscClock::default(),
        }
    }

    /// The drain of the tracer at `control`, started with `options`;
    /// `first_pair`, a (TSC, CLOCK_MONOTONIC) pair taken before the window
    /// started, brackets its first events.
    pub fn for_window(
        control: u64,
        options: &TraceOptions,
        first_pair: Option<(u64, u64)>,
    ) -> Drain {
        let mut drain = Drain::new(control);
        drain.tsc.add(first_pair);
        if let Some(functions) = &options.functions {
            drain.select(functions.clone());
        }
        drain.lines(options.lines);
        drain.opcodes(options.opcodes);
        drain
    }

    /// Says in the recording that line events were asked for.
    pub fn lines(&mut self, asked: bool) {
        self.lines_asked = asked;
    }

    /// Reads the opcode counts at the window's end (`--opcodes`).
    pub fn opcodes(&mut self, asked: bool) {
        self.opcodes_asked = asked;
    }

    /// `--opcodes`: reads the tracer's count table (the hooks are removed:
    /// nothing writes it any more) into the batch's count columns, for the
    /// code objects selected. Every code object it names is still kept
    /// alive by the tracer (RELEASE comes after).
    fn read_counts(&mut self, target: &mut Target, control: &ring::ControlBlock) -> Result<()> {
        if !self.opcodes_asked || control.counts_address == 0 {
            return Ok(());
        }
        use abi::count as e;
        let mut table = vec![0u8; abi::COUNT_CAPACITY * e::SIZE];
        target
            .memory()
            .read(control.counts_address, &mut table)
            .context("cannot read the tracer's count table")?;
        for entry in table.chunks_exact(e::SIZE) {
            let u64_at =
                |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().unwrap_or_default());
            let (code, count) = (u64_at(e::CODE), u64_at(e::COUNT));
            let offset = u32::from_le_bytes(
                entry[e::OFFSET..e::OFFSET + 4]
                    .try_into()
                    .unwrap_or_default(),
            );
            if code == 0 || count == 0 || !self.selected(target, code) {
                continue;
            }
            self.batch.counts.push((code, offset, count));
            self.summary.instructions += 1;
            self.summary.executions += count;
        }
        self.batch.meta.counts_lost = control.counts_lost;
        self.summary.executions_lost = control.counts_lost;
        Ok(())
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
    fn selected(&mut self, target: &mut Target, code: u64) -> bool {
        let Some(selection) = &mut self.selection else {
            return true;
        };
        if let Some(&decided) = selection.decided.get(&code) {
            return decided;
        }
        let chosen = match target.code_object(code) {
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
                    if ring::write_u64(target.pid(), address, entry).is_ok() {
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

    /// Tells the watchdog this agent is alive (it ends the window after
    /// 3 s without a beat).
    pub fn beat(&mut self, target: &Target) -> Result<()> {
        self.heartbeat += 1;
        ring::write_u64(
            target.pid(),
            self.control + abi::offset::HEARTBEAT,
            self.heartbeat,
        )
        .context("cannot write the tracer's heartbeat")
    }

    /// Writes a command (`abi::COMMAND_*`) for the watchdog.
    pub fn command(&mut self, target: &Target, command: u32) -> Result<()> {
        ring::write_u32(target.pid(), self.control + abi::offset::COMMAND, command)
            .context("cannot write the tracer's command word")
    }

    /// Waits (draining) until the tracer's state is one of `states`.
    fn wait_state(
        &mut self,
        target: &mut Target,
        out: &mut dyn TraceOut,
        states: &[u32],
        timeout: Duration,
    ) -> Result<ring::ControlBlock> {
        let until = Instant::now() + timeout;
        loop {
            self.beat(target)?;
            let control = self.poll(target, out)?;
            if states.contains(&control.state) {
                return Ok(control);
            }
            if !crate::process::procfs::is_alive(target.pid()) {
                return Err(Failure::new(
                    Exit::TargetExited,
                    format!("process {} exited during the trace window", target.pid()),
                )
                .into());
            }
            if Instant::now() >= until {
                anyhow::bail!(
                    "the tracer in process {} did not reach state {states:?} within {timeout:?} (state {}): a thread holds the GIL in a long C call",
                    target.pid(),
                    control.state
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// One whole window: wait for the hooks, drain until the end, stop,
    /// drain the rest, release.
    pub fn window(
        &mut self,
        target: &mut Target,
        out: &mut dyn TraceOut,
        options: &TraceOptions,
    ) -> Result<()> {
        let started = self.wait_state(
            target,
            out,
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
                    format!("process {}: {}", target.pid(), started.message),
                )
                .into())
            }
            _ => anyhow::bail!(
                "the tracer in process {} failed: {}",
                target.pid(),
                started.message
            ),
        }
        eprintln!(
            "pydeep: tracing process {} (calls through {}, hooks on {} threads, times from {}){}",
            target.pid(),
            calls_by_description(started.calls_by),
            started.threads_hooked,
            clock::name(started.clock),
            match options.duration {
                Some(d) => format!(" for {d:?}"),
                None => " until Ctrl-C".into(),
            }
        );
        self.summary.threads_hooked = started.threads_hooked;
        let end = options.duration.map(|d| Instant::now() + d);
        let outcome = (|| -> Result<()> {
            loop {
                if crate::cli::signals::received().is_some() {
                    return Ok(());
                }
                if end.is_some_and(|end| Instant::now() >= end) {
                    return Ok(());
                }
                self.beat(target)?;
                let before = self.read_pos;
                let control = self.poll(target, out)?;
                if control.threads_hooked > self.summary.threads_hooked {
                    window::say_hooked(
                        target.pid(),
                        self.summary.threads_hooked,
                        control.threads_hooked,
                    );
                    self.summary.threads_hooked = control.threads_hooked;
                }
                if control.state != abi::STATE_TRACING {
                    // The watchdog ended the window by itself (it saw no
                    // heartbeat: this agent was stopped too long).
                    return Ok(());
                }
                if !crate::process::procfs::is_alive(target.pid()) {
                    return Err(Failure::new(
                        Exit::TargetExited,
                        format!("process {} exited during the trace window", target.pid()),
                    )
                    .into());
                }
                // Sleep only while the ring is quiet.
                if self.read_pos - before < abi::CAPACITY / 16 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })();
        // A read or write of the tracer's memory fails once the target is
        // gone: say that, with its exit code. (A process whose memory is
        // already gone may still show as running for a moment.)
        let outcome = outcome.map_err(|error| {
            let pid = target.pid();
            let exiting = Instant::now() + Duration::from_secs(1);
            while crate::process::procfs::is_alive(pid) && Instant::now() < exiting {
                std::thread::sleep(Duration::from_millis(10));
            }
            if crate::process::procfs::is_alive(pid) {
                error
            } else {
                Failure::new(
                    Exit::TargetExited,
                    format!("process {} exited during the trace window", target.pid()),
                )
                .into()
            }
        });
        // Whatever ended the window: stop, drain, release.
        let stop = self.command(target, abi::COMMAND_STOP).and_then(|()| {
            self.wait_state(
                target,
                out,
                &[abi::STATE_STOPPED, abi::STATE_RELEASED],
                GIL_TIMEOUT,
            )
        });
        let drained = stop.and_then(|control| {
            self.poll(target, out)?;
            self.read_counts(target, &control)?;
            self.summary.threads_hooked = control.threads_hooked;
            self.flush(target, out, Some(&control))
        });
        let released = self.command(target, abi::COMMAND_RELEASE);
        if released.is_ok() {
            self.wait_released(target);
        }
        outcome?;
        drained?;
        released?;
        Ok(())
    }

    /// After RELEASE: waits until the watchdog has given back the kept
    /// objects and, with the GIL, the thread state `PyGILState_Ensure`
    /// made for it, so that once `pydeep trace` returns the target's thread
    /// list is what it was (a fixture counting thread states right after
    /// saw the watchdog's, waiting for the GIL). Bounded: a thread holding
    /// the GIL in a long C call only delays the release, which the
    /// watchdog still makes by itself.
    pub fn wait_released(&mut self, target: &mut Target) {
        let until = Instant::now() + RELEASE_WAIT;
        while Instant::now() < until {
            match ring::read_control(target, self.control) {
                Ok(control) if control.state == abi::STATE_RELEASED => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => return,
            }
        }
        tracing::warn!(
            "the tracer in process {} had not released its objects within {RELEASE_WAIT:?} (a thread holds the GIL); it will by itself",
            target.pid()
        );
    }

    /// Reads what the ring holds into the batch; returns the control block.
    pub fn poll(
        &mut self,
        target: &mut Target,
        out: &mut dyn TraceOut,
    ) -> Result<ring::ControlBlock> {
        let pid = target.pid();
        let control = ring::read_control(target, self.control)
            .context("cannot read the tracer's control block")?;
        self.select_address = control.select_address;
        let available = control
            .write_pos
            .saturating_sub(self.read_pos)
            .min(abi::CAPACITY);
        let first_event = self.batch.events.len();
        // Room for the whole read at once (a batch taken by `flush` starts
        // empty: grown by doubling, it was copied as it filled).
        self.batch.events.reserve(available as usize);
        if available > 0 {
            let mut left = available;
            while left > 0 {
                let index = self.read_pos % abi::CAPACITY;
                let count = left.min(abi::CAPACITY - index).min(65_536);
                self.buffer.resize((count * abi::EVENT_SIZE) as usize, 0);
                target
                    .memory()
                    .read(
                        control.ring_address + index * abi::EVENT_SIZE,
                        &mut self.buffer,
                    )
                    .context("cannot read the tracer's ring")?;
                let buffer = std::mem::take(&mut self.buffer);
                for event in buffer.chunks_exact(abi::EVENT_SIZE as usize) {
                    self.event(target, pid, event);
                }
                self.buffer = buffer;
                self.read_pos += count;
                left -= count;
                ring::write_u64(pid, self.control + abi::offset::READ_POS, self.read_pos)
                    .context("cannot write the tracer's read position")?;
            }
        }
        if control.clock == abi::CLOCK_TSC {
            // Every event just read was stamped before this pair: it and
            // the earlier ones bracket them all.
            self.tsc.add(clock::pair());
            let mut tries = 0;
            while !self.tsc.ready() && tries < 1_000 {
                // Two pairs are needed; every try so far was preempted.
                std::thread::yield_now();
                self.tsc.add(clock::pair());
                tries += 1;
            }
            self.tsc.convert(
                self.batch
                    .events
                    .iter_mut()
                    .skip(first_event)
                    .map(|event| &mut event.time_ns),
            );
        }
        if control.dropped > self.seen_dropped {
            let tsc = (control.clock == abi::CLOCK_TSC).then_some(&self.tsc);
            let to_ns = |time: u64| tsc.map_or(time, |clock| clock.ns(time));
            let meta = &mut self.batch.meta;
            meta.lost += control.dropped - self.seen_dropped;
            if meta.lost_first_ns == 0 {
                meta.lost_first_ns = to_ns(control.first_drop_ns);
            }
            meta.lost_last_ns = to_ns(control.last_drop_ns);
            self.summary.lost += control.dropped - self.seen_dropped;
            self.seen_dropped = control.dropped;
        }
        if self.first_batch && control.start_ns != 0 {
            self.batch.meta.window_start_ns = control.start_ns;
        }
        if self.batch.events.len() >= BATCH {
            self.flush(target, out, None)?;
        }
        Ok(control)
    }

    fn event(&mut self, target: &mut Target, pid: i32, event: &[u8]) {
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
        if !c_function && self.selection.is_some() && !self.selected(target, object) {
            return;
        }
        if self.last_thread != Some(native_id) {
            if self.threads.insert(native_id) {
                let (sample, name) = thread_of(target, pid, native_id);
                self.batch.threads.push((native_id, sample, name));
            }
            self.last_thread = Some(native_id);
        }
        if c_function && self.c_functions.insert(object) {
            let name =
                ring::c_function_name(target, object).unwrap_or_else(|| "<C function>".into());
            self.batch.c_functions.push((object, name));
        }
        let (offset, line) = if kind == proto::TraceEventKind::TraceLine {
            (u32_at(e::OFFSET), u32_at(e::LINE))
        } else {
            (0, 0)
        };
        self.batch.events.push(RawEvent {
            time_ns,
            native_id,
            kind,
            object,
            offset,
            line,
        });
        self.summary.events += 1;
    }

    /// Sends what was drained, if anything (`last`: the window's end, with
    /// its final control block).
    pub fn flush(
        &mut self,
        target: &mut Target,
        out: &mut dyn TraceOut,
        last: Option<&ring::ControlBlock>,
    ) -> Result<()> {
        if let Some(control) = last {
            let meta = &mut self.batch.meta;
            meta.window_end_ns = control.stop_ns.max(1);
            meta.threads_hooked = control.threads_hooked;
            meta.threads_line_hooked = control.threads_line_hooked;
            meta.clock = clock::recorded_name(control.clock).to_owned();
            meta.calls_by = calls_by_name(control.calls_by).to_owned();
            meta.unwatched_functions = control.unwatched;
            self.summary.unwatched = control.unwatched;
            // Read before the RELEASE that follows this flush, while the
            // tracer still keeps them alive.
            self.batch.unwatched = control.unwatched_codes.clone();
            if self.first_batch {
                meta.window_start_ns = control.start_ns;
            }
        }
        if self.first_batch {
            self.batch.meta.lines = self.lines_asked;
            self.batch.meta.opcodes = self.opcodes_asked;
            if let Some(selection) = &self.selection {
                self.batch.meta.functions = selection.regex.as_str().to_owned();
            }
            self.batch.first = true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.first_batch = false;
        out.send(target, batch)
    }
}

/// Thread `native_id` of `target` as a sample (ids, main or not) and its
/// name, read when its first event is drained.
fn thread_of(
    target: &mut Target,
    pid: i32,
    native_id: u32,
) -> (crate::ThreadSample, Option<String>) {
    // A read of the thread list can fail while the target runs (a list
    // changing under the read): a few tries before the thread is named by
    // its native id alone, which would give its events a ThreadDef of
    // their own beside its samples'.
    let mut threads = Vec::new();
    for _ in 0..3 {
        threads.clear();
        if target.sample_threads_without_frames(&mut threads).is_ok()
            && threads.iter().any(|t| t.native_id == native_id as u64)
        {
            break;
        }
    }
    let names = target.thread_names().unwrap_or_default();
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
    (sample, name)
}
