//! One attached process as every sampling loop keeps it: the target, its
//! thread names, its failure streak, the program image it was attached as,
//! and how its ticks are read. `record`/`attach` (session.rs) and the
//! daemon's workers share it, so they refresh names, ask for exits and
//! execs, re-attach and forget a gone image the same way.
//!
//! It is the only thing that reads the process: what it sends to the
//! recording's sink ([`crate::recording::sink`]) names code objects it resolved
//! itself ([`Resolver`]), so the sink never reads the target.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::process::lifecycle::Identity;
use crate::recording::codes::Resolver;
use crate::recording::exactness::{self, Exactness, ReadCounts, ReadMode};
use crate::recording::recorder::Tick;
use crate::recording::sink::{Input, Sink, SnapshotInput};
use crate::recording::snapshot::{SnapshotOptions, SnapshotReport};
use crate::recording::ticks::ProcessRef;
use crate::{PythonVersion, ReadError, Target, ThreadSample, WalkOptions};

/// After this many failed samples in a row of a living process, attach to
/// it afresh. A process caught early in its start-up (a child just spawned
/// and followed with `--subprocesses`, or the program `record` started) can
/// be attached before its interpreter is fully set up; what was found then
/// (interpreter and thread-list addresses) may never become readable.
pub const REATTACH_AFTER_ERRORS: u32 = 20;

/// How often a target whose reads succeed is asked whether it exited or
/// exec'd (a failed read asks at once). Each asking reads three small
/// `/proc` files; a program image replaced by `exec` is read through the
/// old attachment for at most this long, and those samples are dropped.
pub const FATE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// An attached process and what sampling it needs besides the target.
pub struct Sampled {
    /// The attachment.
    pub target: Target,
    /// Thread names by `thread_id`, as `threading` knows them.
    pub names: Arc<HashMap<u64, String>>,
    /// The interpreter's version.
    pub version: Arc<PythonVersion>,
    /// Which code objects the sink has been told of.
    resolver: Resolver,
    names_refreshed: Option<Instant>,
    /// For each named thread present at the reading of the names, its
    /// native id then: `threading.get_ident()` values are reused once a
    /// thread is joined, so a thread with a known ident but another native
    /// id is a new thread whose name is not known yet.
    named_natives: Arc<HashMap<u64, u64>>,
    /// The threads present at the last reading of the names: one of them
    /// without a name (a thread `threading` does not know, or a program
    /// that never imported it) is not a reason to read them again early.
    names_asked_for: HashSet<(u64, u64)>,
    /// Readings in a row that left some thread without a name.
    unnamed_retries: u32,
    /// Failed samples in a row; see [`REATTACH_AFTER_ERRORS`].
    pub consecutive_errors: u32,
    /// The program image attached; a change means an exec.
    pub identity: Identity,
    /// Whether its ticks are read paused now.
    pub exactness: Exactness,
    read_mode: ReadMode,
    /// Idle threads are recorded (`--idle`); otherwise they are not sent.
    include_idle: bool,
    fate_checked: Instant,
    /// Sampler ticks held since its last sample ([`Sampled::hold`]): its
    /// next sample stands for them, or a gap does ([`Sampled::carry`]).
    owed: u64,
}

impl Sampled {
    /// Steps (or, with `close`, ends) a trace window inside this process:
    /// its events go to `sink` with the code objects they name resolved by
    /// this process's resolver, as its samples' are.
    #[cfg(target_arch = "x86_64")]
    pub fn trace(
        &mut self,
        sink: &Sink,
        window: &mut crate::trace::window::TraceWindow,
        close: bool,
    ) {
        let mut out = crate::trace::window::ToSink {
            sink,
            resolver: &mut self.resolver,
            version: self.version.clone(),
        };
        if close {
            window.close(&mut self.target, &mut out);
        } else {
            window.step(&mut self.target, &mut out);
        }
        // While the tracer is being loaded its helper thread has the
        // target's threads seized: ticks are read without pausing.
        self.exactness.seized_elsewhere(window.opening());
    }
    /// Samples `target` reading ticks as `read_mode` says, stacks at most
    /// `max_depth` deep, idle threads recorded if `include_idle`.
    pub fn new(
        mut target: Target,
        read_mode: ReadMode,
        max_depth: u32,
        include_idle: bool,
    ) -> Sampled {
        target.set_walk_options(WalkOptions {
            max_depth: max_depth as usize,
            check_torn: true,
            ..WalkOptions::default()
        });
        Sampled {
            identity: Identity::of(target.pid()),
            version: Arc::new(target.python_version()),
            target,
            names: Arc::default(),
            resolver: Resolver::default(),
            names_refreshed: None,
            named_natives: Arc::default(),
            names_asked_for: HashSet::new(),
            unnamed_retries: 0,
            consecutive_errors: 0,
            exactness: Exactness::new(read_mode),
            read_mode,
            include_idle,
            fate_checked: Instant::now(),
            owed: 0,
        }
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.target.pid()
    }

    /// Reads one tick of every thread into `threads` ([`Exactness::read`];
    /// a read tick says when its stacks were taken), or holds it (nothing read, `threads` empty) to keep pauses within
    /// their budget ([`crate::recording::pause_budget`]): then [`Sampled::hold`] it.
    /// `due`: the tick's due time on the schedule's grid.
    pub fn read(
        &mut self,
        threads: &mut Vec<ThreadSample>,
        counts: &mut ReadCounts,
        due: Instant,
    ) -> Result<exactness::Tick, ReadError> {
        self.exactness.read(&mut self.target, threads, counts, due)
    }

    /// A tick of weight `weight` was held: the process's next sample, or
    /// a gap, stands for it.
    pub fn hold(&mut self, weight: u32) {
        self.owed = self.owed.saturating_add(u64::from(weight));
    }

    /// The tick a good read at `tick` is recorded as, after ticks were
    /// held: it stands for them too (its weight), unless the ticks it did
    /// not observe (held, and missed before it) are a gap by the
    /// schedule's own rule ([`crate::recording::schedule::is_gap`]). Then it stands
    /// for itself, and the second value is the gap's ticks, which no
    /// sample stands for. So a sample never stands for more ticks than
    /// the schedule lets one stand for, held or not.
    pub fn carry(&mut self, tick: Tick, interval: Duration) -> (Tick, Option<u64>) {
        let (weight, gap) = carried(std::mem::take(&mut self.owed), tick.weight, interval);
        (Tick { weight, ..tick }, gap)
    }

    /// The ticks held since the last sample, which no sample will stand
    /// for (the process ended, exec'd, or recording stops): they are a gap.
    pub fn take_owed(&mut self) -> u64 {
        std::mem::take(&mut self.owed)
    }

    /// True if it is time to ask whether the process exited or exec'd:
    /// after a failed read, or [`FATE_CHECK_EVERY`] after the last asking.
    /// Not while a trace window's tracer is being loaded: its helper
    /// thread has the process's threads seized, and a `waitpid` on our own
    /// child from this thread would take the helper's ptrace stops for the
    /// child's end (the kernel reports a tracee's stops to its real parent
    /// too when both are threads of one process). Asked once it is done.
    pub fn fate_due(&mut self, read_failed: bool) -> bool {
        if self.exactness.is_seized_elsewhere() {
            return false;
        }
        let due = read_failed || self.fate_checked.elapsed() >= FATE_CHECK_EVERY;
        if due {
            self.fate_checked = Instant::now();
        }
        due
    }

    /// Sends the stacks of a good read taken at `tick` to `sink`, with
    /// their threads' names (refreshed first if due) and the code objects
    /// the sink has not been told of; each stack as far as it changed
    /// since the thread's last one sent ([`Resolver::resolve`]). Idle
    /// threads are sent only if they are recorded (`--idle`). The frames
    /// `threads` holds after are those of stacks sent before, to be
    /// overwritten by the next read. Returns how many samples the sink's
    /// full queue refused.
    pub fn record(&mut self, sink: &Sink, tick: Tick, threads: &mut [ThreadSample]) -> u64 {
        self.consecutive_errors = 0;
        self.refresh_names(threads);
        let include_idle = self.include_idle;
        let process = ProcessRef {
            pid: self.target.pid(),
            version: &self.version,
            names: &self.names,
            natives: &self.named_natives,
        };
        let (resolver, target) = (&mut self.resolver, &mut self.target);
        let sent = sink.samples(process, tick, |out| {
            let recorded = threads.iter_mut().filter(|t| include_idle || t.active);
            resolver.resolve(target, recorded, out);
            out.set_code_epoch(target.code_epoch());
        });
        match sent {
            Ok(()) => 0,
            Err(refused) => {
                self.resolver.not_delivered(&refused.mappings);
                refused.samples
            }
        }
    }

    /// Pauses the target, reads what `asked` says, and sends the snapshot
    /// to `sink` (interned there); what it held, for reports.
    pub fn snapshot(
        &mut self,
        sink: &Sink,
        asked: &SnapshotOptions,
    ) -> Result<SnapshotReport, ReadError> {
        let taken = crate::recording::snapshot::take(&mut self.target, asked)?;
        // The frames' code objects as of the pause: the target may end
        // before they are resolved below.
        self.target.revalidate_codes(&taken.code_fingerprints);
        if asked.scopes {
            self.read_names();
        }
        let report = SnapshotReport::of(&taken);
        let mut mappings = Vec::new();
        self.resolver
            .resolve_addresses(&mut self.target, taken.code_addresses(), &mut mappings);
        sink.send(Input::Snapshot(Box::new(SnapshotInput {
            pid: self.target.pid(),
            version: self.version.clone(),
            code_epoch: self.target.code_epoch(),
            mappings,
            taken,
            names: self.names.clone(),
        })));
        Ok(report)
    }

    /// Counts a failed read; after [`REATTACH_AFTER_ERRORS`] in a row,
    /// attaches afresh (keeping the identity: an exec is still told by
    /// it) and makes `sink` forget what it derived from the old
    /// attachment. True if it re-attached.
    pub fn failed(&mut self, sink: &Sink) -> bool {
        self.consecutive_errors += 1;
        if self.consecutive_errors < REATTACH_AFTER_ERRORS {
            return false;
        }
        self.consecutive_errors = 0;
        let Ok(fresh) = Target::attach(self.pid()) else {
            return false;
        };
        self.replace(fresh, sink);
        true
    }

    /// Continues with `fresh`, a new attachment to the same process (after
    /// an exec, or failed reads): what `sink` derived from the old one is
    /// forgotten, names are read again, the read mode starts over.
    pub fn replace(&mut self, fresh: Target, sink: &Sink) {
        let depth = self.target.walk_options().max_depth as u32;
        let identity = self.identity.clone();
        *self = Sampled::new(fresh, self.read_mode, depth, self.include_idle);
        self.identity = identity;
        sink.send(Input::Forget { pid: self.pid() });
    }

    /// Reads the thread names now (a snapshot names its threads).
    pub fn read_names(&mut self) {
        if let Ok(read) = self.target.named_threads() {
            self.names = Arc::new(read.names);
            self.named_natives = Arc::new(read.natives);
            self.names_refreshed = Some(Instant::now());
        }
    }

    /// Re-reads thread names once a second, or soon when a thread has no
    /// name: 50 ms after the last reading for a thread that was not there
    /// then, and for one still nameless after it, at doubling intervals up
    /// to the second. (Reading them walks `sys.modules`, about 16 reads: a
    /// thread `threading` never names, or a program that never imported
    /// it, must not cost them every 50 ms; a thread registered a moment
    /// after it started is still named within a few ticks.)
    fn refresh_names(&mut self, threads: &[ThreadSample]) {
        let age = self.names_refreshed.map(|at| at.elapsed());
        let new_unnamed = unnamed(threads, &self.names, &self.named_natives)
            .any(|t| !self.names_asked_for.contains(&(t.thread_id, t.native_id)));
        if new_unnamed {
            self.unnamed_retries = 0;
        }
        let wait = if unnamed(threads, &self.names, &self.named_natives)
            .next()
            .is_some()
        {
            (Duration::from_millis(50) * (1 << self.unnamed_retries.saturating_sub(1).min(5)))
                .min(Duration::from_secs(1))
        } else {
            Duration::from_secs(1)
        };
        if age.is_none_or(|a| a >= wait) {
            // Names and the OS threads they belong to change together, or
            // not at all: a failed read keeps both (new natives beside
            // stale names once named a reused ident's new thread after the
            // old one). Where a `Thread` says its native id, that is the
            // owner; else the sampled thread with that ident now.
            if let Ok(read) = self.target.named_threads() {
                let natives: HashMap<u64, u64> = threads
                    .iter()
                    .filter(|t| read.names.contains_key(&t.thread_id))
                    .map(|t| (t.thread_id, t.native_id))
                    .chain(read.natives)
                    .collect();
                if *self.names != read.names {
                    self.names = Arc::new(read.names);
                }
                if *self.named_natives != natives {
                    self.named_natives = Arc::new(natives);
                }
            }
            self.names_refreshed = Some(Instant::now());
            let still_unnamed = unnamed(threads, &self.names, &self.named_natives)
                .next()
                .is_some();
            self.unnamed_retries = if still_unnamed {
                self.unnamed_retries + 1
            } else {
                0
            };
            self.names_asked_for = threads.iter().map(|t| (t.thread_id, t.native_id)).collect();
        }
    }
}

/// The threads of `threads` that `names` does not name, or names after
/// another OS thread that had the same ident (`named_natives`).
fn unnamed<'a>(
    threads: &'a [ThreadSample],
    names: &'a HashMap<u64, String>,
    named_natives: &'a HashMap<u64, u64>,
) -> impl Iterator<Item = &'a ThreadSample> + 'a {
    threads.iter().filter(move |t| {
        !names.contains_key(&t.thread_id)
            || named_natives
                .get(&t.thread_id)
                .is_some_and(|native| *native != t.native_id)
    })
}

/// The name of thread `thread_id` (OS thread `native_id`) in `names`,
/// unless the name was read for another OS thread with the same ident
/// (`named_natives`).
pub fn name_of<'a>(
    names: &'a HashMap<u64, String>,
    named_natives: &HashMap<u64, u64>,
    thread_id: u64,
    native_id: u64,
) -> Option<&'a str> {
    let reused = named_natives
        .get(&thread_id)
        .is_some_and(|native| *native != native_id);
    if reused {
        return None;
    }
    names.get(&thread_id).map(String::as_str)
}

/// The weight of a sample of weight `weight` after `owed` ticks held,
/// `interval` apart, and the gap's ticks if the ticks it did not observe
/// are one ([`Sampled::carry`]).
fn carried(owed: u64, weight: u32, interval: Duration) -> (u32, Option<u64>) {
    if owed == 0 {
        return (weight, None);
    }
    let unobserved = owed + u64::from(weight) - 1;
    if crate::recording::schedule::is_gap(unobserved, interval) {
        return (1, Some(unobserved));
    }
    (u32::try_from(unobserved + 1).unwrap_or(u32::MAX), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_after_held_ticks_stands_for_them_unless_they_and_its_missed_ticks_are_a_gap() {
        let us = Duration::from_micros(1);
        // Nothing held: the schedule's weight.
        assert_eq!(carried(0, 7, us), (7, None));
        // 1 MHz: 10 ms held and 5 ms missed are under 20 ms: one sample.
        assert_eq!(carried(10_000, 5_001, us), (15_001, None));
        // 10 ms held after 15 ms missed (the case of record_weights on
        // 3.9, a sample standing for 20,119 ticks): a gap of all of them,
        // the sample stands for itself.
        assert_eq!(carried(10_119, 10_000, us), (1, Some(20_118)));
        // 100 Hz: three ticks are no gap whatever their time.
        let ms10 = Duration::from_millis(10);
        assert_eq!(carried(2, 2, ms10), (4, None));
        assert_eq!(carried(2, 3, ms10), (1, Some(4)));
    }

    #[test]
    fn no_sample_stands_for_more_ticks_than_the_schedule_allows() {
        for interval in [1u64, 10, 1_000, 10_000].map(Duration::from_micros) {
            let bound = crate::recording::schedule::GAP_TICKS.max(
                (crate::recording::schedule::GAP_TIME.as_nanos() / interval.as_nanos()) as u64,
            );
            for owed in [1u64, 3, 100, 9_999, 10_000, 19_999, 30_000] {
                for weight in [1u32, 2, 4, 19_999] {
                    let (w, gap) = carried(owed, weight, interval);
                    assert!(u64::from(w) <= bound, "{interval:?} {owed} {weight}: {w}");
                    // Every tick accounted for: by the sample or the gap.
                    assert_eq!(
                        u64::from(w) + gap.unwrap_or(0),
                        owed + u64::from(weight),
                        "{interval:?} {owed} {weight}"
                    );
                }
            }
        }
    }
}
