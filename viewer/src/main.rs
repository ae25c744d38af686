//! `pydeep-view`: profiles and standard exports from `.pdr` recordings.
//! A thin command line over the `pydeep_view` library; it reads recordings
//! only, never a process.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use pydeep_format::files::{Existing, OutputFile};
use pydeep_view::aggregate::{Profile, ProfileOptions};
use pydeep_view::filter::{parse_offset, Filter};
use pydeep_view::flamegraph::FlamegraphOptions;
use pydeep_view::input::Input;
use pydeep_view::pprof::PprofOptions;
use pydeep_view::snapshots::{self, Content, Selection};
use pydeep_view::symbols::Granularity;
use pydeep_view::{
    chrome, collapsed, diff, flamegraph, heap, lines, objects, pprof, scopes, speedscope, top,
    ViewError,
};

#[derive(Parser)]
#[command(
    name = "pydeep-view",
    version,
    about = "Profiles and standard exports from pydeep .pdr recordings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each runs through its own `run` below.
#[derive(Subcommand)]
enum Command {
    /// Interactive flamegraph SVG (search, zoom), drawn by inferno.
    Flamegraph(FlamegraphArgs),
    /// Functions by own (self) and total share of the samples.
    Top(TopArgs),
    /// A source file with each line's share of the samples in a gutter.
    Lines(LinesArgs),
    /// Folded stacks (Brendan Gregg's collapsed format), one line per stack.
    Collapsed(CollapsedArgs),
    /// speedscope JSON, one sampled profile per thread.
    Speedscope(OutputArgs),
    /// pprof (profile.proto, gzipped) for go tool pprof, Pyroscope, Parca.
    Pprof(PprofArgs),
    /// Chrome trace-event JSON: per-thread timeline for Perfetto / chrome://tracing
    /// (samples, and the traced calls of a `pydeep trace` window as nested
    /// slices with their real durations).
    Chrome(OutputArgs),
    /// One self-contained HTML page (no network) with every view: flame
    /// graph, timeline, top, source heat, bytecode, snapshots, heap.
    Report(OutputArgs),
    /// What grew and shrank between two recordings: a table (text or
    /// --json) and, with -o, a differential flamegraph SVG.
    Diff(DiffArgs),
    /// Annotated bytecode: the disassembly of the recorded code objects with
    /// samples per instruction, source lines and specializations.
    Bytecode(pydeep_view::bytecode::cli::BytecodeArgs),
    /// Snapshots' threads with their frames and variables (recorded with
    /// --snapshot-every, values with --snapshot-locals).
    Scopes(ScopesArgs),
    /// Snapshots' generators, coroutines and asyncio tasks.
    Generators(SnapshotArgs),
    /// A snapshot's object graph (from --snapshot-locals) as DOT or JSON.
    Objects(ObjectsArgs),
    /// Heap snapshots' object counts by type (--heap-every); with --growth,
    /// the types that grew between successive heap snapshots.
    Heap(HeapArgs),
}

/// Which snapshots a snapshot command shows (default: all of them).
#[derive(Args)]
struct SnapshotArgs {
    /// The recording (.pdr).
    file: PathBuf,
    /// The latest snapshot at or before this offset after the start (1.5,
    /// 1.5s, 250ms); the first one if the offset precedes them all.
    #[arg(long, value_name = "OFFSET", conflicts_with = "index")]
    at: Option<String>,
    /// Only the snapshot with this index, counted per kind from 0
    /// (repeatable).
    #[arg(long, value_name = "N")]
    index: Vec<usize>,
    /// Only snapshots of this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// JSON, one document per snapshot and line (schema in notes/viewer.md).
    #[arg(long)]
    json: bool,
}

impl SnapshotArgs {
    fn selection(&self) -> Result<Selection> {
        Ok(Selection {
            at_ns: self.at.as_deref().map(parse_offset).transpose()?,
            indexes: self.index.clone(),
            pids: self.pids.clone(),
        })
    }

    /// Streams the chosen snapshots holding `content` to `each`.
    fn each(
        &self,
        content: Content,
        mut each: impl FnMut(
            &pydeep_format::Tables,
            &pydeep_format::proto::Header,
            &snapshots::Selected,
        ) -> io::Result<()>,
    ) -> Result<()> {
        let selection = self.selection()?;
        let mut input = Input::open(&self.file)?;
        let result = snapshots::for_each(&mut input, content, &selection, &mut each);
        warn_damage(input.damage().as_deref());
        result?;
        Ok(())
    }
}

#[derive(Args)]
struct ScopesArgs {
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// Only this thread: a thread name or a thread id (repeatable).
    #[arg(long = "thread", value_name = "NAME|TID")]
    threads: Vec<String>,
}

#[derive(Args)]
struct ObjectsArgs {
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// Only what is reachable from this object (`0xADDRESS` or decimal id()).
    #[arg(long, value_name = "ADDRESS")]
    root: Option<String>,
    /// Output file ("-" or absent: standard output).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct HeapArgs {
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// Types shown per snapshot, most numerous (or most grown) first; 0: all.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Show the growth between successive heap snapshots (objgraph's
    /// show_growth) instead of the counts.
    #[arg(long, conflicts_with = "at")]
    growth: bool,
}

fn json_line(out: &mut dyn Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

fn parse_address(text: &str) -> Result<u64> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("`{text}` is not an address (0xADDRESS or a decimal id())"))
}

/// Which samples count, and at which granularity (shared by every subcommand).
#[derive(Args)]
struct SampleArgs {
    /// The recording (.pdr).
    file: PathBuf,
    /// Only threads of this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Only this thread: a thread name or a thread id (repeatable).
    #[arg(long = "thread", value_name = "NAME|TID")]
    threads: Vec<String>,
    /// Start of the time window after the recording's start (1.5, 1.5s, 250ms).
    #[arg(long, value_name = "OFFSET")]
    from: Option<String>,
    /// End of the time window after the recording's start (exclusive).
    #[arg(long, value_name = "OFFSET")]
    to: Option<String>,
    /// Only samples of running threads (not idle in a syscall, lock or sleep).
    #[arg(long)]
    active_only: bool,
    /// Only samples of threads holding the GIL.
    #[arg(long)]
    gil_only: bool,
    /// Count torn samples too (stacks that changed while they were read,
    /// which may mix two moments); left out by default.
    #[arg(long)]
    include_torn: bool,
    /// What a frame is counted as: function, line or instruction.
    #[arg(
        long,
        default_value = "function",
        value_name = "function|line|instruction"
    )]
    granularity: Granularity,
}

impl SampleArgs {
    fn filter(&self) -> Result<Filter> {
        let offset = |text: &Option<String>| text.as_deref().map(parse_offset).transpose();
        let filter = Filter {
            pids: self.pids.clone(),
            threads: self.threads.clone(),
            from_ns: offset(&self.from)?,
            to_ns: offset(&self.to)?,
            active_only: self.active_only,
            gil_only: self.gil_only,
            include_torn: self.include_torn,
        };
        if let (Some(from), Some(to)) = (filter.from_ns, filter.to_ns) {
            if from >= to {
                bail!("--from must be before --to");
            }
        }
        Ok(filter)
    }

    fn open(&self) -> Result<Input<io::BufReader<File>>> {
        Ok(Input::open(&self.file)?)
    }

    /// Reads the whole recording into a profile at `granularity`.
    fn profile_at(&self, granularity: Granularity) -> Result<Profile> {
        self.profile_with(granularity, &ProfileOptions::default())
    }

    /// Reads the whole recording into a profile at `granularity` with
    /// `options`.
    fn profile_with(&self, granularity: Granularity, options: &ProfileOptions) -> Result<Profile> {
        let filter = self.filter()?;
        let mut input = self.open()?;
        if filter.gil_only && pydeep_view::aggregate::free_threaded(input.header()) {
            bail!(
                "--gil-only: this recording's target is a free-threaded CPython, which has no GIL, \
                 so no sample holds it; use --active-only for the threads that were running"
            );
        }
        let profile = Profile::read_with(&mut input, &filter, granularity, options);
        warn_damage(profile.damage.as_deref());
        warn_damage(profile.gaps.as_deref());
        if profile.total == 0 && profile.read > 0 {
            warn(&format!(
                "no sample of the {} read passes the filters",
                profile.read
            ));
        }
        Ok(profile)
    }

    fn profile(&self) -> Result<Profile> {
        self.profile_at(self.granularity)
    }
}

#[derive(Args)]
struct OutputArgs {
    #[command(flatten)]
    samples: SampleArgs,
    /// Output file ("-" or absent: standard output).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct FlamegraphArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Reversed icicle graph: innermost frames at the root, drawn top down.
    #[arg(long)]
    reverse: bool,
    /// Title above the graph.
    #[arg(long)]
    title: Option<String>,
    /// Image width in pixels.
    #[arg(long)]
    width: Option<usize>,
    /// One root frame per thread under "all".
    #[arg(long)]
    per_thread: bool,
    /// Leave out the thread-state frames (<GIL held>, <no GIL>, <idle>)
    /// that end every stack by default.
    #[arg(long)]
    no_states: bool,
    /// Draw the traced time of the recording's trace window (`pydeep
    /// trace`) instead of samples: each frame as wide as the nanoseconds
    /// its calls ran (filters other than the file do not apply).
    #[arg(long)]
    trace: bool,
}

#[derive(Args)]
struct CollapsedArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// List frames innermost first.
    #[arg(long)]
    reverse: bool,
}

#[derive(Args)]
struct TopArgs {
    #[command(flatten)]
    samples: SampleArgs,
    /// Rows to show (0: all).
    #[arg(long, default_value_t = 40)]
    limit: usize,
    /// One JSON document: totals, each thread's ticks and time, the rows
    /// (schema in notes/viewer.md).
    #[arg(long)]
    json: bool,
    /// Exact calls from the recording's trace window (`pydeep trace`):
    /// calls, total and own time, per-call percentiles, instead of samples.
    #[arg(long, conflicts_with = "json")]
    trace: bool,
}

#[derive(Args)]
struct LinesArgs {
    #[command(flatten)]
    samples: SampleArgs,
    /// The source file to annotate: a path as the recording names it (or a
    /// suffix of it); read from disk, else from the recording if embedded.
    #[arg(long, value_name = "PATH")]
    source: PathBuf,
    /// Exact per-line hits and time from the recording's trace window
    /// (`pydeep trace --lines`), as line_profiler shows them, instead of
    /// sampled shares.
    #[arg(long)]
    trace: bool,
}

#[derive(Args)]
struct DiffArgs {
    /// The first recording (before the change).
    before: PathBuf,
    /// The second recording (after the change).
    after: PathBuf,
    /// What a frame is counted as: function, line or instruction.
    #[arg(
        long,
        default_value = "function",
        value_name = "function|line|instruction"
    )]
    granularity: Granularity,
    /// Rows to show (0: all).
    #[arg(long, default_value_t = 40)]
    limit: usize,
    /// One JSON document instead of the table (schema in notes/viewer.md).
    #[arg(long)]
    json: bool,
    /// Also write the differential flamegraph SVG here.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
}

impl DiffArgs {
    fn profile(&self, path: &Path) -> Result<Profile> {
        let mut input = Input::open(path)?;
        let profile = Profile::read(&mut input, &Filter::default(), self.granularity);
        warn_damage(profile.damage.as_deref());
        Ok(profile)
    }
}

#[derive(Args)]
struct PprofArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// The service_name label (default: the Python script's name).
    #[arg(long)]
    service_name: Option<String>,
}

impl Command {
    fn run(self) -> Result<()> {
        match self {
            Command::Flamegraph(args) => {
                let samples = &args.output.samples;
                let profile = if args.trace {
                    let mut input = samples.open()?;
                    let profile = pydeep_view::traced::profile(&mut input, samples.granularity);
                    warn_damage(profile.damage.as_deref());
                    if profile.total == 0 {
                        warn(
                            "no traced call in this recording: record one with `pydeep trace PID`",
                        );
                    }
                    profile
                } else {
                    let read = ProfileOptions {
                        thread_states: !args.no_states,
                    };
                    samples.profile_with(samples.granularity, &read)?
                };
                let options = FlamegraphOptions {
                    title: args.title,
                    reverse: args.reverse,
                    width: args.width,
                    per_thread: args.per_thread,
                    count_name: args.trace.then(|| "ns".to_string()),
                };
                let mut out = Output::create(args.output.output.as_deref(), false)?;
                flamegraph::write(&profile, &options, out.writer()).map_err(ViewError::Write)?;
                out.finish()?;
            }
            Command::Top(args) if args.trace => {
                let calls = pydeep_view::traced::read(&args.samples.file).map_err(|reason| {
                    ViewError::Open {
                        path: args.samples.file.clone(),
                        reason,
                    }
                })?;
                pydeep_view::traced::write(&calls, args.limit, stdout())
                    .map_err(ViewError::Write)?;
            }
            Command::Top(args) => {
                let profile = args.samples.profile()?;
                if args.json {
                    let mut out = stdout();
                    json_line(&mut out, &top::json(&profile, args.limit))
                        .and_then(|()| out.flush())
                        .map_err(ViewError::Write)?;
                } else {
                    top::write(&profile, args.limit, stdout()).map_err(ViewError::Write)?;
                }
            }
            Command::Lines(args) if args.trace => {
                let path = &args.samples.file;
                let (traced, tables) =
                    lines::traced_lines(path).map_err(|reason| ViewError::Open {
                        path: path.clone(),
                        reason,
                    })?;
                if traced.is_empty() {
                    return Err(ViewError::InvalidArgument(
                        "no line event in this recording: record them with `pydeep trace PID --lines`"
                            .into(),
                    )
                    .into());
                }
                let source = args.source.to_string_lossy();
                let file = lines::traced_file(&traced, &source)?;
                let text = lines::source_text(&tables, &args.source, &file)?;
                lines::write_traced(&traced, &file, &text, stdout()).map_err(ViewError::Write)?;
            }
            Command::Lines(args) => {
                let filter = args.samples.filter()?;
                let mut input = args.samples.open()?;
                // Lines need line granularity whatever --granularity says.
                let profile = Profile::read(&mut input, &filter, Granularity::Line);
                warn_damage(profile.damage.as_deref());
                warn_damage(profile.gaps.as_deref());
                let source = args.source.to_string_lossy();
                let file = lines::recorded_file(&profile, &source)?;
                let text = lines::source_text(input.tables(), &args.source, &file)?;
                lines::write(&profile, &file, &text, stdout()).map_err(ViewError::Write)?;
            }
            Command::Collapsed(args) => {
                let profile = args.output.samples.profile()?;
                let mut out = Output::create(args.output.output.as_deref(), false)?;
                collapsed::write(&profile, args.reverse, out.writer()).map_err(ViewError::Write)?;
                out.finish()?;
            }
            Command::Speedscope(args) => {
                let profile = args.samples.profile()?;
                let name = args.samples.file.display().to_string();
                let mut out = Output::create(args.output.as_deref(), false)?;
                speedscope::write(&profile, &name, out.writer()).map_err(ViewError::Write)?;
                out.finish()?;
            }
            Command::Pprof(args) => {
                let profile = args.output.samples.profile()?;
                let options = PprofOptions {
                    service_name: args.service_name,
                };
                let mut out = Output::create(args.output.output.as_deref(), true)?;
                pprof::write(&profile, &options, out.writer()).map_err(ViewError::Write)?;
                out.finish()?;
            }
            Command::Chrome(args) => {
                let filter = args.samples.filter()?;
                let mut input = args.samples.open()?;
                let mut out = Output::create(args.output.as_deref(), false)?;
                let summary =
                    chrome::write(&mut input, &filter, args.samples.granularity, out.writer())
                        .map_err(ViewError::Write)?;
                out.finish()?;
                warn_damage(summary.damage.as_deref());
            }
            Command::Report(args) => {
                let filter = args.samples.filter()?;
                let report = pydeep_view::report::gather(
                    &args.samples.file,
                    &filter,
                    &pydeep_view::report::ReportOptions::default(),
                )?;
                warn_damage(report.damage.as_deref());
                let mut out = Output::create(args.output.as_deref(), false)?;
                pydeep_view::report::write_page(&report.data, out.writer())
                    .map_err(ViewError::Write)?;
                out.finish()?;
            }
            Command::Diff(args) => {
                let before = args.profile(&args.before)?;
                let after = args.profile(&args.after)?;
                let rows = diff::changes(&before, &after);
                if let Some(path) = args.output.as_deref() {
                    let mut out = Output::create(Some(path), false)?;
                    diff::write_flamegraph(&before, &after, out.writer())
                        .map_err(ViewError::Write)?;
                    out.finish()?;
                }
                let mut out = stdout();
                if args.json {
                    json_line(&mut out, &diff::json(&before, &after, &rows, args.limit))
                        .and_then(|()| out.flush())
                        .map_err(ViewError::Write)?;
                } else {
                    diff::write_text(&before, &after, &rows, args.limit, out)
                        .map_err(ViewError::Write)?;
                }
            }
            Command::Bytecode(args) => pydeep_view::bytecode::cli::run(&args)?,
            Command::Scopes(args) => {
                let mut out = stdout();
                let json = args.snapshots.json;
                args.snapshots
                    .each(Content::Scopes, |tables, header, selected| {
                        if json {
                            let value =
                                scopes::scopes_json(tables, header, selected, &args.threads);
                            json_line(&mut out, &value)
                        } else {
                            scopes::write_scopes_text(
                                &mut out,
                                tables,
                                header,
                                selected,
                                &args.threads,
                            )
                        }
                    })?;
                out.flush().map_err(ViewError::Write)?;
            }
            Command::Generators(args) => {
                let mut out = stdout();
                args.each(Content::Generators, |tables, header, selected| {
                    if args.json {
                        json_line(&mut out, &scopes::generators_json(tables, header, selected))
                    } else {
                        scopes::write_generators_text(&mut out, tables, header, selected)
                    }
                })?;
                out.flush().map_err(ViewError::Write)?;
            }
            Command::Objects(args) => {
                let root = args.root.as_deref().map(parse_address).transpose()?;
                let mut output = Output::create(args.output.as_deref(), false)?;
                let out = output.writer();
                let json = args.snapshots.json;
                args.snapshots
                    .each(Content::Objects, |tables, header, selected| {
                        if json {
                            json_line(out, &objects::graph_json(tables, header, selected, root))
                        } else {
                            out.write_all(objects::graph_dot(tables, selected, root).as_bytes())
                        }
                    })?;
                output.finish()?;
            }
            Command::Heap(args) => {
                let mut out = stdout();
                let json = args.snapshots.json;
                let mut growth = heap::Growth::default();
                args.snapshots
                    .each(Content::Heap, |tables, header, selected| {
                        if !args.growth {
                            return if json {
                                json_line(
                                    &mut out,
                                    &heap::heap_json(tables, header, selected, args.top),
                                )
                            } else {
                                heap::write_heap_text(&mut out, tables, header, selected, args.top)
                            };
                        }
                        match growth.next(tables, selected) {
                            Some(step) if json => {
                                json_line(&mut out, &heap::growth_json(header, &step, args.top))
                            }
                            Some(step) => {
                                heap::write_growth_text(&mut out, header, &step, args.top)
                            }
                            None => Ok(()),
                        }
                    })?;
                out.flush().map_err(ViewError::Write)?;
            }
        }
        Ok(())
    }
}

fn stdout() -> impl Write {
    BufWriter::with_capacity(1 << 16, io::stdout().lock())
}

/// Where an export goes: a file or standard output.
enum Output {
    File(BufWriter<OutputFile>),
    Stdout(Box<dyn Write>),
}

impl Output {
    /// The output file, or standard output for `None` and "-". Binary
    /// outputs are not written to a terminal. A file is created the one safe
    /// way ([`OutputFile`]): never through a symbolic link; an existing file
    /// is replaced by a new one renamed over it once the output is complete
    /// (a failed export leaves the old file as it was); a FIFO or a device
    /// such as `/dev/null` is written as it is.
    fn create(path: Option<&Path>, binary: bool) -> Result<Output> {
        match path {
            Some(path) if path != Path::new("-") => {
                let file = OutputFile::create(path, Existing::ReplaceOrWriteDevice, 0o666)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                Ok(Output::File(BufWriter::with_capacity(1 << 16, file)))
            }
            _ => {
                if binary && io::stdout().is_terminal() {
                    bail!("refusing to write binary output to a terminal: use -o FILE or a pipe");
                }
                Ok(Output::Stdout(Box::new(stdout())))
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::File(file) => file,
            Output::Stdout(out) => out,
        }
    }

    /// Flushes and, for a file, gives it its name.
    fn finish(self) -> Result<()> {
        match self {
            Output::File(file) => {
                let file = file
                    .into_inner()
                    .map_err(|e| ViewError::Write(e.into_error()))?;
                let path = file.path().to_path_buf();
                file.commit()
                    .with_context(|| format!("cannot create {}", path.display()))?;
            }
            Output::Stdout(mut out) => out.flush().map_err(ViewError::Write)?,
        }
        Ok(())
    }
}

fn warn(message: &str) {
    eprintln!("pydeep-view: warning: {message}");
}

fn warn_damage(damage: Option<&str>) {
    if let Some(damage) = damage {
        warn(damage);
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<ViewError>()
                .is_some_and(ViewError::is_broken_pipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        // `pydeep-view collapsed x.pdr | head`: the reader had enough.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pydeep-view: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
