//! The `pydeep` command line: every subcommand and its options, with their
//! defaults documented where they are declared.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// pydeep: look deep inside running CPython processes from the outside.
#[derive(Debug, Parser)]
#[command(name = "pydeep", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `pydeep`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running Python process and record its stacks.
    Attach {
        /// The target.
        #[command(flatten)]
        target: TargetPid,
        /// Sampling options.
        #[command(flatten)]
        options: RecordOptions,
    },
    /// Trace a running Python process: every call and return (exact
    /// counts, real durations) for a window, from a tracer loaded into it
    /// (ptrace, x86_64; notes/tracing.md). The process is left as it was.
    Trace {
        /// The target.
        #[command(flatten)]
        target: TargetPid,
        /// Trace options.
        #[command(flatten)]
        options: TraceArgs,
    },
    /// Start a Python program and record it from its first Python frame;
    /// exits with the program's exit code.
    Record {
        /// Sampling options.
        #[command(flatten)]
        options: RecordOptions,
        /// Tracing options (only with --trace).
        #[command(flatten)]
        trace: RecordTraceArgs,
        /// The program and its arguments, after `--` (e.g. `-- python app.py`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// A live view of a running process, refreshed every second like
    /// `py-spy top`: functions by own and total share, each thread's
    /// running and GIL shares, rate and missed ticks. Keys: o (sort by own),
    /// t (by total), q (quit). Not on a terminal (or with --once), prints
    /// the view once after --interval and exits.
    Top {
        /// The target.
        #[command(flatten)]
        target: TargetPid,
        /// Samples per second per thread.
        #[arg(short, long, default_value_t = 100.0, value_parser = parse_rate)]
        rate: f64,
        /// Time between refreshes (the view lags the process by up to this
        /// plus a second: it shows the recording's flushed chunks).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Print the view once, after --interval of sampling, and exit.
        #[arg(long)]
        once: bool,
        /// Stop after this long.
        #[arg(short, long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Rows of the function table (0 = all).
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Sort by own or total share first.
        #[arg(long, default_value = "own", value_parser = ["own", "total"])]
        sort: String,
        /// Keep samples of idle threads.
        #[arg(long)]
        idle: bool,
        /// Keep the recording behind the view in this file (default: a
        /// temporary file, deleted at the end).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a recording's header, counts, duration, size and bytes per sample.
    Info {
        /// The `.pdr` file.
        file: PathBuf,
        /// Print JSON (the same facts, machine-readable) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every thread's stack of a running process (paused while it is
    /// read), optionally with each frame's variables.
    Dump {
        /// The target.
        #[command(flatten)]
        target: TargetPid,
        /// Dump options.
        #[command(flatten)]
        options: DumpArgs,
    },
    /// Count the GC-tracked objects of a running process by type (paused
    /// while counted); with --interval, the growth between counts.
    Heap {
        /// The target.
        #[command(flatten)]
        target: TargetPid,
        /// Types shown, most numerous first (0 = all).
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Time between counts (e.g. 5s); with --count, show growth.
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        /// Number of counts (default 1, or 2 with --interval).
        #[arg(long)]
        count: Option<u32>,
        /// Print JSON (one summary per count, or one growth per step with
        /// --growth or --since) instead of text.
        #[arg(long)]
        json: bool,
        /// Show only the growth between successive counts, like objgraph's
        /// show_growth (text shows it already with --interval).
        #[arg(long, requires = "interval")]
        growth: bool,
        /// Show the growth since a count saved before with
        /// `pydeep heap PID --json --top 0 > FILE` (same process).
        #[arg(long, value_name = "FILE")]
        since: Option<PathBuf>,
    },
    /// The objects reachable from a root, breadth first (paused while
    /// read): DOT, JSON or SVG (through Graphviz `dot`).
    Objects {
        /// The target.
        #[command(flatten)]
        target: TargetPid,
        /// Where to start: `0xADDRESS`, `module:NAME:GLOBAL` or
        /// `thread:NAME:frame:FUNCTION:local:VARIABLE`.
        #[arg(long)]
        root: String,
        /// References followed from the root.
        #[arg(long, default_value_t = 3)]
        depth: usize,
        /// Most objects in the graph.
        #[arg(long, default_value_t = 200)]
        max_objects: usize,
        /// Output file; its extension (.dot, .json, .svg) picks the format
        /// unless --format says otherwise. Default: DOT on stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// dot, json or svg.
        #[arg(long)]
        format: Option<String>,
        /// Print JSON (`--format json`), as `dump --json`, `heap --json`
        /// and `pydeep-view objects --json` do.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// What values are masked.
        #[command(flatten)]
        redact: RedactArgs,
    },
    /// Record many processes continuously: discovery by pid, executable,
    /// command line, user or cgroup; rotated, size- and age-limited files;
    /// a control socket (see `pydeep ctl`). Runs until SIGTERM.
    Daemon {
        /// The configuration file (reference: notes/daemon.md).
        #[arg(short, long, default_value = crate::daemon::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Talk to a running `pydeep daemon` through its control socket.
    Ctl {
        /// The daemon's control socket.
        #[arg(long, default_value = crate::daemon::config::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the daemon's JSON reply as it is.
        #[arg(long)]
        json: bool,
        /// Give up (exit 11) if the daemon has not answered after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// What to ask.
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Check a recording: exit 0 only for a complete, valid file; otherwise
    /// say what is wrong and how much is still readable.
    Verify {
        /// The `.pdr` file.
        file: PathBuf,
    },
    /// Print a shell completion script, e.g.
    /// `pydeep completions bash > ~/.local/share/bash-completion/completions/pydeep`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// The process a live command reads: a positional PID, or `--pid PID` as
/// py-spy users type it.
#[derive(Debug, Clone, Args)]
pub struct TargetPid {
    /// Process id of the target.
    #[arg(
        value_name = "PID",
        required_unless_present = "pid_option",
        conflicts_with = "pid_option"
    )]
    pid: Option<i32>,
    /// Process id of the target (the same as the positional PID).
    #[arg(long = "pid", id = "pid_option", value_name = "PID")]
    pid_option: Option<i32>,
}

impl TargetPid {
    /// The process id, however it was given.
    pub fn pid(&self) -> i32 {
        self.pid
            .or(self.pid_option)
            .expect("clap requires a PID, positional or --pid")
    }
}

/// The requests of `pydeep ctl`.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlAction {
    /// Targets, rates, drops, bytes and files; the daemon's CPU and budget.
    Status,
    /// Write a deep snapshot of PID into its recording now.
    Snapshot {
        /// The target.
        pid: i32,
        /// Include each frame's variables.
        #[arg(long)]
        locals: bool,
        /// Include the heap counted by type.
        #[arg(long)]
        heap: bool,
    },
    /// Start recording PID (even if no rule of the configuration selects it).
    Start {
        /// The process.
        pid: i32,
    },
    /// Stop recording PID and finish its file; it is not picked up again.
    Stop {
        /// The target.
        pid: i32,
    },
    /// Write every target's buffered samples to disk now.
    Flush,
    /// Open a bounded trace window inside PID, a target the daemon samples:
    /// every Python call and return (like `pydeep trace`) goes into that
    /// target's recording beside its samples. Runs code in the target; the
    /// reply comes when the window is over (the --timeout of ctl is
    /// extended by --duration).
    Trace {
        /// The target.
        pid: i32,
        /// How long the window stays open.
        #[arg(short, long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// C functions called from Python too.
        #[arg(long, conflicts_with = "functions")]
        c_calls: bool,
        /// Line events too (see `pydeep trace --lines`).
        #[arg(long)]
        lines: bool,
        /// Only code objects whose `FILE:QUALNAME` this regex matches (see
        /// `pydeep trace --functions`).
        #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
        functions: Option<regex::Regex>,
        /// Exact execution counts of the --functions code's instructions
        /// (see `pydeep trace --opcodes`); the reply says how many.
        #[arg(long, requires = "functions")]
        opcodes: bool,
        /// How long to wait for a thread of the target to run Python code,
        /// the only moment the tracer can be loaded safely.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        start_timeout: Duration,
    },
}

impl CtlAction {
    /// The JSON request of the control protocol.
    pub fn request(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            CtlAction::Status => json!({"command": "status"}),
            CtlAction::Snapshot { pid, locals, heap } => {
                json!({"command": "snapshot", "pid": pid, "locals": locals, "heap": heap})
            }
            CtlAction::Start { pid } => json!({"command": "start", "pid": pid}),
            CtlAction::Stop { pid } => json!({"command": "stop", "pid": pid}),
            CtlAction::Flush => json!({"command": "flush"}),
            CtlAction::Trace {
                pid,
                duration,
                c_calls,
                lines,
                functions,
                opcodes,
                start_timeout,
            } => json!({
                "command": "trace",
                "pid": pid,
                "duration_ms": duration.as_millis() as u64,
                "c_calls": c_calls,
                "lines": lines,
                "functions": functions.as_ref().map(|f| f.as_str()),
                "opcodes": opcodes,
                "start_timeout_ms": start_timeout.as_millis() as u64,
            }),
        }
    }

    /// How much longer than a plain request the reply may take (a trace
    /// window is answered when it is over).
    pub fn takes(&self) -> Duration {
        match self {
            CtlAction::Trace {
                duration,
                start_timeout,
                ..
            } => *duration + *start_timeout + Duration::from_secs(30),
            _ => Duration::ZERO,
        }
    }
}

/// Options of `dump`.
#[derive(Debug, Clone, Args)]
pub struct DumpArgs {
    /// Show each frame's locals: arguments, fast locals, cell variables
    /// and free variables with their cells' contents.
    #[arg(long)]
    pub locals: bool,
    /// Show each frame's module globals (`__builtins__` left out).
    #[arg(long)]
    pub globals: bool,
    /// Print JSON (schema in notes/snapshots.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Deepest stack read per thread.
    #[arg(long, default_value_t = 4096)]
    pub max_depth: usize,
    /// Longest str or bytes shown (characters).
    #[arg(long, default_value_t = 200)]
    pub max_string: usize,
    /// Items shown per container.
    #[arg(long, default_value_t = 10)]
    pub max_items: usize,
    /// What values are masked.
    #[command(flatten)]
    pub redact: RedactArgs,
    /// Show generators, coroutines and async generators reachable from the
    /// stacks (state, where suspended, what each awaits) and the asyncio
    /// task tree (tasks are found by walking the GC lists).
    #[arg(long = "async")]
    pub async_: bool,
    /// With --async: every generator-like object in the heap, not only those
    /// reachable from the stacks and tasks.
    #[arg(long, requires = "async_")]
    pub all: bool,
}

/// Options shared by `attach` and `record`.
#[derive(Debug, Clone, Args)]
pub struct RecordOptions {
    /// Output file. Default: `pydeep-PID-TIME.pdr` in the current directory
    /// (PID: the target's for `attach`; pydeep's own for `record`, which
    /// creates its output before it starts the program).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Overwrite the output file if it exists (never follows a symlink).
    #[arg(long)]
    pub force: bool,
    /// When recording ends, also write it as FORMAT: flamegraph (.svg),
    /// speedscope, pprof (.pb.gz), chrome (Perfetto), collapsed (py-spy's
    /// raw) or report (.html). It goes to `-o` if that names a file not
    /// ending in `.pdr` (the recording then beside it, as NAME.pdr), else
    /// beside the recording.
    #[arg(short, long, value_name = "FORMAT", value_parser = parse_format)]
    pub format: Option<pydeep_view::export::Format>,
    /// With --format: keep only that output; the recording is deleted once
    /// it is written (and kept if writing it fails).
    #[arg(long, requires = "format")]
    pub no_pdr: bool,
    /// Samples per second per thread.
    #[arg(short, long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Stop after this long (e.g. `10s`, `500ms`, `2m`); default: until
    /// Ctrl-C or the target's exit.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Pause the target for every sample, for exactly consistent stacks.
    /// By default a target is paused only while its stacks change too fast
    /// to read without stopping it (call-heavy code), and only for its
    /// samples then.
    #[arg(long, conflicts_with = "nonblocking")]
    pub blocking: bool,
    /// Never pause the target: stacks that change while read are recorded
    /// as torn (their callers only), and on call-heavy code the profile
    /// then misses some of the short calls.
    #[arg(long)]
    pub nonblocking: bool,
    /// Keep samples of idle threads (waiting on a lock, in a syscall, asleep).
    #[arg(long)]
    pub idle: bool,
    /// Follow child Python processes; their samples go into the same
    /// recording, tagged with their pid.
    #[arg(long)]
    pub subprocesses: bool,
    /// Do not embed source files in the recording.
    #[arg(long)]
    pub no_source: bool,
    /// Embed whole source files, not only the lines of the functions
    /// recorded (the default: the recording stays self-contained for every
    /// function it holds, at a fraction of the bytes).
    #[arg(long, conflicts_with = "no_source")]
    pub full_source: bool,
    /// Deepest stack read; deeper stacks keep their outermost frames and are
    /// flagged truncated.
    #[arg(long, default_value_t = 4096)]
    pub max_depth: u32,
    /// Never show the live status line, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
    /// Store a snapshot of every thread's frames this often (e.g. `1s`);
    /// the target is paused while it is read.
    #[arg(long, value_parser = parse_duration)]
    pub snapshot_every: Option<Duration>,
    /// Snapshots include each frame's variables with their values and the
    /// objects they reference (values are recorded only with this flag).
    #[arg(long, requires = "snapshot_every")]
    pub snapshot_locals: bool,
    /// Snapshots include module globals with their values (each module's
    /// once per snapshot, on the outermost frame using it; `__builtins__`
    /// left out, 200 per module).
    #[arg(long, requires = "snapshot_every")]
    pub snapshot_globals: bool,
    /// Snapshots include asyncio tasks (their tree, names, coroutine
    /// stacks), found by a walk of the GC lists; generators and coroutines
    /// reachable from the stacks are always included.
    #[arg(long, requires = "snapshot_every")]
    pub snapshot_async: bool,
    /// Most objects stored per snapshot, reached from the variables.
    #[arg(long, default_value_t = 200, requires = "snapshot_locals")]
    pub snapshot_objects: usize,
    /// Count the GC-tracked objects by type this often (e.g. `5s`); the
    /// target is paused while they are counted.
    #[arg(long, value_parser = parse_duration)]
    pub heap_every: Option<Duration>,
    /// What values are masked.
    #[command(flatten)]
    pub redact: RedactArgs,
}

/// `--redact REGEX` / `--no-redact`, shared by every command that can show
/// or record values.
#[derive(Debug, Clone, Args)]
pub struct RedactArgs {
    /// Mask the values of names matching REGEX (searched, so `db_password`
    /// matches `password`): variables, dict items under a str key,
    /// attributes, objects reached through such a name, and `NAME=VALUE` or
    /// `--NAME VALUE` in recorded command lines. Names, types and addresses
    /// are kept.
    #[arg(long, value_name = "REGEX", default_value = crate::reading::redact::DEFAULT_PATTERN)]
    pub redact: String,
    /// Show and record every value, even of names `--redact` matches.
    #[arg(long)]
    pub no_redact: bool,
}

impl RedactArgs {
    /// The compiled pattern (`None` with `--no-redact`).
    pub fn regex(&self) -> Result<Option<&'static regex::Regex>, String> {
        crate::reading::redact::compile(&self.redact, self.no_redact).map_err(|e| {
            format!(
                "--redact {:?} is not a valid regular expression: {e}",
                self.redact
            )
        })
    }
}

/// The shortest duration any option or configuration key takes: 1 ms.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest duration any option or configuration key takes: 3650 days
/// (ten years). Longer ones are typing mistakes, and would overflow the
/// clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// The one range every duration is checked against, as users read it.
pub const DURATION_RANGE: &str = "1ms to 3650d (ten years)";

/// Parses `--functions`.
pub fn parse_regex(text: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(text).map_err(|e| e.to_string())
}

/// Parses a duration: `250ms`, `1.5s`, `2m`, `1h`, `7d` or a bare number
/// of seconds, from [`MIN_DURATION`] to [`MAX_DURATION`]. Every duration of
/// the command line (`-d`, `--snapshot-every`, `--heap-every`, `heap
/// --interval`) and of the daemon's configuration goes through here; a value
/// outside the range is refused with a message naming it (a usage error,
/// exit 2, on the command line), never rounded or clamped.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (number, scale) = if let Some(n) = trimmed.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = trimmed.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = trimmed.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = trimmed.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = trimmed.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (trimmed, 1.0)
    };
    let number = number.trim();
    // Digits and one decimal point only: no `inf`, `nan`, exponents or signs.
    let plain = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let value: f64 = match number.parse() {
        Ok(value) if plain => value,
        _ => {
            return Err(format!(
                "`{trimmed}` is not a duration: write a number and a unit, such as 500ms, 10s, 2m, 1h or 7d; a duration is {DURATION_RANGE}"
            ))
        }
    };
    let seconds = value * scale;
    if !(MIN_DURATION.as_secs_f64()..=MAX_DURATION.as_secs_f64()).contains(&seconds) {
        return Err(format!(
            "`{trimmed}` is out of range: a duration is {DURATION_RANGE}"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The slowest sampling rate `--rate` takes: one sample per 100 s.
pub const MIN_RATE_HZ: f64 = 0.01;

/// The fastest sampling rate `--rate` takes (a sampler asked for more than
/// it can take skips ticks and says so).
pub const MAX_RATE_HZ: f64 = 1_000_000.0;

/// Parses `--format`: a name of [`pydeep_view::export::Format`] (or
/// py-spy's `raw`, `chrometrace`).
pub fn parse_format(text: &str) -> Result<pydeep_view::export::Format, String> {
    pydeep_view::export::Format::parse(text)
}

/// Parses `--rate`: samples per second, from [`MIN_RATE_HZ`] to
/// [`MAX_RATE_HZ`]; zero, negative, not-a-number and infinite rates are
/// refused with the range.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let value: f64 = trimmed
        .parse()
        .map_err(|_| format!("`{trimmed}` is not a number of samples per second"))?;
    check_rate(value, MAX_RATE_HZ)
}

/// Checks a sampling rate against [`MIN_RATE_HZ`] and `max_hz`.
pub fn check_rate(value: f64, max_hz: f64) -> Result<f64, String> {
    if !(value.is_finite() && (MIN_RATE_HZ..=max_hz).contains(&value)) {
        return Err(format!(
            "a sampling rate is {MIN_RATE_HZ} to {max_hz} Hz (samples per second), not {value:?}"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration(" 1ms ").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn durations_outside_the_one_range_are_refused_and_name_it() {
        for text in [
            "99999999999999999999s",
            "1e20s",
            "10000000000000d",
            "5000000000000h",
            "3651d",
            "0",
            "0s",
            "0.5ms",
            "inf",
            "infs",
            "nan",
            "NaNs",
            "1e3s",
            "+5s",
            "-0s",
            "",
            "s",
            ".s",
            "1..2s",
            "1 2s",
        ] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(DURATION_RANGE), "{text}: {error}");
        }
    }

    #[test]
    fn rates_outside_the_range_are_refused_and_name_it() {
        for text in [
            "0", "-5", "nan", "inf", "-inf", "1e-300", "1e300", "1000001", "x",
        ] {
            let error = parse_rate(text).expect_err(text);
            assert!(
                error.contains("0.01 to 1000000 Hz") || error.contains("not a number"),
                "{text}: {error}"
            );
        }
        assert_eq!(parse_rate("0.01").unwrap(), 0.01);
        assert_eq!(parse_rate("1e6").unwrap(), 1e6);
        assert_eq!(parse_rate("100").unwrap(), 100.0);
    }

    #[test]
    fn record_takes_the_program_after_the_double_dash() {
        let cli = Cli::try_parse_from(["pydeep", "record", "-r", "50", "--", "python", "-c", "1"])
            .unwrap();
        match cli.command {
            Command::Record {
                options, command, ..
            } => {
                assert_eq!(options.rate, 50.0);
                assert_eq!(command, ["python", "-c", "1"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}

/// `pydeep record --trace`: a trace window in the program, sampled as
/// usual meanwhile, both in the one recording.
#[derive(Debug, Args)]
pub struct RecordTraceArgs {
    /// Also trace the program (every Python call and return, like `pydeep
    /// trace`) from its first line: the program stops at its exec, the
    /// tracer is loaded when the interpreter is initialised (at
    /// `Py_RunMain`) and the hooks are in before the program's own code
    /// runs. Interpreter start-up and `site` are not traced. A program that
    /// is not a CPython calling `Py_RunMain` (a wrapper script, an embedded
    /// interpreter) is traced from as soon as pydeep attaches to it
    /// instead; notes/tracing.md. Runs code in the program: only this flag
    /// does it.
    #[arg(long)]
    pub trace: bool,
    /// How long the trace window stays open (it ends earlier with the
    /// program or the recording).
    #[arg(long, default_value = "10s", value_parser = parse_duration, requires = "trace")]
    pub trace_duration: Duration,
    /// C functions called from Python too.
    #[arg(long, requires = "trace", conflicts_with = "functions")]
    pub c_calls: bool,
    /// Line events too (see `pydeep trace --lines`).
    #[arg(long, requires = "trace")]
    pub lines: bool,
    /// Only code objects whose `FILE:QUALNAME` this regex matches (see
    /// `pydeep trace --functions`).
    #[arg(long, value_name = "REGEX", value_parser = parse_regex, requires = "trace")]
    pub functions: Option<regex::Regex>,
    /// Exact execution counts of the --functions code's instructions (see
    /// `pydeep trace --opcodes`).
    #[arg(long, requires = "functions")]
    pub opcodes: bool,
    /// How long to wait for the program to run Python code once the
    /// interpreter is up (see `pydeep trace --start-timeout`).
    #[arg(long, default_value = "5s", value_parser = parse_duration, requires = "trace")]
    pub trace_start_timeout: Duration,
}

impl RecordTraceArgs {
    /// The window's options, if --trace was given.
    pub fn options(&self) -> Option<crate::trace::TraceOptions> {
        self.trace.then(|| crate::trace::TraceOptions {
            duration: Some(self.trace_duration),
            output: PathBuf::new(),
            overwrite: false,
            c_calls: self.c_calls,
            lines: self.lines,
            opcodes: self.opcodes,
            functions: self.functions.clone(),
            start_timeout: self.trace_start_timeout,
            preloaded: None,
        })
    }
}

/// Options of `pydeep trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The recording to write (default: pydeep-trace-PID.pdr).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Overwrite the output file if it exists (never follows a symlink).
    #[arg(long)]
    pub force: bool,
    /// How long the window stays open (e.g. `5s`, `500ms`); Ctrl-C or
    /// SIGTERM end it earlier.
    #[arg(short, long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Keep the window open until Ctrl-C or SIGTERM, whatever --duration.
    #[arg(long)]
    pub until_stopped: bool,
    /// Python calls and returns (the default, and for now the only kind
    /// of event besides --c-calls).
    #[arg(long)]
    pub calls: bool,
    /// C functions called from Python too (builtins, methods of C types).
    #[arg(long, conflicts_with = "functions")]
    pub c_calls: bool,
    /// Line events too: each time a new source line of a (selected)
    /// function starts, with its time (a C trace function, like
    /// `sys.settrace`; a target that already has one is refused, exit 20).
    /// Per-line hit counts: `pydeep-view lines --trace`.
    #[arg(long)]
    pub lines: bool,
    /// Only code objects whose `FILE:QUALNAME` this regex matches (searched
    /// anywhere in it, e.g. `app/db\.py:` or `:Session\.commit$`; before
    /// 3.11 code objects have no qualified name and their plain name is
    /// used). Calls, returns and line events of other code are not
    /// recorded; the regex runs in pydeep, never in the target.
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    pub functions: Option<regex::Regex>,
    /// Exact execution counts of every bytecode instruction of the
    /// --functions code (required: counting every instruction of a whole
    /// program slows it many times over). 3.9-3.11 through the trace
    /// function's opcode events (a target with a trace function is refused,
    /// exit 20); 3.12+ through a `sys.monitoring` tool of pydeep's own,
    /// freed at the end. A code object first called inside the window
    /// counts from about 10 ms after that first call on 3.12+.
    /// `pydeep-view bytecode --trace` shows them.
    #[arg(long, requires = "functions")]
    pub opcodes: bool,
    /// How long to wait for a thread of the target to run Python code, the
    /// only moment the tracer can be loaded safely (exit 19 after it).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub start_timeout: Duration,
}
