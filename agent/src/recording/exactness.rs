//! When a tick may be read without stopping the target, and when it must
//! be read paused.
//!
//! A non-blocking read copies a stack while the program runs. On code that
//! calls and returns every few tens of nanoseconds (most Python), no read
//! from outside is fast enough: each piece of a `process_vm_readv` costs a
//! few hundred nanoseconds, so the top of such a stack has changed by the
//! time its copy can be checked, and the checks (walker/torn.rs) reject it.
//! Dropping those ticks, or reading them again a moment later, favours the
//! frames that live long: the short calls, the very ones the program spends
//! its time in, vanish from the profile (issue #13: a one-line leaf at 0.2%
//! of the samples instead of 5-6%).
//!
//! Which ticks a profile keeps must not depend on what the program does at
//! those ticks. So the decision is made *before* each tick, from the ticks
//! before it: while the non-blocking reads of a target hold (at most
//! [`MAX_TORN_PER_WINDOW`] torn ticks in a window of [`WINDOW`]), ticks are
//! read without stopping it; once they stop holding, every tick is read
//! with the target paused (exact, never torn), and every
//! [`PROBE_EVERY`]th of those ticks first tries a non-blocking read, kept
//! only as evidence, until [`PROBES`] probes in a row show the fast path
//! holds again. The bias left is that of the torn ticks of the fast
//! phases: under one in a hundred. What it costs is a pause per tick
//! (~50 us) while the program churns: at the default 100 Hz, about 0.5% of
//! its time.
//!
//! On 3.9/3.10 the default reads every tick paused: stacks there are heap
//! frame objects, so a read that sees the thread call deeper meanwhile has
//! no copy of the new callee to join (walker/torn.rs grafts callees only
//! from data-stack copies, 3.11+), and the fast reads that hold were
//! measured biased all the same (3.10.13, `churn.py --shape chain` at 1
//! kHz, `fib` own: 20.6% `--nonblocking`, 26.9% adaptive, 30.2%
//! `--blocking`; their torn ticks stayed under the threshold). Since the
//! frame objects are read in one batch (walker/prefetch.rs) a paused read
//! of a 1,000-deep 3.9 stack stops the target for ~0.2 ms (it was ~1.7).
//!
//! Paused reads draw on a budget of the target's time
//! ([`crate::recording::pause_budget`]): at most 10% of it over any stretch longer
//! than a second. Past that, a tick planned paused may be *held*: not
//! read, and the target's next sample stands for it by its weight
//! ([`ReadCounts::held`]). At 100 Hz to 1 kHz with ordinary pauses nothing
//! is held; `--blocking` is never held.

use std::time::Instant;

use crate::process::pause::PauseStats;
use crate::reading::cpython::FrameKind;
use crate::reading::target::{ReadError, Target};
use crate::reading::walker::ThreadSample;
use crate::recording::pause_budget::PauseBudget;

/// Ticks over which the fast path's torn ticks are counted.
pub const WINDOW: u32 = 200;

/// Torn ticks a window of fast reads may have before ticks are read
/// paused (1%: the most a profile may be off by the ticks it cannot
/// read).
pub const MAX_TORN_PER_WINDOW: u32 = 2;

/// While reading paused, one tick in this many first tries a
/// non-blocking read.
pub const PROBE_EVERY: u32 = 16;

/// Probes in a row that must hold before ticks are read fast again.
pub const PROBES: u32 = 32;

/// How a target's ticks are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Without stopping the target while its stacks can be read so, paused
    /// while they cannot (the default).
    #[default]
    Adaptive,
    /// Always paused (`--blocking`): every stack exact.
    Paused,
    /// Never paused (`--nonblocking`): stacks that change while read are
    /// flagged torn.
    Fast,
}

/// What reading the ticks of a target has learnt, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct Exactness {
    mode: ReadMode,
    /// Adaptive mode is reading ticks paused.
    paused: bool,
    /// The fast ticks of the current window, and the torn ones among them.
    window_ticks: u32,
    window_torn: u32,
    /// Paused ticks since the last probe; probes in a row that held.
    since_probe: u32,
    probes_held: u32,
    /// A pause failed (no permission to stop the target): fast from then on.
    cannot_pause: Option<String>,
    /// Another thread of the agent has the target's threads seized for a
    /// while (a trace window's tracer being loaded): ticks planned paused
    /// are read without pausing meanwhile, and teach nothing.
    seized_elsewhere: bool,
    /// Adaptive mode found the target's fast reads untrue by construction
    /// (3.9/3.10 frame objects): every tick paused, no probes.
    always_paused: bool,
    /// How much of the target's time adaptive mode's pauses may take.
    budget: PauseBudget,
}

/// What [`Exactness::read`] did with a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// The tick's stacks were read; `taken_ns` is the stream clock
    /// (`session::monotonic_ns`) when they were taken: once every thread
    /// is stopped for a paused read (the stacks are those of that
    /// moment), as the read begins for a running one.
    Read {
        /// When the stacks were taken (stream clock, ns).
        taken_ns: u64,
    },
    /// The tick was held: not read, to keep pauses within their budget
    /// ([`crate::recording::pause_budget`]); the target's next sample stands for it.
    Held,
}

/// How the ticks of a session were read, over all its targets.
#[derive(Debug, Clone, Default)]
pub struct ReadCounts {
    /// Ticks read paused, and how long they stopped the target.
    pub pauses: PauseStats,
    /// Ticks read without stopping the target.
    pub fast_ticks: u64,
    /// Non-blocking probe reads made while reading paused (not recorded).
    pub probes: u64,
    /// Fast ticks whose stack moved while it was read (a thread called or
    /// returned between the pointer reads that bracket its copy).
    pub moved: u64,
    /// Ticks planned paused that were not read, to keep pauses within
    /// [`crate::recording::pause_budget::SHARE`] of the target's time: the target's
    /// next sample stands for them by its weight.
    pub held: u64,
}

impl std::fmt::Display for ReadCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ticks read paused {} (stacks changing too fast to read running), unpaused {} ({} moved while read), probes {}",
            self.pauses.count(),
            self.fast_ticks,
            self.moved,
            self.probes
        )?;
        if self.held > 0 {
            let ticks = self.pauses.count() + self.fast_ticks + self.held;
            write!(
                f,
                "\n  HELD {} of {} ticks ({:.1}%): not read, so that pauses keep near {:.0}% of the target's time; the next sample stands for them (or a gap, past {} ms)",
                self.held,
                ticks,
                self.held as f64 * 100.0 / ticks.max(1) as f64,
                crate::recording::pause_budget::SHARE * 100.0,
                crate::recording::schedule::GAP_TIME.as_millis()
            )?;
        }
        if self.pauses.count() > 0 {
            write!(f, "\n  {}", self.pauses)?;
        }
        Ok(())
    }
}

/// How one tick is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Fast,
    Paused { probe: bool },
}

impl Exactness {
    /// A target read in `mode`.
    pub fn new(mode: ReadMode) -> Exactness {
        Exactness {
            mode,
            paused: mode == ReadMode::Paused,
            ..Exactness::default()
        }
    }

    /// Why ticks that should have been read paused were read without
    /// stopping the target, if a pause failed.
    pub fn cannot_pause(&self) -> Option<&str> {
        self.cannot_pause.as_deref()
    }

    /// Adaptive reads of a target whose fast reads cannot follow a call
    /// made while they read (3.9/3.10 heap frame objects): every tick is
    /// read paused, and no probe tries the fast path.
    fn settle_for(&mut self, frame_kind: FrameKind) {
        if self.mode == ReadMode::Adaptive && frame_kind == FrameKind::FrameObject {
            self.always_paused = true;
            self.paused = true;
        }
    }

    /// Says whether another thread of the agent has the target's threads
    /// seized now ([`crate::trace::window::TraceWindow::opening`]): a pause
    /// would fail, and must not be taken for a lack of permission.
    pub fn seized_elsewhere(&mut self, seized: bool) {
        self.seized_elsewhere = seized;
    }

    /// True while another thread of the agent has the target's threads
    /// seized ([`Exactness::seized_elsewhere`]).
    pub fn is_seized_elsewhere(&self) -> bool {
        self.seized_elsewhere
    }

    /// True while ticks are read paused.
    pub fn reading_paused(&self) -> bool {
        self.paused && self.cannot_pause.is_none()
    }

    /// Reads one tick of `target` into `out`, paused or not as decided
    /// before the read (see the module's documentation), or holds it
    /// (`out` cleared) when adaptive mode's pauses are over budget. `due`
    /// is the tick's due time on the schedule's grid: the budget's slots
    /// are on that grid, so whether a tick is held follows neither its
    /// lateness nor the length of the pause before it. A read tick says
    /// when its stacks were taken ([`Tick::Read`]).
    pub fn read(
        &mut self,
        target: &mut Target,
        out: &mut Vec<ThreadSample>,
        counts: &mut ReadCounts,
        due: Instant,
    ) -> Result<Tick, ReadError> {
        use crate::recording::schedule::monotonic_ns;
        self.settle_for(target.layout().semantics.frame_kind);
        if self.budgeted() && !self.budget.may_pause(due) {
            out.clear();
            counts.held += 1;
            return Ok(Tick::Held);
        }
        match self.plan() {
            Plan::Fast => {
                let taken = monotonic_ns();
                target.sample_threads(out)?;
                counts.fast_ticks += 1;
                counts.moved += u64::from(out.iter().any(|s| s.moved));
                self.learn(out.iter().any(|s| s.torn));
                Ok(Tick::Read { taken_ns: taken })
            }
            Plan::Paused { .. } if self.seized_elsewhere => {
                // Read as it runs, counted as such; not evidence either way.
                let taken = monotonic_ns();
                target.sample_threads(out)?;
                counts.fast_ticks += 1;
                counts.moved += u64::from(out.iter().any(|s| s.moved));
                Ok(Tick::Read { taken_ns: taken })
            }
            Plan::Paused { probe } => {
                if probe {
                    // Evidence only: this tick was planned paused, so the
                    // paused read below is its sample whatever the probe
                    // shows.
                    counts.probes += 1;
                    target.sample_threads(out)?;
                    self.learn_probe(out.iter().any(|s| s.torn));
                }
                let guard = match target.pause() {
                    Ok(guard) => guard,
                    Err(ReadError::Pause { detail, .. }) if self.mode == ReadMode::Adaptive => {
                        self.cannot_pause = Some(detail);
                        let taken = monotonic_ns();
                        target.sample_threads(out)?;
                        counts.fast_ticks += 1;
                        return Ok(Tick::Read { taken_ns: taken });
                    }
                    Err(e) => return Err(e),
                };
                let taken = monotonic_ns();
                let read = target.sample_threads(out);
                let stopped = guard.release();
                counts.pauses.record(stopped);
                if self.mode == ReadMode::Adaptive {
                    self.budget.paused(due, Instant::now(), stopped);
                }
                read.map(|()| Tick::Read { taken_ns: taken })
            }
        }
    }

    /// True if the next tick would be read paused in adaptive mode, so
    /// under the pause budget (`--blocking` asks for every tick paused,
    /// and fast ticks stop nothing).
    fn budgeted(&self) -> bool {
        self.mode == ReadMode::Adaptive && self.reading_paused()
    }

    fn plan(&mut self) -> Plan {
        if !self.paused || self.cannot_pause.is_some() {
            return Plan::Fast;
        }
        let probe = self.mode == ReadMode::Adaptive && !self.always_paused && {
            self.since_probe += 1;
            self.since_probe >= PROBE_EVERY
        };
        if probe {
            self.since_probe = 0;
        }
        Plan::Paused { probe }
    }

    /// Counts a fast tick; too many torn ones in a window switch to
    /// paused reads.
    fn learn(&mut self, torn: bool) {
        if self.mode != ReadMode::Adaptive {
            return;
        }
        self.window_ticks += 1;
        self.window_torn += u32::from(torn);
        if self.window_torn > MAX_TORN_PER_WINDOW {
            self.paused = true;
            self.since_probe = 0;
            self.probes_held = 0;
            self.window_ticks = 0;
            self.window_torn = 0;
        } else if self.window_ticks >= WINDOW {
            self.window_ticks = 0;
            self.window_torn = 0;
        }
    }

    /// Counts a probe; enough probes in a row that held switch back to
    /// fast reads (from the next tick on).
    fn learn_probe(&mut self, torn: bool) {
        if torn {
            self.probes_held = 0;
            return;
        }
        self.probes_held += 1;
        if self.probes_held >= PROBES {
            self.paused = false;
            self.probes_held = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(exactness: &mut Exactness, torn: &[bool]) -> Vec<Plan> {
        let mut plans = Vec::new();
        for &t in torn {
            let plan = exactness.plan();
            match plan {
                Plan::Fast => exactness.learn(t),
                Plan::Paused { probe: true } => exactness.learn_probe(t),
                Plan::Paused { probe: false } => {}
            }
            plans.push(plan);
        }
        plans
    }

    #[test]
    fn ticks_stay_fast_while_at_most_one_in_a_hundred_tears() {
        let mut exactness = Exactness::new(ReadMode::Adaptive);
        let torn: Vec<bool> = (0..2_000).map(|i| i % 100 == 0).collect();
        let plans = decide(&mut exactness, &torn);
        assert!(plans.iter().all(|p| *p == Plan::Fast));
    }

    #[test]
    fn a_third_torn_tick_in_a_window_makes_the_next_ticks_paused() {
        let mut exactness = Exactness::new(ReadMode::Adaptive);
        let plans = decide(&mut exactness, &[true, false, true, true, false, false]);
        assert_eq!(&plans[..4], &[Plan::Fast; 4]);
        assert_eq!(plans[4], Plan::Paused { probe: false });
    }

    #[test]
    fn paused_ticks_probe_and_go_back_to_fast_once_enough_probes_hold() {
        let mut exactness = Exactness::new(ReadMode::Adaptive);
        decide(&mut exactness, &[true; 3]);
        assert!(exactness.reading_paused());
        // Probes that tear keep the ticks paused.
        let plans = decide(&mut exactness, &vec![true; (PROBE_EVERY * PROBES) as usize]);
        let probes = plans
            .iter()
            .filter(|p| **p == Plan::Paused { probe: true })
            .count();
        assert_eq!(probes, PROBES as usize);
        assert!(exactness.reading_paused());
        // Probes that hold, PROBES in a row, switch back.
        let plans = decide(
            &mut exactness,
            &vec![false; (PROBE_EVERY * PROBES + 1) as usize],
        );
        assert_eq!(*plans.last().unwrap(), Plan::Fast);
        assert!(!exactness.reading_paused());
    }

    #[test]
    fn frame_object_targets_are_read_paused_without_probes_in_adaptive_mode() {
        let mut adaptive = Exactness::new(ReadMode::Adaptive);
        adaptive.settle_for(FrameKind::FrameObject);
        let plans = decide(&mut adaptive, &[false; 100]);
        assert!(plans.iter().all(|p| *p == Plan::Paused { probe: false }));
        let mut fast = Exactness::new(ReadMode::Fast);
        fast.settle_for(FrameKind::FrameObject);
        assert!(decide(&mut fast, &[false; 10])
            .iter()
            .all(|p| *p == Plan::Fast));
        let mut modern = Exactness::new(ReadMode::Adaptive);
        modern.settle_for(FrameKind::InterpreterFrame);
        assert!(decide(&mut modern, &[false; 10])
            .iter()
            .all(|p| *p == Plan::Fast));
    }

    #[test]
    fn blocking_never_probes_and_nonblocking_never_pauses() {
        let mut paused = Exactness::new(ReadMode::Paused);
        let plans = decide(&mut paused, &[false; 100]);
        assert!(plans.iter().all(|p| *p == Plan::Paused { probe: false }));
        let mut fast = Exactness::new(ReadMode::Fast);
        let plans = decide(&mut fast, &[true; 100]);
        assert!(plans.iter().all(|p| *p == Plan::Fast));
    }
}
