//! A drift-free, randomized sampling schedule.
//!
//! Time is cut into strata of `stride` ticks (`start + n * interval`
//! onwards), and each stratum's sample is due at a uniform random point of
//! it, drawn from the stratum's number alone: stratified random sampling.
//! The sample instants then depend neither on the program's state nor on
//! what the last read met, which is what keeps a profile of short calls
//! true. A regular grid could lock onto a loop's period (at 30 kHz a
//! chain's fib share came out 2-5 points high); reads taken back to back
//! start when the last one ended, a moment that depends on how deep and
//! how torn the last stack was (at the maximum rate 4 points low). See
//! notes/benchmarks.md, "Sampling instants".
//!
//! A stratum is one tick while the sampler keeps up with the rate asked.
//! When its reads take longer than a third of a tick, strata widen to three
//! times a read ([`Schedule::finished`]), so the next random point is
//! rarely past before the sampler is ready: the maximum rate is a third of
//! back to back, the price of being true. Each sample stands for its
//! stratum's ticks (its weight).
//!
//! A slow sample makes the next one late but never shifts the whole grid,
//! so the achieved rate converges on the requested one. When the sampler
//! falls a whole stratum behind, the strata it can no longer sample are
//! skipped and counted as missed instead of being taken in a burst (a
//! burst would put many samples at one moment and bias the profile).
//!
//! A tick taken after a short lateness stands for the ticks missed too (its
//! weight). After a stall of [`GAP_TICKS`] ticks and [`GAP_TIME`] or more
//! it stands for its own stratum only, and the stall is a gap
//! ([`Schedule::last_gap`]), recorded as a fact rather than spread over one
//! sample: a sample standing for 556 ticks once made one function 71% of a
//! profile whose truth was about 50%. The ticks a sample did not observe
//! are those missed before it and the rest of its stratum, judged together
//! (as held ticks are, `Sampled::carry`), so no sample stands for more
//! than `max(GAP_TICKS, GAP_TIME / interval)` ticks, or its own stratum
//! when that is wider.

use std::time::{Duration, Instant};

/// When the next sample is due, and how far behind the sampler runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
    /// First tick of the next stratum: the stretch of `stride` ticks in
    /// which the next sample is taken, at a random point of it.
    next_tick: u64,
    /// Ticks per stratum: 1 while the sampler keeps up with the rate asked;
    /// more when its reads take longer than a tick ([`Schedule::finished`]).
    stride: u64,
    /// Ticks of the last taken stratum (its samples' weight, with the
    /// ticks missed before it).
    last_stride: u64,
    /// Ticks skipped since the last taken tick, not yet given to a sample.
    pending_missed: u64,
    /// When the last tick was taken (to measure how long it kept the
    /// sampler busy).
    taken_at: Option<Instant>,
    /// Smoothed time, in nanoseconds, from taking a tick to being ready for
    /// the next one.
    busy_ns: f64,
    /// Seed of the strata's random offsets.
    seed: u64,
    /// Ticks not read: skipped because the sampler was too late to take
    /// them, or the rest of a stratum wider than one tick. Counted when the
    /// next taken tick stands for them (or a gap does): strata skipped
    /// right before the recording stops belong to no sample and are not
    /// counted, like the ticks after the last one taken.
    pub missed_ticks: u64,
    /// Largest lateness of a taken tick behind its due time.
    pub max_lag: Duration,
    /// Lateness of the last taken tick.
    pub last_lag: Duration,
    /// Strata's ticks skipped right before the last taken tick: its samples
    /// stand for them too (`SampleBatch.weight` = this + its stratum's
    /// ticks), so a profile's time shares stay right when the sampler falls
    /// behind. A stall of them is a gap; a wide stratum is not.
    pub last_missed: u64,
}

impl Schedule {
    /// A schedule of `rate_hz` ticks per second starting at `start`.
    /// Rates are clamped to 1 µs intervals at most.
    pub fn new(start: Instant, rate_hz: f64) -> Self {
        let nanos = (1e9 / rate_hz.max(1e-3)).clamp(1_000.0, 3.6e12);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Schedule {
            start,
            interval: Duration::from_nanos(nanos as u64),
            next_tick: 0,
            stride: 1,
            last_stride: 1,
            pending_missed: 0,
            taken_at: None,
            busy_ns: 0.0,
            seed,
            missed_ticks: 0,
            max_lag: Duration::ZERO,
            last_lag: Duration::ZERO,
            last_missed: 0,
        }
    }

    /// The same schedule with every stratum's sample at its start (no
    /// random offset): for tests that need due times they can name.
    #[cfg(test)]
    pub(crate) fn unjittered(start: Instant, rate_hz: f64) -> Self {
        Schedule {
            seed: UNJITTERED,
            ..Schedule::new(start, rate_hz)
        }
    }

    /// The sampler ticks the samples of the last taken tick stand for: its
    /// stratum's ticks plus the ticks skipped right before it, unless those
    /// were a gap (then its stratum's only).
    pub fn weight(&self) -> u32 {
        let ticks = if self.missed_a_gap() {
            self.last_stride
        } else {
            self.last_missed.saturating_add(self.last_stride)
        };
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// True if the ticks skipped right before the last taken tick were a
    /// stall the sample should not stand for: with the rest of its stratum
    /// (also not observed), [`GAP_TICKS`] or more, and [`GAP_TIME`] or more.
    fn missed_a_gap(&self) -> bool {
        self.last_missed > 0 && is_gap(self.last_missed + self.last_stride - 1, self.interval)
    }

    /// The ticks skipped right before the last taken tick, if they were a
    /// gap ([`GAP_TICKS`] or more): how many, and how long before `now` (the
    /// time of the taking) the first of them was due.
    pub fn last_gap(&self, now: Instant) -> Option<(u64, Duration)> {
        if !self.missed_a_gap() {
            return None;
        }
        let first_missed = self.next_tick - self.last_stride - self.last_missed;
        let nanos = (self.interval.as_nanos() as u64).saturating_mul(first_missed);
        let due = self.start + Duration::from_nanos(nanos);
        Some((self.last_missed, now.saturating_duration_since(due)))
    }

    /// The interval between ticks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Ticks per stratum now: 1 unless the sampler's reads take longer
    /// than a tick.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// Start of the stratum of the last taken tick (of the first, before any).
    pub fn last_due(&self) -> Instant {
        self.tick_start(self.next_tick.saturating_sub(self.last_stride))
    }

    /// Due time of the next tick: a random point of its stratum, the same
    /// whatever the sampler or the target did before (see the module doc).
    pub fn next_due(&self) -> Instant {
        self.tick_start(self.next_tick) + self.offset(self.next_tick)
    }

    fn tick_start(&self, tick: u64) -> Instant {
        let nanos = (self.interval.as_nanos() as u64).saturating_mul(tick);
        self.start + Duration::from_nanos(nanos)
    }

    /// Where in the stratum starting at `tick` its sample is due: uniform
    /// over the stratum, drawn from the tick's number alone.
    fn offset(&self, tick: u64) -> Duration {
        if self.seed == UNJITTERED {
            return Duration::ZERO;
        }
        let span = (self.interval.as_nanos() as u64).saturating_mul(self.stride);
        Duration::from_nanos(splitmix64(self.seed ^ tick) % span.max(1))
    }

    /// Takes the tick that is due at or before `now`, if any: skips (and
    /// counts) the strata wholly past, and records the lateness of the
    /// one taken. Returns false if the next tick is still in the future.
    pub fn take(&mut self, now: Instant) -> bool {
        let interval = self.interval.as_nanos().max(1);
        let current = (now.saturating_duration_since(self.start).as_nanos() / interval) as u64;
        if current >= self.next_tick + self.stride {
            // Whole strata passed without a sample: missed. The sample is
            // taken in the stratum `now` is in, at its own random point.
            // Counted missed when a sample stands for them (or a gap
            // does): the recording may stop first.
            let skipped = (current - self.next_tick) / self.stride * self.stride;
            self.pending_missed += skipped;
            self.next_tick += skipped;
        }
        let due = self.next_due();
        if now < due {
            return false;
        }
        self.last_missed = std::mem::take(&mut self.pending_missed);
        // The stratum's other ticks are not read either: missed, and stood
        // for by this sample (its weight), so that weights, gaps and held
        // ticks still add up to every tick of the recording.
        self.missed_ticks += self.last_missed + self.stride - 1;
        let lag = now - due;
        self.last_lag = lag;
        self.max_lag = self.max_lag.max(lag);
        self.last_stride = self.stride;
        self.next_tick += self.stride;
        self.taken_at = Some(now);
        true
    }

    /// Says the last taken tick's work is done at `now`. The strata widen
    /// to three times the ticks that work takes (smoothed), so that the
    /// next sample's random point is rarely already past when the sampler
    /// is ready (one time in eighteen): a sample taken late, or back to
    /// back, is taken at a moment that depends on what the last read met
    /// (how deep, how torn), which biases a profile of short calls by
    /// points (notes/benchmarks.md, "Sampling instants"). They narrow again
    /// when reads get quicker.
    pub fn finished(&mut self, now: Instant) {
        let Some(taken) = self.taken_at.take() else {
            return;
        };
        let busy = now.saturating_duration_since(taken).as_nanos() as f64;
        self.busy_ns = if self.busy_ns == 0.0 {
            busy
        } else {
            self.busy_ns + (busy - self.busy_ns) / BUSY_SMOOTHING
        };
        let interval = self.interval.as_nanos().max(1) as f64;
        let wanted = (STRATUM_PER_BUSY * self.busy_ns / interval).ceil();
        self.stride = (wanted as u64).clamp(1, MAX_STRIDE);
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

/// A stratum is this many times the smoothed busy time of a tick (when
/// that is longer than a tick): the next sample's random point then falls
/// before the sampler is ready about one time in eighteen. Measured
/// (notes/benchmarks.md, "Sampling instants"): twice left a back-to-back
/// chain 1.3-1.9 points off the program's own clock, three times 0.2-0.8;
/// keeping the last 1.25 reads of strata 2.5 reads wide free of their
/// sample (so none is late) 1.1-1.7.
const STRATUM_PER_BUSY: f64 = 3.0;

/// Ticks averaged by the busy time (an exponential moving average): slow
/// enough that one deep or torn read does not move the strata.
const BUSY_SMOOTHING: f64 = 64.0;

/// Widest stratum, in ticks (a bound, not a setting: a read of 10 ms at
/// 1 MHz asked).
const MAX_STRIDE: u64 = 10_000;

/// The seed that turns the random offsets off (tests).
const UNJITTERED: u64 = u64::MAX;

/// SplitMix64: a well-mixed 64-bit hash of `x` (Steele, Lea, Flood 2014).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

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
        let mut schedule = Schedule::unjittered(start, 1000.0);
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
        let mut schedule = Schedule::unjittered(start, 1000.0);
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
        let mut schedule = Schedule::unjittered(start, 100.0);
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
    #[test]
    fn each_stratum_is_sampled_at_a_uniform_random_point_of_it() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 1000.0);
        let mut offsets = Vec::new();
        for tick in 0..10_000u64 {
            let stratum = start + Duration::from_millis(tick);
            let due = schedule.next_due();
            assert!(due >= stratum && due < stratum + Duration::from_millis(1));
            offsets.push((due - stratum).as_nanos() as f64 / 1e6);
            assert!(schedule.take(due));
            schedule.finished(due + Duration::from_micros(1));
            assert_eq!(schedule.weight(), 1);
        }
        // Uniform on [0, 1): mean 1/2, a tenth of them in each tenth.
        let mean = offsets.iter().sum::<f64>() / offsets.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean offset {mean}");
        for tenth in 0..10 {
            let lo = tenth as f64 / 10.0;
            let n = offsets.iter().filter(|&&o| o >= lo && o < lo + 0.1).count();
            assert!(
                (800..1200).contains(&n),
                "{n} offsets in [{lo}, {})",
                lo + 0.1
            );
        }
        assert_eq!(schedule.missed_ticks, 0);
    }

    #[test]
    fn strata_widen_past_slow_reads_and_narrow_again() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 1_000_000.0);
        let mut now = start;
        let mut weights = 0u64;
        // Reads of 20 µs at 1 MHz asked: strata of 60 ticks, each sample
        // standing for its stratum.
        for _ in 0..2_000 {
            while !schedule.take(now) {
                now = schedule.next_due();
            }
            weights += u64::from(schedule.weight());
            now += Duration::from_micros(20);
            schedule.finished(now);
        }
        assert_eq!(schedule.stride(), 60);
        // Every tick up to the last taken stratum is a sample's weight, and
        // each tick is taken or counted missed.
        let covered = schedule.next_tick;
        assert_eq!(weights, covered);
        assert_eq!(covered, 2_000 + schedule.missed_ticks);
        // Reads of 1.5 µs: back to strata of 5 ticks (4.5 rounded up).
        for _ in 0..2_000 {
            while !schedule.take(now) {
                now = schedule.next_due();
            }
            now += Duration::from_nanos(1_500);
            schedule.finished(now);
        }
        assert_eq!(schedule.stride(), 5);
    }

    /// A sample in a wide stratum after a stall stands for its stratum, not
    /// for the stall too: at 1 MHz, strata of 6,000 ticks (reads of 2 ms)
    /// and 18 ms missed would have made one sample 24 ms of a profile.
    #[test]
    fn no_sample_stands_for_more_than_a_gap_or_its_stratum() {
        let start = Instant::now();
        let mut schedule = Schedule::unjittered(start, 1_000_000.0);
        assert!(schedule.take(start));
        schedule.finished(start + Duration::from_millis(2));
        assert_eq!(schedule.stride(), 6_000);
        // The next stratum starts at 1 µs; taken 18 ms later: 18 ms missed
        // and 6 ms of stratum unobserved are a gap.
        let now = start + Duration::from_micros(18_001);
        assert!(schedule.take(now));
        assert_eq!(schedule.last_missed, 18_000);
        assert_eq!(schedule.weight(), 6_000);
        assert_eq!(schedule.last_gap(now).map(|(ticks, _)| ticks), Some(18_000));
        schedule.finished(now + Duration::from_millis(2));
        // 6 ms missed and a stratum of 6 ms: 12 ms, one sample.
        let now = start + Duration::from_micros(30_001);
        assert!(schedule.take(now));
        assert_eq!(schedule.last_missed, 6_000);
        assert_eq!(schedule.weight(), 12_000);
        assert_eq!(schedule.last_gap(now), None);
    }

    /// Weights, gaps and counted missed ticks add up whatever the reads
    /// cost and however the recording ends, including right after strata
    /// were skipped when the stratum `now` is in has its point still ahead
    /// (no sample ever stands for those: they must not be counted missed).
    #[test]
    fn every_counted_tick_is_a_weight_or_a_gap_wherever_the_recording_stops() {
        let start = Instant::now();
        let mut skipped_then_waited = 0;
        for seed in 0..200u64 {
            let mut schedule = Schedule::new(start, 1_000_000.0);
            schedule.seed = seed;
            let mut now = start;
            let (mut taken, mut weights, mut gap_ticks) = (0u64, 0u64, 0u64);
            let mut rng = seed;
            for _ in 0..300 {
                rng = splitmix64(rng);
                // Reads of 2-200 µs, now and then a stall of 30 ms.
                let busy = match rng % 50 {
                    0 => 30_000_000,
                    _ => 2_000 + (rng >> 32) % 198_000,
                };
                now += Duration::from_nanos(busy);
                let missed_before = schedule.pending_missed;
                if schedule.take(now) {
                    taken += 1;
                    weights += u64::from(schedule.weight());
                    if let Some((ticks, _)) = schedule.last_gap(now) {
                        gap_ticks += ticks;
                    }
                    schedule.finished(now + Duration::from_nanos(busy / 4));
                } else if schedule.pending_missed > missed_before {
                    skipped_then_waited += 1;
                }
            }
            assert_eq!(
                weights + gap_ticks,
                taken + schedule.missed_ticks,
                "seed {seed}"
            );
        }
        assert!(skipped_then_waited > 0, "the case was never met");
    }
}
