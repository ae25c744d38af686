//! A drift-free sampling schedule.
//!
//! Tick `n` is due at `start + n * interval`, whatever happened before: a
//! slow sample makes the next one late but never shifts the whole grid, so
//! the achieved rate converges on the requested one. When the sampler falls
//! more than a whole interval behind, the ticks it can no longer take are
//! skipped and counted as missed instead of being taken in a burst (a burst
//! would put many samples at one moment and bias the profile).
//!
//! A tick taken after a short lateness stands for the ticks missed too (its
//! weight). After a stall of [`GAP_TICKS`] ticks and [`GAP_TIME`] or more
//! it stands for itself only, and the stall is a gap
//! ([`Schedule::last_gap`]), recorded as a fact rather than spread over one
//! sample: a sample standing for 556 ticks once made one function 71% of a
//! profile whose truth was about 50%. So no sample stands for more than
//! `max(GAP_TICKS, GAP_TIME / interval)` ticks.

use std::time::{Duration, Instant};

/// When the next sample is due, and how far behind the sampler runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
    next_tick: u64,
    /// Ticks skipped because the sampler was too late to take them.
    pub missed_ticks: u64,
    /// Largest lateness of a taken tick behind its due time.
    pub max_lag: Duration,
    /// Lateness of the last taken tick.
    pub last_lag: Duration,
    /// Ticks skipped right before the last taken tick: its samples stand
    /// for them too (`SampleBatch.weight` = this + 1), so a profile's time
    /// shares stay right when the sampler falls behind.
    pub last_missed: u64,
}

impl Schedule {
    /// A schedule of `rate_hz` ticks per second starting at `start`.
    /// Rates are clamped to 1 µs intervals at most.
    pub fn new(start: Instant, rate_hz: f64) -> Self {
        let nanos = (1e9 / rate_hz.max(1e-3)).clamp(1_000.0, 3.6e12);
        Schedule {
            start,
            interval: Duration::from_nanos(nanos as u64),
            next_tick: 0,
            missed_ticks: 0,
            max_lag: Duration::ZERO,
            last_lag: Duration::ZERO,
            last_missed: 0,
        }
    }

    /// The sampler ticks the samples of the last taken tick stand for: 1
    /// plus the ticks skipped right before it, unless those were a gap
    /// (then 1).
    pub fn weight(&self) -> u32 {
        if self.missed_a_gap() {
            1
        } else {
            u32::try_from(self.last_missed.saturating_add(1)).unwrap_or(u32::MAX)
        }
    }

    /// True if the ticks skipped right before the last taken tick were a
    /// gap: [`GAP_TICKS`] or more, and [`GAP_TIME`] or more.
    fn missed_a_gap(&self) -> bool {
        is_gap(self.last_missed, self.interval)
    }

    /// The ticks skipped right before the last taken tick, if they were a
    /// gap ([`GAP_TICKS`] or more): how many, and how long before `now` (the
    /// time of the taking) the first of them was due.
    pub fn last_gap(&self, now: Instant) -> Option<(u64, Duration)> {
        if !self.missed_a_gap() {
            return None;
        }
        let first_missed = self.next_tick - 1 - self.last_missed;
        let nanos = (self.interval.as_nanos() as u64).saturating_mul(first_missed);
        let due = self.start + Duration::from_nanos(nanos);
        Some((self.last_missed, now.saturating_duration_since(due)))
    }

    /// The interval between ticks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Due time of the last taken tick (of the first, before any).
    pub fn last_due(&self) -> Instant {
        let nanos =
            (self.interval.as_nanos() as u64).saturating_mul(self.next_tick.saturating_sub(1));
        self.start + Duration::from_nanos(nanos)
    }

    /// Due time of the next tick.
    pub fn next_due(&self) -> Instant {
        let nanos = (self.interval.as_nanos() as u64).saturating_mul(self.next_tick);
        self.start + Duration::from_nanos(nanos)
    }

    /// Takes the tick that is due at or before `now`, if any: skips (and
    /// counts) ticks that are more than one interval overdue, and records
    /// the lateness of the one taken. Returns false if the next tick is
    /// still in the future.
    pub fn take(&mut self, now: Instant) -> bool {
        let due = self.next_due();
        if now < due {
            return false;
        }
        let late = now - due;
        let behind = (late.as_nanos() / self.interval.as_nanos().max(1)) as u64;
        self.last_missed = behind;
        if behind > 0 {
            self.missed_ticks += behind;
            self.next_tick += behind;
        }
        let lag = now - self.next_due();
        self.last_lag = lag;
        self.max_lag = self.max_lag.max(lag);
        self.next_tick += 1;
        true
    }

    /// Sleeps until the next tick is due, spinning only the last
    /// [`SPIN`]: the sampler thread's timer slack is set to 1 ns (Linux
    /// gives every thread 50 µs, which each sleep overshoots by), so a
    /// sleep ends ~10-20 µs late here instead of ~70 µs, and the spin that
    /// keeps high rates on time stays short. The spin was 100-200 µs per
    /// tick before: at 1 kHz, 10-20% of a core spent waiting.
    ///
    /// Returns after [`LONGEST_WAIT`] at most, due or not, so a caller
    /// at a low rate still sees a signal or its end of duration in time:
    /// [`Schedule::take`] then says whether the tick is due.
    pub fn wait(&self) {
        precise_sleeps();
        let due = self.next_due();
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            let left = due - now;
            if left > LONGEST_WAIT {
                std::thread::sleep(LONGEST_WAIT);
                return;
            }
            if left > 2 * SPIN {
                std::thread::sleep(left - SPIN);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// True if `ticks` in a row not observed, `interval` apart, are a gap:
/// [`GAP_TICKS`] or more, and [`GAP_TIME`] or more. Missed ticks
/// ([`Schedule::weight`]) and ticks held by the pause budget
/// ([`crate::recording::sampled::Sampled::carry`]) are judged alike.
pub fn is_gap(ticks: u64, interval: Duration) -> bool {
    let time = interval.saturating_mul(ticks.min(u32::MAX as u64) as u32);
    ticks >= GAP_TICKS && time >= GAP_TIME
}

/// Missed ticks in a row from which a stall is a gap (if it also lasted
/// [`GAP_TIME`]): fewer are ordinary scheduling jitter, absorbed by the
/// next sample's weight; a gap is recorded and no sample stands for it.
pub const GAP_TICKS: u64 = 4;

/// The shortest stall that is a gap: at high rates a few ticks are a few
/// microseconds, which a sample may well stand for (the cost of one read
/// at 10 kHz); a gap record per tick would say nothing.
pub const GAP_TIME: Duration = Duration::from_millis(20);

/// The longest one [`Schedule::wait`] sleeps.
pub const LONGEST_WAIT: Duration = Duration::from_millis(50);

/// The last stretch of a wait spent spinning instead of sleeping.
const SPIN: Duration = Duration::from_micros(30);

/// Sets this thread's timer slack to 1 ns, once per thread
/// (`prctl(PR_SET_TIMERSLACK)`; a failure leaves the default, which only
/// costs precision).
fn precise_sleeps() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    DONE.with(|done| {
        if !done.get() {
            // SAFETY: PR_SET_TIMERSLACK takes one integer argument and
            // touches no memory of ours.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
            }
            done.set(true);
        }
    });
}

/// Nanoseconds on CLOCK_MONOTONIC, the clock recordings are timed on.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_on_their_grid_whatever_the_lateness() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 1000.0);
        assert!(schedule.take(start));
        assert!(!schedule.take(start + Duration::from_micros(500)));
        // Taken 0.3 ms late: the next tick is still due at 2 ms, not 2.3 ms.
        assert!(schedule.take(start + Duration::from_micros(1300)));
        assert_eq!(schedule.next_due(), start + Duration::from_millis(2));
        assert_eq!(schedule.missed_ticks, 0);
        assert_eq!(schedule.max_lag, Duration::from_micros(300));
    }

    #[test]
    fn ticks_too_late_to_take_are_skipped_and_counted() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 1000.0);
        assert!(schedule.take(start));
        // 5.5 ms later: ticks due at 1..=4 ms are missed, the one at 5 ms taken.
        assert!(schedule.take(start + Duration::from_micros(5500)));
        assert_eq!(schedule.missed_ticks, 4);
        assert_eq!(schedule.last_lag, Duration::from_micros(500));
        assert_eq!(schedule.next_due(), start + Duration::from_millis(6));
        // Its samples stand for the four missed ticks and their own: 4 ms
        // is jitter, not a gap.
        assert_eq!(schedule.weight(), 5);
        assert_eq!(schedule.last_gap(start + Duration::from_micros(5500)), None);
        assert!(schedule.take(start + Duration::from_micros(6100)));
        assert_eq!(schedule.weight(), 1);
    }

    #[test]
    fn a_stall_of_a_few_ticks_and_20_ms_is_a_gap_no_sample_stands_for() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 100.0);
        assert!(schedule.take(start));
        // Due at 10 ms, taken at 55 ms: ticks due at 10..=40 ms missed.
        let now = start + Duration::from_millis(55);
        assert!(schedule.take(now));
        assert_eq!(schedule.missed_ticks, 4);
        assert_eq!(schedule.weight(), 1);
        assert_eq!(schedule.last_gap(now), Some((4, Duration::from_millis(45))));
        // Three missed ticks (30 ms) are not.
        let now = start + Duration::from_millis(95);
        assert!(schedule.take(now));
        assert_eq!(schedule.weight(), 4);
        assert_eq!(schedule.last_gap(now), None);
    }
}
