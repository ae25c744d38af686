//! One attached process as every sampling loop keeps it: the target, its
//! thread names, its failure streak, the program image it was attached as,
//! and how its ticks are read. `record`/`attach` (session.rs) and the
//! daemon's workers share it, so they refresh names, ask for exits and
//! execs, re-attach and forget a gone image the same way.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use crate::exactness::{self, Exactness, ReadCounts, ReadMode};
use crate::lifecycle::Identity;
use crate::recorder::{Recorder, Tick};
use crate::{ReadError, Target, ThreadSample, WalkOptions};

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
    pub names: HashMap<u64, String>,
    names_refreshed: Option<Instant>,
    /// For each named thread present at the reading of the names, its
    /// native id then: `threading.get_ident()` values are reused once a
    /// thread is joined, so a thread with a known ident but another native
    /// id is a new thread whose name is not known yet.
    named_natives: HashMap<u64, u64>,
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
    fate_checked: Instant,
    /// The last read held its tick (crate::pause_budget): the next
    /// [`Sampled::record`] records nothing and adds its weight to `owed`.
    held: bool,
    /// Weight of the ticks held since the last recorded sample: the next
    /// one stands for them.
    owed: u32,
}

impl Sampled {
    /// Samples `target` reading ticks as `read_mode` says, stacks at most
    /// `max_depth` deep.
    pub fn new(mut target: Target, read_mode: ReadMode, max_depth: u32) -> Sampled {
        target.set_walk_options(WalkOptions {
            max_depth: max_depth as usize,
            check_torn: true,
            ..WalkOptions::default()
        });
        Sampled {
            identity: Identity::of(target.pid()),
            target,
            names: HashMap::new(),
            names_refreshed: None,
            named_natives: HashMap::new(),
            names_asked_for: HashSet::new(),
            unnamed_retries: 0,
            consecutive_errors: 0,
            exactness: Exactness::new(read_mode),
            read_mode,
            fate_checked: Instant::now(),
            held: false,
            owed: 0,
        }
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.target.pid()
    }

    /// Reads one tick of every thread into `threads` ([`Exactness::read`]).
    /// A tick held to keep pauses within their budget reads nothing and
    /// leaves `threads` empty; its [`Sampled::record`] records nothing,
    /// and the target's next sample stands for it.
    pub fn read(
        &mut self,
        threads: &mut Vec<ThreadSample>,
        counts: &mut ReadCounts,
    ) -> Result<(), ReadError> {
        let tick = self.exactness.read(&mut self.target, threads, counts)?;
        self.held = tick == exactness::Tick::Held;
        Ok(())
    }

    /// True if it is time to ask whether the process exited or exec'd:
    /// after a failed read, or [`FATE_CHECK_EVERY`] after the last asking.
    pub fn fate_due(&mut self, read_failed: bool) -> bool {
        let due = read_failed || self.fate_checked.elapsed() >= FATE_CHECK_EVERY;
        if due {
            self.fate_checked = Instant::now();
        }
        due
    }

    /// Records the stacks of a good read taken at `tick`, with their
    /// threads' names (refreshed first if due).
    pub fn record<W: Write>(
        &mut self,
        recorder: &mut Recorder<W>,
        tick: Tick,
        threads: &[ThreadSample],
    ) -> Result<(), pydeep_format::FormatError> {
        self.consecutive_errors = 0;
        if std::mem::take(&mut self.held) {
            self.owed = self.owed.saturating_add(tick.weight);
            return Ok(());
        }
        let tick = Tick {
            weight: tick.weight.saturating_add(std::mem::take(&mut self.owed)),
            ..tick
        };
        self.refresh_names(threads);
        let pid = self.target.pid();
        let version = self.target.python_version();
        for thread in threads {
            let name = name_of(&self.names, &self.named_natives, thread);
            recorder.sample(&mut self.target, pid, &version, tick, thread, name)?;
        }
        Ok(())
    }

    /// Counts a failed read; after [`REATTACH_AFTER_ERRORS`] in a row,
    /// attaches afresh (keeping the identity: an exec is still told by
    /// it) and makes `recorder` forget what it derived from the old
    /// attachment. True if it re-attached.
    pub fn failed<W: Write>(&mut self, recorder: &mut Recorder<W>) -> bool {
        self.consecutive_errors += 1;
        if self.consecutive_errors < REATTACH_AFTER_ERRORS {
            return false;
        }
        self.consecutive_errors = 0;
        let Ok(fresh) = Target::attach(self.pid()) else {
            return false;
        };
        self.replace(fresh, recorder);
        true
    }

    /// Continues with `fresh`, a new attachment to the same process (after
    /// an exec, or failed reads): what `recorder` derived from the old
    /// one is forgotten, names are read again, the read mode starts over.
    pub fn replace<W: Write>(&mut self, fresh: Target, recorder: &mut Recorder<W>) {
        let depth = self.target.walk_options().max_depth as u32;
        let identity = self.identity.clone();
        *self = Sampled::new(fresh, self.read_mode, depth);
        self.identity = identity;
        recorder.forget_process(self.pid());
    }

    /// Reads the thread names now (a snapshot names its threads).
    pub fn read_names(&mut self) {
        if let Ok(names) = self.target.thread_names() {
            self.names = names;
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
            if let Ok(names) = self.target.thread_names() {
                self.names = names;
            }
            self.named_natives = threads
                .iter()
                .filter(|t| self.names.contains_key(&t.thread_id))
                .map(|t| (t.thread_id, t.native_id))
                .collect();
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

/// The name of `thread` in `names`, unless the name was read for another OS
/// thread with the same ident (`named_natives`).
fn name_of<'a>(
    names: &'a HashMap<u64, String>,
    named_natives: &HashMap<u64, u64>,
    thread: &ThreadSample,
) -> Option<&'a str> {
    let reused = named_natives
        .get(&thread.thread_id)
        .is_some_and(|native| *native != thread.native_id);
    if reused {
        return None;
    }
    names.get(&thread.thread_id).map(String::as_str)
}
