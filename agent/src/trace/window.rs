//! A trace window as one more source of a sampled target's recording
//! (`pydeep record --trace`): stepped by the sampler's driver between
//! ticks, on the sampler thread (the only one that reads the target), it
//! drains the ring into [`RawBatch`]es that go to the recording's sink
//! like the samples, and are interned there by the same recorder.
//!
//! Never blocks the sampler longer than one step, and no step is long:
//! loading the tracer (reading the target's ELF symbols, waiting up to
//! `--start-timeout` for a thread at a safe point, the injected calls)
//! runs on a helper thread while the sampler ticks on (reading without
//! pausing the target meanwhile: the helper has its threads seized), then
//! one poll of the ring per step. The window ends by its duration, by the driver
//! ([`TraceWindow::close`]: Ctrl-C, the recording ends), or by the
//! tracer's watchdog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::inject::{InjectError, Loaded};
use super::{
    abi, clock, ring, Drain, RawBatch, Start, TraceOptions, TraceOut, GIL_TIMEOUT, RELEASE_WAIT,
};
use crate::cli::exit::{Exit, Failure};
use crate::recording::codes::Resolver;
use crate::recording::sink::{Input, Sink, TraceInput};
use crate::{PythonVersion, Target};

/// Where a window is.
enum Phase {
    /// Not loaded yet.
    Idle,
    /// The tracer being loaded on a helper thread.
    Opening(Start, std::thread::JoinHandle<Result<Loaded, InjectError>>),
    /// Started; waiting for the watchdog to install the hooks.
    Starting(Instant),
    /// Hooks in; until this time (None: until closed).
    Tracing(Option<Instant>),
    /// STOP written; waiting for every hook to be removed.
    Stopping(Instant),
    /// RELEASE written; waiting for the tracer to let go.
    Releasing(Instant),
    /// Over.
    Done,
}

/// One bounded trace window inside a sampled target.
pub struct TraceWindow {
    options: TraceOptions,
    phase: Phase,
    drain: Option<Drain>,
    /// Why it failed, if it did.
    pub failure: Option<anyhow::Error>,
    ended_with_the_process: bool,
    /// What the last step did, to name a stall it caused.
    last_step: &'static str,
}

/// A step that opened the window (its first step, and each step while the
/// helper thread loads the tracer): named in a gap it caused.
pub const OPENING: &str = "opening a trace window";
/// A step that drained the ring (or closed the window).
pub const DRAINING: &str = "draining a trace window";

/// Sends a drain's batches to the sink, with the code objects they name
/// resolved by the sampler's resolver.
pub struct ToSink<'s> {
    /// The recording's sink.
    pub sink: &'s Sink,
    /// The sampled process's resolver.
    pub resolver: &'s mut Resolver,
    /// Its interpreter's version.
    pub version: Arc<PythonVersion>,
}

impl TraceOut for ToSink<'_> {
    fn send(&mut self, target: &mut Target, raw: RawBatch) -> Result<()> {
        // Each address once: a batch names a few code objects thousands
        // of times.
        let mut mappings = Vec::new();
        self.resolver
            .resolve_addresses(target, raw.distinct_code_addresses(), &mut mappings);
        self.sink.send(Input::Trace(Box::new(TraceInput {
            pid: target.pid(),
            version: self.version.clone(),
            code_epoch: target.code_epoch(),
            mappings,
            raw,
        })));
        Ok(())
    }
}

impl TraceWindow {
    /// A window to open at the first step.
    pub fn new(options: TraceOptions) -> TraceWindow {
        TraceWindow {
            options,
            phase: Phase::Idle,
            drain: None,
            failure: None,
            ended_with_the_process: false,
            last_step: OPENING,
        }
    }

    /// True while the tracer is being loaded on the helper thread, which
    /// has the target's threads seized: the sampler must not pause the
    /// target meanwhile (its ptrace requests would fail).
    pub fn opening(&self) -> bool {
        matches!(self.phase, Phase::Opening(..))
    }

    /// What the last step did ([`OPENING`] or [`DRAINING`]).
    pub fn last_step(&self) -> &'static str {
        self.last_step
    }

    /// True once the window is over (or failed).
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// True while the hooks are in.
    pub fn tracing(&self) -> bool {
        matches!(self.phase, Phase::Tracing(_))
    }

    /// What the window drained.
    pub fn summary(&self) -> super::Summary {
        self.drain.as_ref().map(Drain::summary).unwrap_or_default()
    }

    /// One step: open, or poll, or move on to the next phase. An error
    /// ends the window (what it installed is removed: STOP and RELEASE are
    /// written; the watchdog also ends it by itself without heartbeat).
    pub fn step(&mut self, target: &mut Target, out: &mut dyn TraceOut) {
        if self.done() {
            return;
        }
        if let Err(error) = self.advance(target, out) {
            self.phase = Phase::Done;
            if !crate::process::procfs::is_alive(target.pid()) {
                // The program ended inside the window: what was drained
                // is recorded; the rest went with the process.
                self.ended_with_the_process = true;
                return;
            }
            if let Some(drain) = &mut self.drain {
                let _ = drain.command(target, abi::COMMAND_STOP);
                let _ = drain.command(target, abi::COMMAND_RELEASE);
            }
            self.failure = Some(error);
        }
    }

    /// The process is no longer sampled (it ended): the window is over.
    pub fn process_gone(&mut self) {
        if !self.done() {
            self.phase = Phase::Done;
            self.ended_with_the_process = true;
        }
    }

    /// True if the process ended while the window was open.
    pub fn ended_with_the_process(&self) -> bool {
        self.ended_with_the_process
    }

    /// Ends the window now: stops, drains the rest, releases (bounded by
    /// the tracer's own timeouts).
    pub fn close(&mut self, target: &mut Target, out: &mut dyn TraceOut) {
        self.last_step = DRAINING;
        if let Phase::Opening(..) = self.phase {
            // Wait for the load (bounded by --start-timeout) and stop what
            // it started.
            let Phase::Opening(start, loading) = std::mem::replace(&mut self.phase, Phase::Done)
            else {
                unreachable!("matched above")
            };
            match joined(loading).and_then(|loaded| start.opened(target, &self.options, Ok(loaded)))
            {
                Ok(drain) => {
                    self.drain = Some(drain);
                    self.phase = Phase::Starting(Instant::now());
                }
                Err(error) => self.failure = Some(error),
            }
        }
        match self.phase {
            Phase::Idle => self.phase = Phase::Done,
            Phase::Starting(_) | Phase::Tracing(_) => {
                if let Some(drain) = &mut self.drain {
                    let stop = drain.command(target, abi::COMMAND_STOP);
                    self.phase = Phase::Stopping(Instant::now() + GIL_TIMEOUT);
                    if let Err(error) = stop {
                        self.failure = Some(error);
                        self.phase = Phase::Done;
                    }
                }
            }
            _ => {}
        }
        while !self.done() {
            self.step(target, out);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn advance(&mut self, target: &mut Target, out: &mut dyn TraceOut) -> Result<()> {
        let pid = target.pid();
        if matches!(self.phase, Phase::Idle) {
            if target.python_version().free_threaded {
                return Err(Failure::new(
                    Exit::UnsupportedVersion,
                    format!("process {pid} runs a free-threaded CPython ({}): pydeep trace's ring has one writer at a time, which only the GIL guarantees", target.python_version()),
                )
                .into());
            }
            self.last_step = OPENING;
            if let Some(control) = self.options.preloaded {
                // Started before the program's first line (`record
                // --trace`): the hooks are in, or going in.
                if !ring::is_tracer(target, control) {
                    anyhow::bail!("no tracer control block in process {pid} at {control:#x}");
                }
                // Its first events may be older than this pair: the
                // clock's conversion extends its first two pairs to them.
                self.drain = Some(Drain::for_window(control, &self.options, clock::pair()));
                self.phase = Phase::Starting(Instant::now() + GIL_TIMEOUT);
                return Ok(());
            }
            let start = Start::of(target, pid, &self.options)?;
            let loading = start.clone();
            let helper = std::thread::Builder::new()
                .name("pydeep-trace-load".into())
                .spawn(move || loading.load())?;
            self.phase = Phase::Opening(start, helper);
            return Ok(());
        }
        if let Phase::Opening(_, helper) = &self.phase {
            if !helper.is_finished() {
                return Ok(());
            }
            let Phase::Opening(start, helper) = std::mem::replace(&mut self.phase, Phase::Done)
            else {
                unreachable!("matched above")
            };
            let loaded = joined(helper)?;
            self.drain = Some(start.opened(target, &self.options, Ok(loaded))?);
            self.phase = Phase::Starting(Instant::now() + GIL_TIMEOUT);
            return Ok(());
        }
        // From here each step polls the ring: what takes time is the drain
        // (the first poll after the hooks went in reads what the program
        // did since, ~25 ms on a call-heavy one).
        self.last_step = DRAINING;
        let drain = self.drain.as_mut().expect("opened");
        match self.phase {
            Phase::Idle | Phase::Opening(..) | Phase::Done => {}
            Phase::Starting(until) => {
                drain.beat(target)?;
                let control = drain.poll(target, out)?;
                match control.state {
                    abi::STATE_TRACING => {
                        drain.summary.threads_hooked = control.threads_hooked;
                        eprintln!(
                            "pydeep: tracing process {pid} (hooks on {} threads) for {:?}",
                            control.threads_hooked,
                            self.options.duration.unwrap_or_default()
                        );
                        self.phase =
                            Phase::Tracing(self.options.duration.map(|d| Instant::now() + d));
                    }
                    abi::STATE_REFUSED => {
                        return Err(Failure::new(
                            Exit::TraceRefused,
                            format!("process {pid}: {}", control.message),
                        )
                        .into())
                    }
                    abi::STATE_FAILED | abi::STATE_RELEASED => {
                        anyhow::bail!("the tracer in process {pid} failed: {}", control.message)
                    }
                    _ if Instant::now() >= until => anyhow::bail!(
                        "the tracer in process {pid} did not install its hooks within {GIL_TIMEOUT:?}: a thread holds the GIL in a long C call"
                    ),
                    _ => {}
                }
            }
            Phase::Tracing(end) => {
                drain.beat(target)?;
                let control = drain.poll(target, out)?;
                if control.threads_hooked > drain.summary.threads_hooked {
                    // The watchdog's rescan hooked threads started since:
                    // said, so that a program (a test) can wait for it.
                    say_hooked(pid, drain.summary.threads_hooked, control.threads_hooked);
                    drain.summary.threads_hooked = control.threads_hooked;
                }
                if control.state != abi::STATE_TRACING || end.is_some_and(|e| Instant::now() >= e) {
                    drain.command(target, abi::COMMAND_STOP)?;
                    self.phase = Phase::Stopping(Instant::now() + GIL_TIMEOUT);
                }
            }
            Phase::Stopping(until) => {
                drain.beat(target)?;
                let control = drain.poll(target, out)?;
                if matches!(control.state, abi::STATE_STOPPED | abi::STATE_RELEASED) {
                    drain.poll(target, out)?;
                    drain.read_counts(target, &control)?;
                    drain.summary.threads_hooked = control.threads_hooked;
                    drain.flush(target, out, Some(&control))?;
                    drain.command(target, abi::COMMAND_RELEASE)?;
                    self.phase = Phase::Releasing(Instant::now() + RELEASE_WAIT);
                } else if Instant::now() >= until {
                    anyhow::bail!(
                        "the tracer in process {pid} did not remove its hooks within {GIL_TIMEOUT:?} (state {}): a thread holds the GIL in a long C call",
                        control.state
                    );
                }
            }
            Phase::Releasing(until) => {
                let released = match ring::read_control(target, drain.control) {
                    Ok(control) => control.state == abi::STATE_RELEASED,
                    Err(_) => true,
                };
                if released || Instant::now() >= until {
                    self.phase = Phase::Done;
                }
            }
        }
        Ok(())
    }
}

/// What the helper thread's load came to.
fn joined(helper: std::thread::JoinHandle<Result<Loaded, InjectError>>) -> Result<Loaded> {
    match helper.join() {
        Ok(loaded) => loaded.map_err(super::inject_failure),
        Err(_) => anyhow::bail!("the thread loading the tracer panicked"),
    }
}

/// Says that the tracer's rescan hooked threads started after the window
/// opened: `before` threads had the hook, `now` have.
pub fn say_hooked(pid: i32, before: u32, now: u32) {
    eprintln!(
        "pydeep: tracing process {pid}: hooked {} more thread{} (hooks on {now} threads)",
        now - before,
        if now - before == 1 { "" } else { "s" }
    );
}
