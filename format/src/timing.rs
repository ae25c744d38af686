//! Sample times on the sampler's tick grid (format version 2).
//!
//! A sampler on a drift-free schedule takes tick `n` at `origin + n *
//! interval + lateness`, where the lateness is usually small. Version 1
//! stored the delta from the previous sample: about one interval plus the
//! difference of two latenesses, three varint bytes with random low bits
//! even when the sampler is perfectly on time. Version 2 stores, for each
//! sample, a number of `ticks` and an `offset`:
//!
//! * `ticks == 0` (samples of the same tick, the first sample, anything off
//!   the grid): `time = previous + offset`, a plain delta (0 for the other
//!   threads of a tick);
//! * `ticks > 0`: `time = grid + ticks * interval + offset`, where `grid` is
//!   the grid point of an earlier sample. `offset` is then the lateness
//!   relative to the earliest lateness seen: a few hundred nanoseconds for
//!   an on-time sampler, one or two bytes.
//!
//! Both sides run the same [`SampleClock`], so the grid is never written:
//! it starts at the first sample of each run of batches with one interval,
//! moves down to any sample earlier than it (a negative offset), and moves
//! up by the smallest offset of [`CREEP_WINDOW`] consecutive grid samples
//! that were all late, so a grid anchored on a late sample recovers. All
//! arithmetic wraps, so every `u64` time round-trips exactly, whatever the
//! interval or the order of times.

/// After this many consecutive samples coded on the grid, all later than
/// it, the grid moves up by the smallest of their offsets.
pub(crate) const CREEP_WINDOW: u32 = 64;

/// The state shared by the writer and the reader of sample times.
#[derive(Debug, Clone)]
pub(crate) struct SampleClock {
    /// Time of the previous sample (the header's start before the first).
    previous: u64,
    /// Grid point of the last sample coded on the grid; `None` until the
    /// first sample of a run of batches with one interval.
    grid: Option<u64>,
    /// Interval of the batch being coded (0: version-1 deltas).
    interval: u64,
    /// Smallest offset of the current run of late grid samples.
    least_offset: i64,
    /// Length of that run.
    late_run: u32,
}

impl SampleClock {
    /// A clock whose first sample counts from `start` (the header's
    /// `start_clock_ns`).
    pub fn new(start: u64) -> Self {
        SampleClock {
            previous: start,
            grid: None,
            interval: 0,
            least_offset: i64::MAX,
            late_run: 0,
        }
    }

    /// Starts a batch coded with `interval` (0: version-1 deltas). A change
    /// of interval starts a new grid at the next sample.
    pub fn start_batch(&mut self, interval: u64) {
        if interval != self.interval {
            self.interval = interval;
            self.grid = None;
            self.late_run = 0;
            self.least_offset = i64::MAX;
        }
    }

    /// Version 1: the delta of `time` from the previous sample.
    pub fn encode_delta(&mut self, time: u64) -> u64 {
        let delta = time.wrapping_sub(self.previous);
        self.previous = time;
        delta
    }

    /// Version 1: the time of a sample stored as `delta`.
    pub fn decode_delta(&mut self, delta: u64) -> u64 {
        self.previous = self.previous.wrapping_add(delta);
        self.previous
    }

    /// Version 2: `(ticks, offset)` of `time`, with the interval of the
    /// current batch (which must not be 0).
    pub fn encode(&mut self, time: u64) -> (u64, i64) {
        let interval = self.interval;
        let ticks = match self.grid {
            Some(grid) if interval > 0 => {
                // Ticks are due at grid points and taken late, never early:
                // round down, with a sixteenth of an interval of slack for a
                // grid anchored slightly late.
                let distance = i128::from(time.wrapping_sub(grid) as i64);
                let interval = i128::from(interval);
                let ticks = (distance + interval / 16).div_euclid(interval);
                u64::try_from(ticks).unwrap_or(0)
            }
            _ => 0,
        };
        let offset = if ticks == 0 {
            time.wrapping_sub(self.previous) as i64
        } else {
            let base = self
                .grid
                .unwrap_or(0)
                .wrapping_add(ticks.wrapping_mul(interval));
            time.wrapping_sub(base) as i64
        };
        let decoded = self.decode(ticks, offset);
        debug_assert_eq!(decoded, time);
        (ticks, offset)
    }

    /// Version 2: the time of a sample stored as `(ticks, offset)`. Any
    /// values give some time (a hostile file cannot make this panic).
    pub fn decode(&mut self, ticks: u64, offset: i64) -> u64 {
        let time = match self.grid {
            Some(grid) if ticks > 0 => {
                let base = grid.wrapping_add(ticks.wrapping_mul(self.interval));
                let time = base.wrapping_add(offset as u64);
                if offset < 0 {
                    // Earlier than the grid: the grid was anchored late.
                    self.grid = Some(time);
                    self.late_run = 0;
                    self.least_offset = i64::MAX;
                } else {
                    self.grid = Some(base);
                    self.least_offset = self.least_offset.min(offset);
                    self.late_run += 1;
                    if self.late_run >= CREEP_WINDOW {
                        // Every recent sample was late: the grid is.
                        self.grid = Some(base.wrapping_add(self.least_offset as u64));
                        self.late_run = 0;
                        self.least_offset = i64::MAX;
                    }
                }
                time
            }
            _ => {
                let time = self.previous.wrapping_add(offset as u64);
                if self.grid.is_none() {
                    self.grid = Some(time);
                }
                time
            }
        };
        self.previous = time;
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(start: u64, interval: u64, times: &[u64]) -> Vec<(u64, i64)> {
        let mut writer = SampleClock::new(start);
        let mut reader = SampleClock::new(start);
        writer.start_batch(interval);
        reader.start_batch(interval);
        let coded: Vec<(u64, i64)> = times.iter().map(|&t| writer.encode(t)).collect();
        let decoded: Vec<u64> = coded.iter().map(|&(k, o)| reader.decode(k, o)).collect();
        assert_eq!(decoded, times);
        coded
    }

    #[test]
    fn an_on_time_sampler_codes_one_tick_and_its_small_lateness() {
        let times: Vec<u64> = (0..100u64)
            .flat_map(|n| {
                let t = 5_000_000 + n * 1_000_000 + (n * 37) % 300;
                [t, t]
            })
            .collect();
        let coded = round_trip(0, 1_000_000, &times);
        assert_eq!(coded[0], (0, 5_000_000));
        for (n, pair) in coded.chunks(2).enumerate().skip(1) {
            assert_eq!(pair[0].0, 1, "tick {n}");
            assert!((-300..300).contains(&pair[0].1), "tick {n}: {:?}", pair[0]);
            assert_eq!(pair[1], (0, 0), "the second thread of tick {n}");
        }
    }

    #[test]
    fn missed_ticks_are_counted_and_a_late_anchor_recovers() {
        // The first sample is 400 us late; later ones are on time, some
        // ticks are missed.
        let mut times = vec![400_000];
        times.extend(
            (1..300u64)
                .filter(|n| n % 7 != 0)
                .map(|n| n * 1_000_000 + 50),
        );
        let coded = round_trip(0, 1_000_000, &times);
        let tail = &coded[coded.len() - 100..];
        assert!(tail.iter().all(|&(_, offset)| (0..1_000).contains(&offset)));
        assert!(coded.iter().any(|&(ticks, _)| ticks == 2));
    }

    #[test]
    fn a_grid_anchored_early_creeps_up_to_the_samples() {
        // Samples all 300 us late relative to the first one's phase would
        // never re-anchor downwards; the creep moves the grid up.
        let mut times = vec![1_000_000];
        times.extend((2..400u64).map(|n| n * 1_000_000 + 300_000));
        let coded = round_trip(0, 1_000_000, &times);
        let tail = &coded[coded.len() - 100..];
        assert!(
            tail.iter()
                .all(|&(ticks, offset)| ticks == 1 && offset == 0),
            "{tail:?}"
        );
    }

    #[test]
    fn any_times_round_trip_including_steps_back_and_wrapping() {
        let times = [
            u64::MAX,
            0,
            5,
            5,
            u64::MAX / 2,
            3,
            1_000_003,
            2_000_001,
            1_999_999,
            i64::MAX as u64,
            (i64::MAX as u64) + 1_000_000,
        ];
        for interval in [1, 3, 1_000, 1_000_000, u64::MAX, i64::MAX as u64] {
            round_trip(7, interval, &times);
        }
    }

    #[test]
    fn a_change_of_interval_starts_a_new_grid() {
        let mut writer = SampleClock::new(0);
        let mut reader = SampleClock::new(0);
        let mut all = Vec::new();
        for (interval, times) in [
            (
                1_000_000u64,
                (1..50u64).map(|n| n * 1_000_000 + 20).collect::<Vec<_>>(),
            ),
            (
                3_000_000,
                (0..50u64)
                    .map(|n| 60_000_000 + n * 3_000_000 + 700)
                    .collect(),
            ),
        ] {
            writer.start_batch(interval);
            reader.start_batch(interval);
            for t in times {
                let (ticks, offset) = writer.encode(t);
                all.push((ticks, offset));
                assert_eq!(reader.decode(ticks, offset), t);
            }
        }
        assert!(all[60..]
            .iter()
            .all(|&(ticks, offset)| ticks == 1 && offset == 0));
    }
}
