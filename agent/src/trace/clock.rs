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
        // The segment (i-1, i) in use and its bounds; i within 1..n-1.
        let mut segment: Option<(usize, u64, u64)> = None;
        for time in times {
            let tsc = *time;
            if n < 2 {
                *time = 0;
                continue;
            }
            let i = match segment {
                Some((i, low, high)) if low < tsc && tsc <= high => i,
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
                    segment = Some((i, low, high));
                    i
                }
            };
            let (t0, n0) = self.pairs[i - 1];
            let (t1, n1) = self.pairs[i];
            let slope = (n1 - n0) as f64 / (t1 - t0) as f64;
            let offset = (tsc as f64 - t0 as f64) * slope;
            *time = (n0 as f64 + offset).round().max(0.0) as u64;
        }
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

    #[test]
    fn a_pair_reads_this_machine_s_clocks() {
        // A loaded machine may preempt every try: then there is nothing
        // to check (no pair is the documented answer).
        if let (Some(a), Some(b)) = (pair(), pair()) {
            assert!(b.0 > a.0 && b.1 >= a.1);
        }
    }
}
