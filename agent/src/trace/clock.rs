//! Event times in TSC ticks, turned into CLOCK_MONOTONIC nanoseconds.
//!
//! The tracer stamps each event with one `rdtsc` (about 10 ns here, against
//! 24 ns for `clock_gettime`, twice per call) when the agent asks for it
//! ([`abi::FLAG_TSC`], only if /proc/cpuinfo says the TSC is invariant:
//! `constant_tsc` and `nonstop_tsc`) and the target lets it run
//! (`abi::offset::CLOCK` says which clock the window uses). The agent reads
//! (TSC, CLOCK_MONOTONIC) pairs itself, before the window starts and after
//! each read of the ring, and converts each event's ticks by interpolating
//! between the two pairs around it: every event it has read lies before the
//! pair taken after the read, so that pair brackets it. The TSC is the same
//! counter in every process of the machine (invariant: synchronised across
//! cores, constant rate), which is what lets the agent take the pairs.
//!
//! A pair is `clock_gettime` read between two `rdtsc`s; of a few tries the
//! narrowest is kept (its TSC is the midpoint), and none at all if every
//! try was preempted (wider than [`MAX_PAIR_WIDTH`] ticks).

use std::collections::VecDeque;

use super::abi;

/// Widest (TSC after − TSC before) a pair may take, in ticks (~2 µs at the
/// slowest TSC of an x86_64 machine, 1 GHz; an unpreempted read takes well
/// under 200).
const MAX_PAIR_WIDTH: u64 = 2_000;
/// Pairs kept: a late event older than all of them is extrapolated from
/// the oldest two (the TSC is linear; the pairs only follow CLOCK_MONOTONIC's
/// slewing).
const KEPT_PAIRS: usize = 64;

/// True if this machine's TSC is invariant (the kernel's `constant_tsc` and
/// `nonstop_tsc` flags): the agent then asks the tracer for TSC times.
pub fn tsc_invariant() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .is_some_and(|flags| {
            let has = |w: &str| flags.split_whitespace().any(|f| f == w);
            has("constant_tsc") && has("nonstop_tsc")
        })
}

/// One reading of the TSC, or 0 where there is none.
fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions (the agent never disables it).
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// A (TSC, CLOCK_MONOTONIC ns) pair, or None if every try was preempted.
pub fn pair() -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64, u64)> = None;
    for _ in 0..5 {
        let before = rdtsc();
        let ns = crate::recording::schedule::monotonic_ns();
        let after = rdtsc();
        let width = after.wrapping_sub(before);
        if after > before && width <= MAX_PAIR_WIDTH && best.is_none_or(|b| width < b.2) {
            best = Some((before + width / 2, ns, width));
        }
    }
    best.map(|(tsc, ns, _)| (tsc, ns))
}

/// The pairs of one window, converting its events' ticks.
#[derive(Debug, Default)]
pub struct TscClock {
    pairs: VecDeque<(u64, u64)>,
}

impl TscClock {
    /// Adds a pair, if it is later than the last in both clocks.
    pub fn add(&mut self, pair: Option<(u64, u64)>) {
        let Some((tsc, ns)) = pair else { return };
        if self.pairs.back().is_some_and(|&(t, n)| tsc <= t || ns <= n) {
            return;
        }
        self.pairs.push_back((tsc, ns));
        if self.pairs.len() > KEPT_PAIRS {
            self.pairs.pop_front();
        }
    }

    /// True once two pairs allow a conversion.
    pub fn ready(&self) -> bool {
        self.pairs.len() >= 2
    }

    /// `tsc` in CLOCK_MONOTONIC ns: interpolated between the pairs around
    /// it, extrapolated from the nearest two outside them; 0 without two
    /// pairs.
    pub fn ns(&self, tsc: u64) -> u64 {
        let mut times = [tsc];
        self.convert(&mut times);
        times[0]
    }

    /// [`TscClock::ns`] of each of `times`, in place. Times in ascending
    /// order (a drained batch's) share their segment's lookup: the drain
    /// converts millions a second.
    pub fn convert<'a>(&self, times: impl IntoIterator<Item = &'a mut u64>) {
        let n = self.pairs.len();
        // The segment (i-1, i) in use and the ticks it covers; i within
        // 1..n-1.
        let mut segment: Option<(Segment, u64, u64)> = None;
        for time in times {
            let tsc = *time;
            if n < 2 {
                *time = 0;
                continue;
            }
            let line = match segment {
                Some((line, low, high)) if low < tsc && tsc <= high => line,
                _ => {
                    // The first pair at or after tsc, kept within 1..n-1.
                    let i = self
                        .pairs
                        .partition_point(|&(t, _)| t < tsc)
                        .clamp(1, n - 1);
                    let low = if i == 1 { 0 } else { self.pairs[i - 1].0 };
                    let high = if i == n - 1 {
                        u64::MAX
                    } else {
                        self.pairs[i].0
                    };
                    let (t0, n0) = self.pairs[i - 1];
                    let (t1, n1) = self.pairs[i];
                    let line = Segment::new(t0, n0, t1, n1);
                    segment = Some((line, low, high));
                    line
                }
            };
            *time = line.ns(tsc);
        }
    }
}

/// The line through two pairs, in 32.32 fixed point: the drain converts
/// millions of times a second, and the floating-point conversion (with its
/// rounding) was a tenth of its time. Within 1 ns of the exact line
/// wherever the tracer's times can lie (see [`Segment::ns`]).
#[derive(Debug, Clone, Copy)]
struct Segment {
    t0: u64,
    n0: u64,
    /// Nanoseconds per tick × 2^32 (rounded down).
    slope: u128,
    t1: u64,
    n1: u64,
}

impl Segment {
    /// The segment from `(t0, n0)` to `(t1, n1)`; `t1 > t0` and `n1 > n0`
    /// ([`TscClock::add`] keeps only such pairs).
    fn new(t0: u64, n0: u64, t1: u64, n1: u64) -> Segment {
        let slope = (u128::from(n1 - n0) << 32) / u128::from(t1 - t0);
        Segment {
            t0,
            n0,
            slope,
            t1,
            n1,
        }
    }

    /// `tsc` in nanoseconds on the line, rounded to the nearest (0 below
    /// 0). The truncated slope errs by under 2^-32 ns per tick: under
    /// 1/2 ns for 2^31 ticks (half a second or more) from `t0`. Farther
    /// (a late event extrapolated, a corrupt time) the exact line is
    /// computed with a division.
    fn ns(&self, tsc: u64) -> u64 {
        const HALF: u128 = 1 << 31;
        const NEAR: u64 = 1 << 31;
        if tsc >= self.t0 {
            let ticks = tsc - self.t0;
            let offset = if ticks <= NEAR {
                ((u128::from(ticks) * self.slope + HALF) >> 32) as u64
            } else {
                self.exact(ticks)
            };
            self.n0.saturating_add(offset)
        } else {
            let ticks = self.t0 - tsc;
            let offset = if ticks <= NEAR {
                ((u128::from(ticks) * self.slope + HALF - 1) >> 32) as u64
            } else {
                self.exact(ticks)
            };
            self.n0.saturating_sub(offset)
        }
    }

    /// `ticks` × (n1 − n0) / (t1 − t0), rounded to the nearest, saturated.
    fn exact(&self, ticks: u64) -> u64 {
        let (dt, dn) = (u128::from(self.t1 - self.t0), u128::from(self.n1 - self.n0));
        // ticks and dn are under 2^64: the product fits.
        let offset = (u128::from(ticks) * dn + dt / 2) / dt;
        u64::try_from(offset).unwrap_or(u64::MAX)
    }
}

/// The clock word the tracer reported, as a name for messages and notes.
pub fn name(clock: u32) -> &'static str {
    if clock == abi::CLOCK_TSC {
        "the TSC"
    } else {
        "CLOCK_MONOTONIC"
    }
}

/// The clock word as the recording names it (`TraceEventBatch.clock`).
pub fn recorded_name(clock: u32) -> &'static str {
    if clock == abi::CLOCK_TSC {
        "TSC"
    } else {
        "CLOCK_MONOTONIC"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_between_two_pairs_interpolate_and_outside_extrapolate() {
        let mut clock = TscClock::default();
        clock.add(Some((1_000, 10_000)));
        assert!(!clock.ready());
        clock.add(Some((3_000, 11_000)));
        clock.add(Some((2_000, 12_000))); // not later in TSC: ignored
        clock.add(Some((5_000, 12_000)));
        assert_eq!(clock.ns(1_000), 10_000);
        assert_eq!(clock.ns(2_000), 10_500);
        assert_eq!(clock.ns(4_000), 11_500);
        assert_eq!(clock.ns(500), 9_750);
        assert_eq!(clock.ns(7_000), 13_000);
    }

    #[test]
    fn conversion_is_monotonic_across_segments() {
        let mut clock = TscClock::default();
        for (t, n) in [(0, 0), (100, 250), (300, 260), (1_000, 5_000)] {
            clock.add(Some((t, n)));
        }
        let times: Vec<u64> = (0..1_200).map(|t| clock.ns(t)).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // Converted together (the drain's way), in any order, the same.
        let mut together: Vec<u64> = (0..1_200).chain((0..1_200).rev()).collect();
        clock.convert(together.iter_mut());
        let expected: Vec<u64> = times.iter().chain(times.iter().rev()).copied().collect();
        assert_eq!(together, expected);
    }

    /// The floating-point conversion the fixed-point one replaced.
    fn float_ns(t0: u64, n0: u64, t1: u64, n1: u64, tsc: u64) -> f64 {
        let slope = (n1 - n0) as f64 / (t1 - t0) as f64;
        (n0 as f64 + (tsc as f64 - t0 as f64) * slope).max(0.0)
    }

    #[test]
    fn fixed_point_conversion_is_within_a_nanosecond_of_the_line() {
        // Pairs as the drain takes them (ms apart, ~1-4 GHz TSCs, a
        // monotonic clock days into the machine's life) and odd ones
        // (a slope above 1 ns per tick, a clock near 0, long segments).
        let segments = [
            (
                1_000_000_000_000u64,
                200_000_000_000_000u64,
                3_000_000,
                1_000_000,
            ),
            (5_000_000_000_000, 86_400_000_000_000, 2_100_017, 700_003),
            (123_456_789, 1_000, 4_000_000_000, 1_000_000_001),
            (77, 5, 3, 1_000),
            (1 << 40, 1 << 50, 1 << 33, 1 << 31),
        ];
        for (t0, n0, width, span) in segments {
            let (t1, n1) = (t0 + width, n0 + span);
            let segment = Segment::new(t0, n0, t1, n1);
            // Around and between the pairs, before and after, and far out.
            let mut ticks: Vec<u64> = (0..2_000).map(|i| t0 + i * (width / 1_000 + 1)).collect();
            ticks.extend((1..1_000).map(|i| t0.saturating_sub(i * 997)));
            ticks.extend((0..1_000).map(|i| t1 + i * 7_919));
            ticks.extend([0, t0 / 2, t1 + (1 << 31), t1 + (1 << 33), t0 + (1 << 36)]);
            for tsc in ticks {
                let fixed = segment.ns(tsc) as f64;
                let float = float_ns(t0, n0, t1, n1, tsc);
                // The float itself errs by its ulp (~0.03 ns at 2^48 ns).
                let tolerance = 1.0 + float * f64::EPSILON * 4.0;
                assert!(
                    (fixed - float).abs() <= tolerance,
                    "segment ({t0}, {n0}) -> ({t1}, {n1}), tsc {tsc}: {fixed} against {float}"
                );
            }
        }
    }

    #[test]
    fn a_pair_reads_this_machine_s_clocks() {
        // A loaded machine may preempt every try: then there is nothing
        // to check (no pair is the documented answer).
        if let (Some(a), Some(b)) = (pair(), pair()) {
            assert!(b.0 > a.0 && b.1 >= a.1);
        }
    }
}
