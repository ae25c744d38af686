//! Gaps: stretches of time the sampler did not observe, as facts.
//!
//! When the sampler takes a tick after a stall of
//! [`crate::recording::schedule::GAP_TICKS`] ticks and [`crate::recording::schedule::GAP_TIME`]
//! or more, no sample stands for the ticks missed (see
//! [`crate::recording::schedule::Schedule::weight`]); a `Gap` record says when, how
//! many ticks, and why when the sampler knows: the slowest thing it did
//! since the tick before (a snapshot, a read of the target, attaching),
//! or, if nothing it did took that long, that its thread did not run.

use std::time::{Duration, Instant};

use pydeep_format::proto;

use crate::recording::schedule::Schedule;

/// What the sampler did between two ticks, to name the cause of a gap.
#[derive(Debug, Default)]
pub struct Stalls {
    /// The slowest step since the last tick: what, and how long it took.
    slowest: Option<(&'static str, Duration)>,
}

/// Gaps recorded so far, for the footer and the summary.
#[derive(Debug, Clone, Default)]
pub struct GapCounts {
    /// Gap records written.
    pub count: u64,
    /// Ticks they cover.
    pub ticks: u64,
    /// Time they cover.
    pub total: Duration,
    /// The longest one: its length and cause.
    pub longest: Option<(Duration, String)>,
}

impl Stalls {
    /// Runs `step` (described by `what`, e.g. "taking a snapshot") and
    /// remembers how long it took.
    pub fn time<T>(&mut self, what: &'static str, step: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = step();
        self.note(what, started.elapsed());
        result
    }

    /// Remembers that `what` took `took`.
    pub fn note(&mut self, what: &'static str, took: Duration) {
        if self.slowest.is_none_or(|(_, longest)| took > longest) {
            self.slowest = Some((what, took));
        }
    }

    /// After a tick was taken at `now` (`now_ns` on the stream clock): the
    /// gap before it, if the schedule missed enough ticks for one, with
    /// its cause; and a fresh start for the next tick either way.
    pub fn gap(
        &mut self,
        schedule: &Schedule,
        now: Instant,
        now_ns: u64,
        counts: &mut GapCounts,
    ) -> Option<proto::Gap> {
        let slowest = self.slowest.take();
        let (ticks, length) = schedule.last_gap(now)?;
        let cause = match slowest {
            // A step that took most of the gap caused it.
            Some((what, took)) if took * 2 >= length => {
                format!("{what} took {:.1} ms", took.as_secs_f64() * 1e3)
            }
            _ => "the sampler thread did not run in time (CPU load, or the agent was stopped)"
                .to_string(),
        };
        counts.count += 1;
        counts.ticks += ticks;
        counts.total += length;
        if counts.longest.as_ref().is_none_or(|(l, _)| *l < length) {
            counts.longest = Some((length, cause.clone()));
        }
        Some(proto::Gap {
            from_ns: now_ns.saturating_sub(length.as_nanos() as u64),
            to_ns: now_ns,
            ticks,
            cause,
        })
    }
}

impl GapCounts {
    /// A gap of `ticks` held by the pause budget (`interval` apart) for
    /// process `pid`, ended at `now_ns`, that no sample stands for: held
    /// before a sample that would otherwise stand for more ticks than a
    /// stall may ([`crate::recording::sampled::Sampled::carry`]), or after the
    /// process's last sample. It concerns that process only (a recording
    /// of several processes observed the others).
    pub fn held(&mut self, pid: i32, ticks: u64, interval: Duration, now_ns: u64) -> proto::Gap {
        let length = interval.saturating_mul(ticks.min(u32::MAX as u64) as u32);
        let cause = format!(
            "pid {pid}: {ticks} ticks held to keep pauses within {:.0}% of the target's time",
            crate::recording::pause_budget::SHARE * 100.0
        );
        self.count += 1;
        self.ticks += ticks;
        self.total += length;
        if self.longest.as_ref().is_none_or(|(l, _)| *l < length) {
            self.longest = Some((length, cause.clone()));
        }
        proto::Gap {
            from_ns: now_ns.saturating_sub(length.as_nanos() as u64),
            to_ns: now_ns,
            ticks,
            cause,
        }
    }
}

impl std::fmt::Display for GapCounts {
    /// "gaps 1 (120 ticks, 1.203 s not observed; longest 1.203 s: ...)",
    /// or "gaps 0".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gaps {}", self.count)?;
        if let Some((longest, cause)) = &self.longest {
            write!(
                f,
                " ({} ticks, {:.3} s not observed; longest {:.3} s: {cause})",
                self.ticks,
                self.total.as_secs_f64(),
                longest.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stall_is_a_gap_named_after_the_step_that_took_it() {
        let start = Instant::now();
        let mut schedule = Schedule::unjittered(start, 1000.0);
        // 1 kHz: gaps are 20 ticks (20 ms) or more.
        let mut stalls = Stalls::default();
        let mut counts = GapCounts::default();
        assert!(schedule.take(start));
        assert!(stalls
            .gap(&schedule, start, 1_000_000, &mut counts)
            .is_none());
        stalls.note("reading the target", Duration::from_micros(50));
        stalls.note("taking a snapshot", Duration::from_millis(29));
        let now = start + Duration::from_micros(30_500);
        assert!(schedule.take(now));
        let gap = stalls.gap(&schedule, now, 40_000_000, &mut counts).unwrap();
        assert_eq!(gap.ticks, 29);
        assert_eq!(gap.to_ns - gap.from_ns, 29_500_000);
        assert_eq!(gap.cause, "taking a snapshot took 29.0 ms");
        assert_eq!(counts.count, 1);
        // Nothing slow this time: the thread did not run.
        let later = start + Duration::from_micros(60_500);
        assert!(schedule.take(later));
        let gap = stalls
            .gap(&schedule, later, 70_000_000, &mut counts)
            .unwrap();
        assert!(gap.cause.contains("did not run"), "{}", gap.cause);
        assert_eq!(counts.ticks, 58);
        // A short lateness is no gap.
        let soon = start + Duration::from_micros(65_500);
        assert!(schedule.take(soon));
        assert!(stalls
            .gap(&schedule, soon, 75_000_000, &mut counts)
            .is_none());
    }
}
