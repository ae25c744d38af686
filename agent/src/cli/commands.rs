//! The subcommands of `pydeep`, each a function from parsed options to an
//! exit code. `main` only parses and reports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};

use std::io::Write as _;

use anyhow::{Context, Result};

use crate::cli::exit::{Exit, Failure};
use crate::cli::exports::Outputs;
use crate::cli::options::{Command, DumpArgs, RecordOptions};
use crate::cli::session::{self, SessionOptions};
use crate::recording::exactness::ReadMode;
use crate::{AttachError, Target};

/// Runs one parsed command.
pub fn run(command: Command) -> Result<Exit> {
    match command {
        Command::Attach { target, options } => attach(target.pid(), &options),
        Command::Record {
            options,
            trace,
            command,
        } => record(&command, &options, trace.options()),
        Command::Info { file, json } => info(&file, json),
        Command::Trace { target, options } => {
            let pid = target.pid();
            crate::trace::run(
                pid,
                &crate::trace::TraceOptions {
                    duration: (!options.until_stopped).then_some(options.duration),
                    output: options
                        .output
                        .unwrap_or_else(|| PathBuf::from(format!("pydeep-trace-{pid}.pdr"))),
                    overwrite: options.force,
                    c_calls: options.c_calls,
                    lines: options.lines,
                    opcodes: options.opcodes,
                    functions: options.functions,
                    start_timeout: options.start_timeout,
                    preloaded: None,
                },
            )
        }
        Command::Verify { file } => verify(&file),
        Command::Daemon { config } => crate::daemon::run(Some(&config)),
        Command::Ctl {
            socket,
            json,
            timeout,
            action,
        } => crate::daemon::ctl(&socket, action.request(), json, timeout + action.takes()),
        Command::Dump { target, options } => dump(target.pid(), &options),
        Command::Objects {
            target,
            root,
            depth,
            max_objects,
            output,
            format,
            json,
            redact,
        } => objects(
            target.pid(),
            &root,
            depth,
            max_objects,
            output.as_deref(),
            if json {
                Some("json")
            } else {
                format.as_deref()
            },
            redact_regex(&redact)?,
        ),
        Command::Heap {
            target,
            top,
            interval,
            count,
            json,
            growth,
            since,
        } => heap(
            target.pid(),
            top,
            interval,
            count,
            HeapOutput {
                json,
                growth: growth || since.is_some(),
                since,
            },
        ),
        Command::Completions { shell } => completions(shell),
        Command::Top {
            target,
            rate,
            interval,
            once,
            duration,
            limit,
            sort,
            idle,
            output,
        } => crate::cli::live_top::run(
            target.pid(),
            &crate::cli::live_top::TopOptions {
                rate_hz: rate,
                interval,
                once,
                duration,
                limit,
                sort_by_total: sort == "total",
                include_idle: idle,
                output,
            },
        ),
    }
}

/// Writes the completion script of `shell` for every subcommand and option.
fn completions(shell: clap_complete::Shell) -> Result<Exit> {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut crate::cli::options::Cli::command(),
        "pydeep",
        &mut script,
    );
    crate::out!("{}", String::from_utf8_lossy(&script))?;
    Ok(Exit::Ok)
}

fn attach(pid: i32, options: &RecordOptions) -> Result<Exit> {
    let session_options = session_options(options, "attach")?;
    let outputs = Outputs::plan(options, pid);
    outputs.check(options.force)?;
    let target = Target::attach(pid).map_err(attach_failure)?;
    let output = session::create_output(&outputs.recording, options.force)?;
    let (summary, _) = session::run(target, None, output, &session_options)?;
    eprintln!("{summary}");
    outputs.finish(options.force)?;
    Ok(Exit::Ok)
}

fn record(
    command: &[String],
    options: &RecordOptions,
    trace: Option<crate::trace::TraceOptions>,
) -> Result<Exit> {
    let mut session_options = SessionOptions {
        trace,
        ..session_options(options, "record")?
    };
    // The output is checked (and created) before the program starts: a
    // path that is taken or cannot be written fails before the program has
    // done anything. Without -o the name holds pydeep's pid, not the
    // program's, since the program does not exist yet.
    let outputs = Outputs::plan(options, std::process::id() as i32);
    outputs.check(options.force)?;
    let output = session::create_output(&outputs.recording, options.force)?;
    if options.subprocesses {
        // A child whose parent exits right after forking it must still be
        // found: it is re-parented to pydeep (lifecycle::become_subreaper).
        if let Err(error) = crate::process::lifecycle::become_subreaper() {
            eprintln!("pydeep: warning: cannot become the subreaper of the program ({error}): a child whose parent exits at once may be missed");
        }
    }
    let early = cfg!(target_arch = "x86_64") && session_options.trace.is_some();
    let mut child = spawn(command, early)?;
    let pid = child.id() as i32;
    crate::cli::signals::forward_to(pid);
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(trace)) = (early, &mut session_options.trace) {
        // The program is stopped at its exec: the tracer goes in before
        // its first line, or the window opens once it is attached.
        match crate::trace::start_early(pid, trace) {
            Ok(control) => trace.preloaded = Some(control),
            Err(error) => eprintln!(
                "pydeep: tracing starts once pydeep is attached, not before the program's first line: {error:#}"
            ),
        }
    }
    let follow_orphans = options.subprocesses && crate::process::lifecycle::is_subreaper();
    let (target, program_gone) = match attach_when_ready(pid, &mut child, follow_orphans) {
        Ok(started) => started,
        Err(error) => {
            if error
                .downcast_ref::<crate::cli::signals::Interrupted>()
                .is_some()
            {
                // Passed on to the program (or sent to it by the terminal):
                // it decides how it ends, and pydeep ends with it.
                let status = child.wait().context("waiting for the program")?;
                drop(output);
                eprintln!("pydeep: {error}; nothing was recorded");
                exit_like(status);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
    };
    let (summary, child) = if program_gone {
        // The program is gone; its orphans are recorded, and it still
        // decides the exit code (its status was read already).
        let (summary, _) = session::run(target, None, output, &session_options)?;
        (summary, Some(child))
    } else {
        session::run(target, Some(child), output, &session_options)?
    };
    eprintln!("{summary}");
    // An export that fails is said, but the program still decides the
    // exit code (its recording is kept).
    if let Err(failure) = outputs.finish(options.force) {
        eprintln!("pydeep: error: {failure}");
    }
    // The program decides the exit code; if recording stopped first, wait for it.
    let status = match child {
        Some(mut child) => child.wait().context("waiting for the program")?,
        None => return Ok(Exit::Ok),
    };
    exit_like(status);
}

/// Ends pydeep the way the program ended: its exit code, or 128+N after
/// signal N (as a shell reports it).
fn exit_like(status: std::process::ExitStatus) -> ! {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    std::process::exit(code);
}

/// Starts the program of `pydeep record`. It gets SIGTERM if pydeep dies
/// (`PR_SET_PDEATHSIG`: even a SIGKILLed pydeep leaves no orphan running
/// unrecorded); it stays in pydeep's process group, so the terminal's
/// Ctrl-C reaches it directly, and SIGINT or SIGTERM sent to pydeep alone
/// are forwarded to it ([`crate::cli::signals`]).
///
/// With `traced` (`record --trace`) it also asks to be traced by this
/// thread (`PTRACE_TRACEME`), so that it stops at its exec before any of
/// its code ran ([`crate::trace::start_early`]); if the kernel refuses
/// (ptrace_scope 3), it runs on as without.
fn spawn(command: &[String], traced: bool) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let mut process = Process::new(&command[0]);
    process.args(&command[1..]);
    // SAFETY: the hook runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid).
    unsafe {
        process.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // pydeep died between the fork and the prctl: do not run.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if traced {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            }
            Ok(())
        });
    }
    process.spawn().map_err(|e| {
        Failure::new(
            Exit::SpawnFailed,
            format!("cannot start `{}`: {e}", command[0]),
        )
        .into()
    })
}

/// Attaches to a program we just started, as soon as its interpreter is
/// initialised: the first attempts find no interpreter yet (or not even the
/// Python binary, before exec), so retry for a while. A stop signal ends
/// the wait with [`crate::cli::signals::Interrupted`].
///
/// With `follow_orphans` (`--subprocesses`, pydeep the subreaper), a
/// program that exits before the first attach succeeds (a parent that
/// forks and exits at once, or a loaded machine that let pydeep poll
/// late) is not a failure while a descendant of it lives on: that
/// descendant is attached instead, and the flag returned says the program
/// itself is gone.
fn attach_when_ready(pid: i32, child: &mut Child, follow_orphans: bool) -> Result<(Target, bool)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // The last program seen that is not Python (pydeep itself before the
    // exec does not count), to say so if the program ends as that.
    let own = std::env::current_exe().ok();
    let mut not_python: Option<String> = None;
    loop {
        crate::cli::signals::Interrupted::check(|| {
            "before pydeep could attach to the program".into()
        })?;
        match Target::attach(pid) {
            Ok(target) => return Ok((target, false)),
            Err(error @ AttachError::PermissionDenied { .. }) => {
                return Err(attach_failure(error).into())
            }
            Err(error) => {
                if let AttachError::NotPython { exe, .. } = &error {
                    let python = std::path::Path::new(exe)
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().contains("python"));
                    let ours = own.as_deref() == Some(std::path::Path::new(exe));
                    not_python = (!python && !ours).then(|| exe.clone());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    if follow_orphans {
                        if let Some(orphan) = attach_orphan(deadline)? {
                            eprintln!(
                                "pydeep: the program exited ({status}) before pydeep could attach; recording its descendants, first pid {}",
                                orphan.pid()
                            );
                            return Ok((orphan, true));
                        }
                    }
                    let why = match &not_python {
                        Some(exe) => format!(
                            "it never ran Python: `{}` is not a Python interpreter (pydeep record starts and records Python programs; with --subprocesses it records the Python programs this one starts)",
                            pydeep_format::text::escape(exe)
                        ),
                        None => error.to_string(),
                    };
                    return Err(Failure::new(
                        Exit::TargetExited,
                        format!("the program exited ({status}) before pydeep could attach: {why}"),
                    )
                    .into());
                }
                if Instant::now() >= deadline {
                    return Err(attach_failure(error).into());
                }
                crate::cli::signals::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// A Python descendant of pydeep (the subreaper, so the orphans of the
/// program it started are its own descendants), attached; None once no
/// descendant lives, or at `deadline` if none became attachable (a fork
/// still exec'ing or an interpreter still starting is waited for).
fn attach_orphan(deadline: Instant) -> Result<Option<Target>> {
    let own = std::process::id() as i32;
    loop {
        crate::cli::signals::Interrupted::check(|| {
            "before pydeep could attach to the program".into()
        })?;
        let living = crate::process::procfs::descendants(own);
        if living.is_empty() {
            return Ok(None);
        }
        for (pid, _) in living {
            match Target::attach(pid) {
                Ok(target) => return Ok(Some(target)),
                Err(error @ AttachError::PermissionDenied { .. }) => {
                    return Err(attach_failure(error).into())
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        crate::cli::signals::sleep(Duration::from_millis(2));
    }
}

/// Gives an attach error its exit code: every kind has its own, none is 1.
pub fn attach_failure(error: AttachError) -> Failure {
    let exit = match error {
        AttachError::NoSuchProcess { .. } => Exit::NoSuchProcess,
        AttachError::PermissionDenied { .. } => Exit::PermissionDenied,
        AttachError::NotPython { .. } => Exit::NotPython,
        AttachError::UnsupportedVersion { .. } => Exit::UnsupportedVersion,
        AttachError::TargetExited { .. } => Exit::TargetExited,
    };
    Failure::new(exit, error.to_string())
}

/// The compiled `--redact` of a command; a bad pattern is a usage error.
fn redact_regex(args: &crate::cli::options::RedactArgs) -> Result<Option<&'static regex::Regex>> {
    Ok(args
        .regex()
        .map_err(|message| Failure::new(Exit::Usage, message))?)
}

fn session_options(options: &RecordOptions, mode: &'static str) -> Result<SessionOptions> {
    use std::io::IsTerminal;
    Ok(SessionOptions {
        rate_hz: options.rate,
        duration: options.duration,
        read_mode: if options.blocking {
            ReadMode::Paused
        } else if options.nonblocking {
            ReadMode::Fast
        } else {
            ReadMode::Adaptive
        },
        include_idle: options.idle,
        subprocesses: options.subprocesses,
        embed_source: !options.no_source,
        full_source: options.full_source,
        max_depth: options.max_depth,
        show_status: !options.quiet && std::io::stderr().is_terminal(),
        mode,
        snapshot_every: options.snapshot_every,
        snapshot_values: options.snapshot_locals,
        snapshot_tasks: options.snapshot_async,
        snapshot_globals: options.snapshot_globals,
        snapshot_objects: options.snapshot_objects,
        heap_every: options.heap_every,
        redact: redact_regex(&options.redact)?,
        trace: None,
    })
}

fn info(file: &Path, json: bool) -> Result<Exit> {
    let summary = pydeep_format::summarize(file)
        .map_err(|e| Failure::new(Exit::InvalidRecording, format!("{}: {e}", file.display())))?;
    if json {
        let facts = crate::cli::info_json::summary_json(&summary);
        crate::outln!("{}", serde_json::to_string_pretty(&facts)?)?;
    } else {
        crate::outln!("{summary}")?;
    }
    Ok(Exit::Ok)
}

fn verify(file: &Path) -> Result<Exit> {
    let report = pydeep_format::verify(file);
    crate::outln!("{report}")?;
    Ok(if report.is_valid() {
        Exit::Ok
    } else {
        Exit::InvalidRecording
    })
}

/// `pydeep dump`: what a recording's scopes snapshot holds, read now and
/// drawn by the viewer's scopes renderer (`pydeep-view scopes`).
fn dump(pid: i32, args: &DumpArgs) -> Result<Exit> {
    use pydeep_view::scopes::{scopes_json, write_scopes_text, ScopesView};
    let options = crate::recording::snapshot::SnapshotOptions {
        scopes: true,
        values: args.locals,
        globals: args.globals,
        generators: args.async_,
        all_generators: args.all,
        tasks: args.async_,
        max_depth: args.max_depth,
        max_objects: 0,
        rendering: crate::reading::objects::Rendering {
            max_string: args.max_string,
            max_items: args.max_items,
            redact: redact_regex(&args.redact)?,
            ..Default::default()
        },
        ..Default::default()
    };
    let (mut target, taken) = crate::cli::one_shot::read(pid, |target| {
        crate::recording::snapshot::take(target, &options)
            .with_context(|| format!("reading process {pid}"))
    })?;
    let names = target.thread_names().unwrap_or_default();
    let mut input = crate::cli::live_views::record_snapshot(&mut target, &taken, &names)?;
    let view = ScopesView {
        threads: Vec::new(),
        asynchronous: args.async_,
    };
    // Its one snapshot, whatever it holds: a process still starting may
    // have no thread yet.
    let selected = crate::cli::live_views::snapshots(&mut input, 0)
        .pop()
        .context("the snapshot recorded in memory is not there")?;
    let (tables, header) = (input.tables(), input.header());
    let mut out = Vec::new();
    if args.json {
        writeln!(out, "{}", scopes_json(tables, header, &selected, &view))?;
    } else {
        write_scopes_text(&mut out, tables, header, &selected, &view)?;
    }
    crate::out!("{}", String::from_utf8_lossy(&out))?;
    Ok(Exit::Ok)
}

/// How `pydeep heap` prints.
struct HeapOutput {
    json: bool,
    /// Growth only (between counts, or since `since`).
    growth: bool,
    /// A saved `heap --json` count to compare the first count with.
    since: Option<PathBuf>,
}

fn heap(
    pid: i32,
    top: usize,
    interval: Option<Duration>,
    count: Option<u32>,
    output: HeapOutput,
) -> Result<Exit> {
    use pydeep_view::heap::{growth_json, heap_json, write_growth_text, write_heap_text, Growth};
    let saved = output.since.as_deref().map(saved_heap).transpose()?;
    let count = count
        .unwrap_or(if interval.is_some() { 2 } else { 1 })
        .max(1);
    // The same read as a recording's heap snapshot, rendered by the viewer.
    let options = crate::recording::snapshot::SnapshotOptions {
        scopes: false,
        heap: true,
        ..Default::default()
    };
    let mut growth = Growth::default();
    // A saved count is heap snapshot 0; this run's counts follow it.
    let first_index = usize::from(saved.is_some());
    // Times are shown after the first count (or the saved one, if older).
    let mut start_clock_ns: Option<u64> = None;
    let mut stdout = std::io::stdout().lock();
    // The first count attaches (again, if the process exec'd meanwhile).
    let take = |target: &mut Target| {
        crate::recording::snapshot::take(target, &options)
            .with_context(|| format!("pausing process {pid}"))
    };
    let (mut target, first) = crate::cli::one_shot::read(pid, take)?;
    let mut first = Some(first);
    let no_threads = std::collections::HashMap::new();
    for round in 0..count {
        if round > 0 && !crate::cli::signals::sleep(interval.unwrap_or_default()) {
            crate::cli::signals::Interrupted::check(|| format!("after {round} of {count} counts"))?;
        }
        let taken = match first.take() {
            Some(taken) => taken,
            None => take(&mut target)?,
        };
        if taken.heap.is_none() {
            anyhow::bail!(
                "walking the GC lists of process {pid}: {}",
                taken.warnings.join("; ")
            );
        }
        let start = *start_clock_ns.get_or_insert_with(|| {
            saved
                .as_ref()
                .and_then(|s| s.time_ns)
                .map_or(taken.clock_ns, |t| t.min(taken.clock_ns))
        });
        // Each count is recorded, read back and drawn as `pydeep-view
        // heap` draws a recording's heap snapshots; the saved count goes
        // first into the first one.
        let mut recording = crate::cli::live_views::LiveRecording::new(&target, start)?;
        let saved_now = if round == 0 { saved.as_ref() } else { None };
        if let Some(saved) = saved_now {
            recording.record(&mut target, &saved.taken(start), &no_threads)?;
        }
        recording.record(&mut target, &taken, &no_threads)?;
        let mut input = recording.read_back()?;
        let index = if saved_now.is_some() {
            0
        } else {
            first_index + round as usize
        };
        let mut step = None;
        let mut last = None;
        for selected in crate::cli::live_views::snapshots(&mut input, index) {
            step = growth.next(input.tables(), &selected);
            last = Some(selected);
        }
        let selected = last.context("the count recorded in memory is not there")?;
        let (tables, header) = (input.tables(), input.header());
        if output.json && !output.growth {
            writeln!(stdout, "{}", heap_json(tables, header, &selected, top))?;
        } else if let Some(step) = step {
            if output.json {
                writeln!(stdout, "{}", growth_json(header, &step, top))?;
            } else {
                write_growth_text(&mut stdout, header, &step, top)?;
            }
        } else if !output.growth {
            write_heap_text(&mut stdout, tables, header, &selected, top)?;
        }
        stdout.flush()?;
    }
    Ok(Exit::Ok)
}

/// Writes a whole output file (`objects -o`) the one safe way
/// ([`pydeep_format::files::OutputFile`]): never through a symbolic link,
/// an existing file replaced by a new one renamed over it (a FIFO or a
/// device such as `/dev/null` written as it is).
fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    use pydeep_format::files::{Existing, OutputFile};
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| {
        Failure::new(
            Exit::OutputError,
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let mut file =
        OutputFile::create(path, Existing::ReplaceOrWriteDevice, 0o666).map_err(|e| failed(&e))?;
    file.write_all(bytes).map_err(|e| failed(&e))?;
    file.commit().map_err(|e| failed(&e))?;
    Ok(())
}

/// The largest `heap --since` file read: a count of every type of a big
/// program is a few megabytes.
const MAX_SAVED_HEAP_BYTES: u64 = 64 << 20;

/// A count saved by `pydeep heap PID --json --top 0`: its time and its
/// counts by type name (bytes 0 where the file has none).
struct SavedHeap {
    time_ns: Option<u64>,
    objects: u64,
    types: Vec<(String, u64, u64)>,
}

impl SavedHeap {
    /// The saved count as the heap snapshot it was (taken at
    /// `start_clock_ns` if the file does not say when).
    fn taken(&self, start_clock_ns: u64) -> crate::recording::snapshot::Taken {
        crate::recording::snapshot::Taken {
            clock_ns: self.time_ns.unwrap_or(start_clock_ns),
            heap: Some(crate::reading::heap::HeapSummary {
                objects: self.objects,
                types: self
                    .types
                    .iter()
                    .map(|(name, count, bytes)| crate::reading::heap::TypeCount {
                        name: name.clone(),
                        type_address: 0,
                        count: *count,
                        bytes: *bytes,
                        implausible: 0,
                    })
                    .collect(),
                truncated: false,
                abandoned_segments: 0,
                seconds: 0.0,
                read_calls: 0,
            }),
            asked: crate::recording::snapshot::SnapshotOptions {
                scopes: false,
                heap: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// The last count in a file `pydeep heap --json` wrote. Files written
/// before the live heap took the viewer's schema (`size` for `bytes`, no
/// `time_ns`) are read too: only names and counts matter for growth.
fn saved_heap(path: &Path) -> Result<SavedHeap> {
    // A bad file is bad input from the command line: a usage error.
    let refused = |why: String| Failure::new(Exit::Usage, format!("{}: {why}", path.display()));
    let bytes = pydeep_format::files::read_limited(path, MAX_SAVED_HEAP_BYTES)
        .map_err(|e| refused(format!("cannot read it: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| refused("it is empty".into()))?;
    let not_a_count = |why: String| {
        refused(format!(
            "not the output of `pydeep heap PID --json --top 0` ({why})"
        ))
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| not_a_count(e.to_string()))?;
    let types = value["types"]
        .as_array()
        .ok_or_else(|| not_a_count("no `types` list".into()))?
        .iter()
        .map(|t| {
            let name = t["name"].as_str();
            let count = t["count"].as_u64();
            let bytes = t["bytes"].as_u64().or(t["size"].as_u64()).unwrap_or(0);
            match (name, count) {
                (Some(name), Some(count)) => Ok((name.to_string(), count, bytes)),
                _ => Err(not_a_count(format!("a type without name or count: {t}"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SavedHeap {
        time_ns: value["time_ns"].as_u64(),
        objects: value["objects"]
            .as_u64()
            .unwrap_or_else(|| types.iter().map(|t| t.1).sum()),
        types,
    })
}

fn objects(
    pid: i32,
    root: &str,
    depth: usize,
    max_objects: usize,
    output: Option<&Path>,
    format: Option<&str>,
    redact: Option<&'static regex::Regex>,
) -> Result<Exit> {
    let format = format
        .map(str::to_string)
        .or_else(|| {
            output
                .and_then(|p| p.extension())
                .map(|e| e.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "dot".into());
    let options = crate::reading::graph::GraphOptions {
        max_depth: depth,
        max_objects: max_objects.max(1),
        redact,
        ..Default::default()
    };
    let (mut target, taken) = crate::cli::one_shot::read(pid, |target| {
        crate::recording::snapshot::take_graph(target, root, &options)
    })?;
    // The graph as a recording's snapshot holds it, drawn by the viewer.
    let mut input =
        crate::cli::live_views::record_snapshot(&mut target, &taken, &Default::default())?;
    let selected = crate::cli::live_views::snapshots(&mut input, 0)
        .pop()
        .context("the graph recorded in memory is not there")?;
    let (tables, header) = (input.tables(), input.header());
    let dot = || pydeep_view::objects::graph_dot(tables, &selected, None);
    let bytes = match format.as_str() {
        "json" => {
            let mut line = serde_json::to_vec(&pydeep_view::objects::graph_json(
                tables, header, &selected, None,
            ))?;
            line.push(b'\n');
            line
        }
        "dot" => dot().into_bytes(),
        "svg" => {
            use std::io::Write;
            let mut child = Process::new("dot")
                .arg("-Tsvg")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("running Graphviz `dot` for SVG (apt-get install graphviz)")?;
            child
                .stdin
                .take()
                .context("dot's stdin")?
                .write_all(dot().as_bytes())?;
            let out = child.wait_with_output().context("waiting for dot")?;
            anyhow::ensure!(out.status.success(), "dot failed: {}", out.status);
            out.stdout
        }
        other => anyhow::bail!("unknown format `{other}`: use dot, json or svg"),
    };
    match output {
        Some(path) => write_output(path, &bytes)?,
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(Exit::Ok)
}
