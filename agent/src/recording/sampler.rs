//! The one sampling loop: `record`, `attach` and every daemon target run
//! it, each through a thin [`Driver`].
//!
//! A [`Sampler`] owns the processes of one recording (the target, and with
//! `--subprocesses` its Python descendants), the drift-free [`Schedule`],
//! the snapshot and heap schedules, and the lifecycle of each process:
//! exit (with our child's exact status), exec (attached again if the new
//! program is a Python; our child watched until it exits otherwise),
//! SIGKILL, re-attach after failed reads. Everything it reads goes to the
//! recording's [`Sink`] over a channel; the tick thread never waits on
//! interning, compression, source files or the disk (a full queue drops
//! samples, counted, rather than delaying a tick).
//!
//! Drivers differ only in what they do between ticks: `record`/`attach`
//! (session.rs) stop on Ctrl-C or their duration and draw a status line;
//! a daemon worker (daemon/worker.rs) obeys its control commands
//! (snapshot, flush, reconfigure, stop), follows the CPU budget's rate and
//! publishes its status.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Result;
use pydeep_format::proto::{self, record::Kind, ProcessEventKind};

use crate::cli::session::SessionOptions;
use crate::process::lifecycle::{self, Ending, Fate, Identity};
use crate::process::procfs;
use crate::recording::exactness::{self, ReadCounts};
use crate::recording::gaps::{GapCounts, Stalls};
use crate::recording::recorder::Tick;
use crate::recording::sampled::Sampled;
use crate::recording::schedule::monotonic_ns;
use crate::recording::schedule::Schedule;
use crate::recording::sink::{Counters, Event, Input, Sink, SinkEnd};
use crate::recording::snapshot::{
    SnapshotOptions, SnapshotReport, SnapshotSchedule, SnapshotStats,
};
use crate::{AttachError, Target, ThreadSample};

/// A process that gave no readable stack for this long is given up.
pub const UNREADABLE_LIMIT: Duration = Duration::from_secs(10);

/// The longest the loop sleeps before asking its driver again.
const DRIVER_LATENCY: Duration = Duration::from_millis(50);

/// A sleep longer than this until the next tick sends the sink's outbox
/// first ([`crate::recording::sink::OUTBOX_AGE`]).
const OUTBOX_SLEEP: Duration = Duration::from_millis(1);

/// How often the sink is sent the counters (a rotated file's footer).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How long a process that is not our child is watched after an `exec`
/// for its new program to become a Python pydeep can attach to (an
/// interpreter just exec'd is not set up at once); then it is left.
const EXEC_GRACE: Duration = Duration::from_secs(2);

/// How long a recording stopped by SIGINT or SIGTERM waits for the program
/// `record` started, which got the signal too, to end.
const CHILD_GRACE: Duration = Duration::from_secs(2);

/// What a driver does between ticks.
pub trait Driver {
    /// Called before each tick: a reason to stop, if it is time. It may
    /// act on the sampler (snapshots, flushes, a new rate).
    fn between_ticks(&mut self, sampler: &mut Sampler) -> Option<String>;

    /// Called after each tick taken.
    fn after_tick(&mut self, _sampler: &Sampler) {}
}

/// One process of the recording: how it is sampled, and what only a
/// process we started has (its exit status), or one that exec'd away from
/// Python (watched).
struct Watched {
    sampled: Sampled,
    /// The child we started (`record`), whose exit status we can read.
    child: Option<Child>,
    /// Set while it runs a program that is not Python (after an exec):
    /// when attaching was last tried.
    execed_away: Option<Instant>,
    /// The exec's detail and when it was seen, while it is watched.
    execed: Option<(String, Instant)>,
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

/// How a sampler ended, for its summary.
#[derive(Debug)]
pub struct Finished {
    /// Why it stopped.
    pub end_reason: String,
    /// What the sink recorded.
    pub sink: SinkEnd,
    /// Ticks taken.
    pub ticks: u64,
    /// The counters of the footer.
    pub counters: Counters,
    /// The largest lateness of a tick.
    pub max_lag: Duration,
    /// How long it sampled.
    pub elapsed: Duration,
    /// The last read error, if any.
    pub last_error: Option<String>,
    /// How ticks were read.
    pub reads: ReadCounts,
    /// Why ticks could not be read paused, if one could not.
    pub cannot_pause: Option<String>,
    /// The gaps.
    pub gaps: GapCounts,
    /// Snapshots taken and their cost.
    pub snapshots: SnapshotStats,
    /// The child `record` started, once it has exited.
    pub child: Option<Child>,
    /// Set if it stopped because no stack could be read for
    /// [`UNREADABLE_LIMIT`]: why.
    pub gave_up: Option<String>,
}

/// The sampling loop of one recording; see the module documentation.
pub struct Sampler {
    options: SessionOptions,
    sink: Sink,
    processes: Vec<Watched>,
    root_pid: i32,
    /// Whose descendants are followed: the first process, or pydeep itself
    /// when it is the subreaper of the program `record` started.
    discovery_root: i32,
    known_pids: HashSet<i32>,
    not_python: HashMap<i32, Refused>,
    start: Instant,
    schedule: Schedule,
    /// The rate sampled at, and the missed ticks of schedules replaced
    /// by rate changes.
    rate: f64,
    missed_carry: u64,
    max_lag: Duration,
    lag_since_progress: Duration,
    snapshots: SnapshotSchedule,
    stalls: Stalls,
    gaps: GapCounts,
    reads: ReadCounts,
    threads: Vec<ThreadSample>,
    ticks: u64,
    errors: u64,
    /// The failed reads of each process since its last good one (how many,
    /// the last error), counted in `errors` once the process is read again
    /// or recording ends with it attached: reads that failed because the
    /// process was ending (its end came next) are not errors.
    unconfirmed_errors: HashMap<i32, (u64, String)>,
    dropped_samples: u64,
    last_error: Option<String>,
    last_good_read: Instant,
    last_child_scan: Instant,
    last_progress: Instant,
    finished_read_calls: u64,
    cannot_pause: Option<String>,
    exited_child: Option<Child>,
    root_ending: Option<String>,
    gave_up: Option<String>,
}

impl Sampler {
    /// Starts sampling `target` (`child`: the process `record` started)
    /// into `sink`, as `options` say; records that it attached (`detail`).
    pub fn new(
        target: Target,
        child: Option<Child>,
        sink: Sink,
        options: &SessionOptions,
        detail: &str,
    ) -> Sampler {
        let root_pid = target.pid();
        // `record --subprocesses` makes pydeep the subreaper of the
        // program's tree (commands.rs): a child whose parent exited right
        // after forking is re-parented to pydeep, not to init, and is
        // found among pydeep's own descendants.
        let discovery_root = if lifecycle::is_subreaper() {
            std::process::id() as i32
        } else {
            root_pid
        };
        sink.send(Input::Event(Event::of(
            &target,
            ProcessEventKind::ProcessAttached,
            0,
            detail.into(),
        )));
        let start = Instant::now();
        Sampler {
            processes: vec![Watched::new(target, child, options)],
            sink,
            root_pid,
            discovery_root,
            known_pids: HashSet::from([root_pid]),
            not_python: HashMap::new(),
            start,
            schedule: Schedule::new(start, options.rate_hz),
            rate: options.rate_hz,
            missed_carry: 0,
            max_lag: Duration::ZERO,
            lag_since_progress: Duration::ZERO,
            snapshots: snapshot_schedule(start, options),
            stalls: Stalls::default(),
            gaps: GapCounts::default(),
            reads: ReadCounts::default(),
            threads: Vec::new(),
            ticks: 0,
            errors: 0,
            unconfirmed_errors: HashMap::new(),
            dropped_samples: 0,
            last_error: None,
            last_good_read: start,
            last_child_scan: start,
            last_progress: start,
            finished_read_calls: 0,
            cannot_pause: None,
            exited_child: None,
            root_ending: None,
            gave_up: None,
            options: options.clone(),
        }
    }

    /// Steps (or, with `close`, ends) a trace window inside process `pid`
    /// (`None`: the process first attached); false if that process is no
    /// longer sampled (the window is then over).
    #[cfg(target_arch = "x86_64")]
    pub fn trace(
        &mut self,
        pid: Option<i32>,
        window: &mut crate::trace::window::TraceWindow,
        close: bool,
    ) -> bool {
        let pid = pid.unwrap_or(self.root_pid);
        let started = Instant::now();
        let Some(process) = self
            .processes
            .iter_mut()
            .find(|p| p.sampled.pid() == pid && p.execed_away.is_none())
        else {
            return false;
        };
        process.sampled.trace(&self.sink, window, close);
        self.stalls.note(window.last_step(), started.elapsed());
        true
    }

    /// The recording's sink (to send it what a driver is asked for).
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// When sampling started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Ticks taken.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Failed reads.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Ticks missed so far.
    pub fn missed_ticks(&self) -> u64 {
        self.missed_carry + self.schedule.missed_ticks
    }

    /// The lateness of the last tick.
    pub fn last_lag(&self) -> Duration {
        self.schedule.last_lag
    }

    /// Snapshots taken.
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots.stats.snapshots
    }

    /// The rate sampled at.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The Python version of the first process, as "3.11.7".
    pub fn python_version(&self) -> Option<String> {
        self.processes
            .first()
            .map(|p| p.sampled.version.to_string())
    }

    /// Samples at `rate` from now on, recording the change and `why`.
    pub fn set_rate(&mut self, rate: f64, why: &str) {
        let detail = format!("{why}: {:.1} Hz -> {rate:.1} Hz", self.rate);
        tracing::info!(pid = self.root_pid, "rate changed ({detail})");
        self.sink.send(Input::Record(Box::new(Kind::ProcessEvent(
            proto::ProcessEvent {
                time_ns: monotonic_ns(),
                pid: self.root_pid as u32,
                kind: ProcessEventKind::ProcessRateChanged as i32,
                code: (rate * 1000.0).round().min(i32::MAX as f64) as i32,
                detail,
                ..Default::default()
            },
        ))));
        self.missed_carry += self.schedule.missed_ticks;
        self.max_lag = self.max_lag.max(self.schedule.max_lag);
        self.rate = rate;
        self.schedule = Schedule::new(Instant::now(), rate);
    }

    /// Takes snapshots (and heap counts) every `every` (`heap_every`) from
    /// now on, as `options` say.
    pub fn set_snapshots(&mut self, options: &SessionOptions) {
        let stats = self.snapshots.stats.clone();
        self.snapshots = snapshot_schedule(Instant::now(), options);
        self.snapshots.stats = stats;
        self.options.snapshot_every = options.snapshot_every;
        self.options.heap_every = options.heap_every;
        self.options.snapshot_values = options.snapshot_values;
    }

    /// Takes a snapshot of the first process now (`pydeep ctl snapshot`).
    pub fn snapshot_now(&mut self, asked: &SnapshotOptions) -> Result<SnapshotReport> {
        let process = self
            .processes
            .first_mut()
            .ok_or_else(|| anyhow::anyhow!("no process is sampled"))?;
        let report = process.sampled.snapshot(&self.sink, asked)?;
        self.snapshots.taken(&report);
        Ok(report)
    }

    /// Samples until the driver says stop, every process has ended, no
    /// stack could be read for [`UNREADABLE_LIMIT`], or the sink can no
    /// longer write; returns why it stopped.
    pub fn run(&mut self, driver: &mut dyn Driver) -> Result<String> {
        loop {
            if let Some(reason) = driver.between_ticks(self) {
                return Ok(reason);
            }
            if self.sink.ended() {
                return Ok("the recording could not be written".into());
            }
            if self.processes.is_empty() && self.options.subprocesses {
                // A last look: the program may have ended right after
                // forking a child not found yet.
                self.follow_children();
            }
            if self.processes.is_empty() {
                let ending = self.root_ending.as_deref().unwrap_or("exited");
                return Ok(format!("target {ending}"));
            }
            if self.last_good_read.elapsed() > UNREADABLE_LIMIT {
                let latest = self
                    .unconfirmed_errors
                    .values()
                    .map(|(_, error)| error.as_str())
                    .next()
                    .or(self.last_error.as_deref());
                let why = format!(
                    "no stack could be read for 10 s; last error: {}",
                    latest.unwrap_or("none")
                );
                self.gave_up = Some(why.clone());
                return Ok(why);
            }
            let next_due = self.schedule.next_due();
            if next_due > Instant::now() + OUTBOX_SLEEP {
                // About to sleep: what waits for the sink goes now.
                self.sink.send_outbox();
            }
            if next_due > Instant::now() + DRIVER_LATENCY {
                std::thread::sleep(DRIVER_LATENCY);
                continue;
            }
            self.schedule.wait();
            let now = Instant::now();
            if !self.schedule.take(now) {
                continue;
            }
            self.tick(now)?;
            self.schedule.finished(Instant::now());
            driver.after_tick(self);
        }
    }

    /// One tick: read every process, send what was read, follow children,
    /// take the snapshots due.
    fn tick(&mut self, now: Instant) -> Result<()> {
        self.ticks += 1;
        self.snapshots.tick(self.schedule.missed_ticks);
        self.lag_since_progress = self.lag_since_progress.max(self.schedule.last_lag);
        let clock_ns = monotonic_ns();
        let tick = Tick {
            clock_ns,
            weight: self.schedule.weight(),
        };
        if let Some(gap) = self
            .stalls
            .gap(&self.schedule, now, clock_ns, &mut self.gaps)
        {
            self.sink.send(Input::Gap(gap));
        }
        let mut index = 0;
        while index < self.processes.len() {
            if self.sample(index, tick) {
                index += 1;
            }
        }
        if self.options.subprocesses && self.last_child_scan.elapsed() >= Duration::from_millis(100)
        {
            self.last_child_scan = Instant::now();
            let started = Instant::now();
            self.follow_children();
            self.stalls
                .note("looking for child processes", started.elapsed());
        }
        if let Some(asked) = self.snapshots.due(Instant::now()) {
            let started = Instant::now();
            for process in &mut self.processes {
                // A failed snapshot is counted, not fatal (the target may
                // be exiting).
                match process.sampled.snapshot(&self.sink, &asked) {
                    Ok(report) => self.snapshots.taken(&report),
                    Err(_) => self.snapshots.stats.failures += 1,
                }
            }
            self.stalls.note("taking a snapshot", started.elapsed());
            self.snapshots.ended(self.schedule.missed_ticks);
        }
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            let counters = self.counters();
            self.lag_since_progress = Duration::ZERO;
            self.sink.send(Input::Progress(counters));
        }
        Ok(())
    }

    /// Samples process `index` at `tick`; false if it was removed (ended,
    /// or exec'd into something else and was not our child).
    fn sample(&mut self, index: usize, tick: Tick) -> bool {
        let process = &mut self.processes[index];
        if process.execed_away.is_some() {
            // It exec'd into a program that is not Python: no stacks to
            // read, but our child's exit status is still to come, and it
            // may yet exec a Python again.
            return match process.watch(&self.sink) {
                Some(ending) => {
                    let pid = process.sampled.pid();
                    if pid != self.root_pid {
                        // A followed descendant that exec'd (e.g.
                        // subprocess's fork exec'ing a new interpreter not
                        // yet up) is followed again like a new process.
                        self.known_pids.remove(&pid);
                    }
                    self.remove(index, Some(ending));
                    false
                }
                None => true,
            };
        }
        // With --blocking a sample whose pause failed is a failed read:
        // taken unpaused, it would not be what was asked.
        let started = Instant::now();
        let due = self.schedule.last_due();
        let read = process
            .sampled
            .read(&mut self.threads, &mut self.reads, due);
        self.stalls.note("reading the target", started.elapsed());
        if self.cannot_pause.is_none() {
            self.cannot_pause = process.sampled.exactness.cannot_pause().map(str::to_owned);
        }
        // Whether the process ended or exec'd is asked after every failed
        // read, and every FATE_CHECK_EVERY after good ones: a new program
        // image read through the old attachment must not be recorded (its
        // samples are dropped here).
        if process.sampled.fate_due(read.is_err()) {
            match process.fate() {
                Fate::Running => {}
                Fate::Ended(ending) => {
                    let detail = ending.detail.clone();
                    self.unconfirmed_errors.remove(&process.sampled.pid());
                    process.record_ending(&self.sink, ending);
                    self.remove(index, Some(detail));
                    return false;
                }
                Fate::Execed(now) => {
                    // Ticks held of the old image: no sample of the new
                    // one stands for them.
                    self.gap_for_held(index);
                    let process = &mut self.processes[index];
                    // Attached again, or watched from the next tick on.
                    process.execed(&self.sink, now, self.options.redact);
                    return true;
                }
            }
        }
        match read {
            Ok(exactness::Tick::Held) => process.sampled.hold(tick.weight),
            Ok(exactness::Tick::Read { taken_ns }) => {
                let (tick, held_gap) = process.sampled.carry(tick, self.schedule.interval());
                if let Some(ticks) = held_gap {
                    // The held ticks end where this tick began.
                    let pid = process.sampled.pid();
                    let interval = self.schedule.interval();
                    let gap = self.gaps.held(pid, ticks, interval, tick.clock_ns);
                    self.sink.send(Input::Gap(gap));
                }
                // The samples carry when their stacks were taken (after the
                // pause, or as the read began), not when the tick began:
                // a pause or an earlier process read first can be
                // milliseconds on a loaded machine.
                let tick = Tick {
                    clock_ns: taken_ns,
                    ..tick
                };
                self.last_good_read = Instant::now();
                if let Some((count, error)) = self.unconfirmed_errors.remove(&process.sampled.pid())
                {
                    self.errors += count;
                    self.last_error = Some(error);
                }
                let started = Instant::now();
                self.dropped_samples += process.sampled.record(&self.sink, tick, &mut self.threads);
                self.stalls
                    .note("reading code objects and thread names", started.elapsed());
            }
            Err(error) => {
                let failed = self
                    .unconfirmed_errors
                    .entry(process.sampled.pid())
                    .or_insert((0, String::new()));
                failed.0 += 1;
                failed.1 = error.to_string();
                let started = Instant::now();
                process.sampled.failed(&self.sink);
                self.stalls.note("attaching again", started.elapsed());
            }
        }
        true
    }

    /// Stops sampling process `index`, which ended as `ending` says.
    fn remove(&mut self, index: usize, ending: Option<String>) {
        self.gap_for_held(index);
        let gone = self.processes.remove(index);
        self.finished_read_calls += gone.sampled.target.read_calls();
        if gone.sampled.pid() == self.root_pid {
            self.root_ending = ending;
            self.exited_child = gone.child;
        }
    }

    /// Records the ticks process `index` held since its last sample as a
    /// gap: no sample of it will stand for them (it ended, exec'd, or
    /// recording stops).
    fn gap_for_held(&mut self, index: usize) {
        let process = &mut self.processes[index];
        let ticks = process.sampled.take_owed();
        if ticks > 0 {
            let pid = process.sampled.pid();
            let gap = self
                .gaps
                .held(pid, ticks, self.schedule.interval(), monotonic_ns());
            self.sink.send(Input::Gap(gap));
        }
    }

    /// Attaches to new Python descendants of the first process (of pydeep
    /// itself when it is the subreaper of the program it started).
    fn follow_children(&mut self) {
        for (pid, parent) in procfs::descendants(self.discovery_root) {
            if self.known_pids.contains(&pid) {
                continue;
            }
            // A fork that has not exec'd yet, or a non-Python program, is
            // tried again when its executable or command line changes (an
            // exec of the same interpreter changes only the latter), or a
            // second later.
            let seen = Refused {
                exe: procfs::executable(pid).unwrap_or_default(),
                argv: procfs::cmdline(pid),
                at: Instant::now(),
            };
            if self
                .not_python
                .get(&pid)
                .is_some_and(|refused| refused.still_applies(&seen))
            {
                continue;
            }
            match Target::attach(pid) {
                Ok(target) => {
                    self.known_pids.insert(pid);
                    self.not_python.remove(&pid);
                    let mut event =
                        Event::of(&target, ProcessEventKind::ProcessSpawned, 0, String::new());
                    event.parent_pid = parent;
                    self.sink.send(Input::Event(event));
                    self.processes
                        .push(Watched::new(target, None, &self.options));
                }
                Err(AttachError::NoSuchProcess { .. }) | Err(AttachError::TargetExited { .. }) => {
                    self.known_pids.insert(pid);
                }
                Err(_) => {
                    self.not_python.insert(pid, seen);
                }
            }
        }
    }

    /// The counters so far, the lag since they were last sent.
    fn counters(&self) -> Counters {
        let read_calls = self.finished_read_calls
            + self
                .processes
                .iter()
                .map(|p| p.sampled.target.read_calls())
                .sum::<u64>();
        Counters {
            missed_ticks: self.missed_ticks(),
            errors: self.errors,
            max_lag: self.lag_since_progress,
            read_calls,
            paused_ticks: self.reads.pauses.count(),
            held_ticks: self.reads.held,
            gap_count: self.gaps.count,
            gap_ticks: self.gaps.ticks,
            dropped_samples: self.dropped_samples,
        }
    }

    /// Records how every process still sampled ended (or that it was left
    /// running), writes the footer and waits for the sink. After SIGINT or
    /// SIGTERM, the program `record` started (which got the signal too) is
    /// given a moment to end, so that its ending is recorded rather than
    /// "still running".
    pub fn finish(mut self, end_reason: String) -> Result<Finished> {
        if matches!(
            crate::cli::signals::received(),
            Some(libc::SIGINT | libc::SIGTERM)
        ) {
            let deadline = Instant::now() + CHILD_GRACE;
            while Instant::now() < deadline
                && self
                    .processes
                    .iter_mut()
                    .any(|p| p.child.is_some() && matches!(p.fate(), Fate::Running))
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for index in 0..self.processes.len() {
            self.gap_for_held(index);
        }
        // A failed read of a process still attached at the end is an
        // error; one of a process that ended meanwhile was its ending.
        for process in &mut self.processes {
            let unconfirmed = self.unconfirmed_errors.remove(&process.sampled.pid());
            match process.fate() {
                Fate::Ended(ending) => process.record_ending(&self.sink, ending),
                _ => {
                    if let Some((count, error)) = unconfirmed {
                        self.errors += count;
                        self.last_error = Some(error);
                    }
                    self.sink.send(Input::Event(Event::of(
                        &process.sampled.target,
                        ProcessEventKind::ProcessDetached,
                        0,
                        format!("still running when recording stopped ({end_reason})"),
                    )))
                }
            }
        }
        let counters = self.counters();
        let max_lag = self.max_lag.max(self.schedule.max_lag);
        let elapsed = self.start.elapsed();
        let Sampler {
            sink,
            processes,
            exited_child,
            ..
        } = self;
        let child = exited_child.or_else(|| processes.into_iter().find_map(|p| p.child));
        let end = sink.finish(counters.clone(), elapsed, end_reason.clone())?;
        Ok(Finished {
            end_reason,
            sink: end,
            ticks: self.ticks,
            counters,
            max_lag,
            elapsed,
            last_error: self.last_error,
            reads: self.reads,
            cannot_pause: self.cannot_pause,
            gaps: self.gaps,
            snapshots: self.snapshots.stats,
            child,
            gave_up: self.gave_up,
        })
    }
}

/// The snapshot schedule `options` ask for, from `start`.
fn snapshot_schedule(start: Instant, options: &SessionOptions) -> SnapshotSchedule {
    SnapshotSchedule::new(
        start,
        options.snapshot_every,
        options.heap_every,
        SnapshotOptions {
            values: options.snapshot_values,
            tasks: options.snapshot_tasks,
            globals: options.snapshot_globals,
            max_depth: options.max_depth as usize,
            max_objects: options.snapshot_objects,
            rendering: crate::reading::objects::Rendering {
                redact: options.redact,
                ..SnapshotOptions::default().rendering
            },
            ..SnapshotOptions::default()
        },
    )
}

impl Watched {
    fn new(target: Target, child: Option<Child>, options: &SessionOptions) -> Self {
        Watched {
            sampled: Sampled::new(
                target,
                options.read_mode,
                options.max_depth,
                options.include_idle,
            ),
            child,
            execed_away: None,
            execed: None,
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

    /// Sends the process event of `ending`.
    fn record_ending(&self, sink: &Sink, ending: Ending) {
        sink.send(Input::Event(Event::of(
            &self.sampled.target,
            ending.kind,
            ending.code,
            ending.detail,
        )));
    }

    /// The process exec'd into `now`: records it, then attaches to the new
    /// program if it is a Python. Otherwise it is watched: our own child
    /// until it exits (its status is still to come), any other process for
    /// [`EXEC_GRACE`] (a new interpreter takes a moment to set up), then
    /// left.
    fn execed(&mut self, sink: &Sink, now: Identity, redact: Option<&'static regex::Regex>) {
        let program = now
            .exe
            .as_ref()
            .map_or_else(|| "?".into(), |p| p.display().to_string());
        let argv = crate::reading::redact::command_line(redact, &now.argv);
        let detail = format!("exec'd into {program} ({})", argv.join(" "));
        sink.send(Input::Event(Event {
            time_ns: monotonic_ns(),
            pid: self.sampled.pid(),
            kind: ProcessEventKind::ProcessExeced,
            code: 0,
            parent_pid: 0,
            version: None,
            argv,
            detail: detail.clone(),
        }));
        self.sampled.identity = now;
        if !self.try_attach_again(sink) {
            self.execed_away = Some(Instant::now());
            self.execed = Some((detail, Instant::now()));
        }
    }

    /// Leaves a process that exec'd into something that is not a Python:
    /// records it and says why.
    fn detach_execed(&mut self, sink: &Sink) -> String {
        let detail = self
            .execed
            .take()
            .map_or_else(|| "exec'd".to_string(), |(detail, _)| detail);
        sink.send(Input::Event(Event::of(
            &self.sampled.target,
            ProcessEventKind::ProcessDetached,
            0,
            format!("{detail}, not a Python pydeep can read: detached"),
        )));
        format!("{detail}, not a Python")
    }

    /// Attaches to the process's new program; true (and an ATTACHED event)
    /// if it is a Python pydeep reads.
    fn try_attach_again(&mut self, sink: &Sink) -> bool {
        let Ok(fresh) = Target::attach(self.sampled.target.pid()) else {
            return false;
        };
        // Nothing known of the old image may name a frame of the new one.
        self.sampled.replace(fresh, sink);
        // The image as it is now that its interpreter is up: read at the
        // exec itself, its command line or auxiliary vector may not have
        // been final yet, and would be taken for a second exec.
        self.sampled.identity = Identity::of(self.sampled.pid());
        self.execed_away = None;
        self.execed = None;
        sink.send(Input::Event(Event::of(
            &self.sampled.target,
            ProcessEventKind::ProcessAttached,
            0,
            "after exec".into(),
        )));
        true
    }

    /// One tick of watching a process that exec'd away from Python: has it
    /// ended (how, then), or become a Python again (tried every 100 ms
    /// within [`EXEC_GRACE`] of the exec, then once a second)? A process
    /// not our child is left after the grace.
    fn watch(&mut self, sink: &Sink) -> Option<String> {
        let since_exec = self.execed.as_ref().map(|(_, at)| at.elapsed());
        if self.child.is_none() && since_exec.is_none_or(|d| d >= EXEC_GRACE) {
            if let Fate::Ended(ending) = self.fate() {
                let detail = ending.detail.clone();
                self.record_ending(sink, ending);
                return Some(detail);
            }
            if self.try_attach_again(sink) {
                return None;
            }
            return Some(self.detach_execed(sink));
        }
        let retry = if since_exec.is_some_and(|d| d < EXEC_GRACE) {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        match self.fate() {
            Fate::Ended(ending) => {
                let detail = ending.detail.clone();
                self.record_ending(sink, ending);
                return Some(detail);
            }
            Fate::Execed(now) => {
                self.sampled.identity = now;
                self.execed_away = Some(Instant::now());
                self.try_attach_again(sink);
            }
            Fate::Running => {
                if self.execed_away.is_some_and(|at| at.elapsed() >= retry) {
                    self.execed_away = Some(Instant::now());
                    self.try_attach_again(sink);
                }
            }
        }
        None
    }
}
