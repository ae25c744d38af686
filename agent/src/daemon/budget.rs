//! The daemon's CPU budget: measure its own CPU use and scale every
//! target's sampling rate down when it is over budget (and back up, slowly,
//! when well under), rather than overload the host it watches.
//!
//! The control loop is deliberately simple: each second, the measured
//! fraction of a core is compared with the budget; over it, the rate factor
//! is multiplied by budget / used (a proportional cut that lands near the
//! budget in one step, since sampling cost is about linear in the rate);
//! under 60 % of it, the factor grows by a quarter, up to 1. Each target
//! thread applies the factor to its configured rate and records every
//! change in its recording as a `PROCESS_RATE_CHANGED` event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lowest rate factor: a target is never sampled at less than this share
/// of its configured rate (nor under 1 Hz, see [`effective_rate`]).
pub const MIN_FACTOR: f64 = 0.01;

/// CPU time used by this process (user + system), from `getrusage`.
pub fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time used by the calling thread (user + system).
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct we own; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The rate factor shared by the control plane (writer) and every target
/// thread (readers): an f64 in an atomic.
#[derive(Debug)]
pub struct RateFactor(AtomicU64);

impl Default for RateFactor {
    fn default() -> Self {
        RateFactor(AtomicU64::new(1f64.to_bits()))
    }
}

impl RateFactor {
    /// The current factor, in [`MIN_FACTOR`], 1].
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, factor: f64) {
        self.0.store(factor.to_bits(), Ordering::Relaxed);
    }
}

/// The rate a target is sampled at: its configured rate times the factor,
/// never under 1 Hz (or its configured rate, if that is lower).
pub fn effective_rate(configured_hz: f64, factor: f64) -> f64 {
    (configured_hz * factor).max(configured_hz.min(1.0))
}

/// Measures the daemon's CPU and adjusts the shared [`RateFactor`].
#[derive(Debug)]
pub struct Budget {
    /// Budget as a fraction of one core.
    pub limit: f64,
    last_cpu: Duration,
    last_at: Instant,
    /// The fraction of a core used over the last period.
    pub used: f64,
    /// How many times rates were cut.
    pub cuts: u64,
}

impl Budget {
    /// A budget of `percent` of one core, measuring from now.
    pub fn new(percent: f64) -> Budget {
        Budget {
            limit: percent / 100.0,
            last_cpu: process_cpu(),
            last_at: Instant::now(),
            used: 0.0,
            cuts: 0,
        }
    }

    /// Measures CPU since the last call and moves `factor`; returns the new
    /// factor if it changed.
    pub fn update(&mut self, factor: &RateFactor) -> Option<f64> {
        let cpu = process_cpu();
        let now = Instant::now();
        let wall = now.duration_since(self.last_at).as_secs_f64();
        if wall < 0.2 {
            return None;
        }
        self.used = cpu.saturating_sub(self.last_cpu).as_secs_f64() / wall;
        self.last_cpu = cpu;
        self.last_at = now;
        let current = factor.get();
        let next = decide(current, self.used, self.limit);
        if next < current {
            self.cuts += 1;
        }
        (next != current).then(|| {
            factor.set(next);
            next
        })
    }
}

/// The next factor from the current one, the CPU used and the limit (both
/// fractions of a core).
pub fn decide(current: f64, used: f64, limit: f64) -> f64 {
    if used > limit {
        (current * limit / used).clamp(MIN_FACTOR, 1.0)
    } else if used < 0.6 * limit && current < 1.0 {
        (current * 1.25).min(1.0)
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_cuts_in_proportion_and_recovers_slowly() {
        assert_eq!(decide(1.0, 0.5, 0.25), 0.5);
        assert_eq!(decide(0.5, 0.2, 0.25), 0.5);
        assert_eq!(decide(0.5, 0.1, 0.25), 0.625);
        assert_eq!(decide(0.9, 0.0, 0.25), 1.0);
        assert_eq!(decide(0.02, 100.0, 0.01), MIN_FACTOR);
        assert_eq!(effective_rate(100.0, 0.5), 50.0);
        assert_eq!(effective_rate(100.0, 0.001), 1.0);
        assert_eq!(effective_rate(0.5, 0.01), 0.5);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() < before + Duration::from_millis(20) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(process_cpu() >= thread_cpu(), "{x}");
    }
}
