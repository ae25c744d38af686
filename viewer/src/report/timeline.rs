//! The report's timeline: per thread, the ticks its samples stand for in
//! each of a fixed number of time buckets, and how many of those were
//! ticks the sampler missed (a sample after missed ticks stands for them).
//! A bucket without ticks is a gap: the thread was not sampled (idle and
//! left out, filtered, or not running). Memory is threads × buckets.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};

use crate::aggregate::{sample_period_ns, ThreadInfo};
use crate::filter::Filter;
use crate::input::Input;

/// Ticks per bucket of one thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadLine {
    /// Ticks (samples' weights) per bucket.
    pub ticks: Vec<u64>,
    /// Of those, ticks the sampler missed (weight − 1 per sample).
    pub missed: Vec<u64>,
}

/// Per-thread ticks over `buckets` equal spans of `[first_ns, last_ns]`.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Stream time of the first bucket's start.
    pub first_ns: u64,
    /// Width of a bucket in nanoseconds (at least 1).
    pub bucket_ns: u64,
    /// Lines by file-local thread id.
    pub threads: BTreeMap<u32, (ThreadInfo, ThreadLine)>,
}

impl Timeline {
    /// Streams the rest of `input`, counting the samples `filter` passes
    /// between `first_ns` and `last_ns` (stream times, inclusive) into
    /// `buckets` buckets.
    pub fn read<R: Read>(
        input: &mut Input<R>,
        filter: &Filter,
        (first_ns, last_ns): (u64, u64),
        buckets: usize,
    ) -> Self {
        let buckets = buckets.max(1);
        let period = sample_period_ns(input.header());
        let span = last_ns.saturating_sub(first_ns) + period;
        let bucket_ns = span.div_ceil(buckets as u64).max(1);
        let mut bound = filter.bind(input.header());
        let mut threads: BTreeMap<u32, (ThreadInfo, ThreadLine)> = BTreeMap::new();
        input.for_each_sample(|tables, sample| {
            if !bound.accepts(tables, sample) || sample.time_ns < first_ns {
                return;
            }
            let index = ((sample.time_ns - first_ns) / bucket_ns) as usize;
            if index >= buckets {
                return;
            }
            let (_, line) = threads.entry(sample.thread).or_insert_with(|| {
                (
                    ThreadInfo::from_tables(tables, sample.thread),
                    ThreadLine {
                        ticks: vec![0; buckets],
                        missed: vec![0; buckets],
                    },
                )
            });
            let weight = u64::from(sample.weight.max(1));
            line.ticks[index] += weight;
            line.missed[index] += weight - 1;
        });
        Timeline {
            first_ns,
            bucket_ns,
            threads,
        }
    }

    /// As JSON: `first_ns`, `bucket_ns`, `period_ns`, `threads`
    /// [{`thread`, `describe`, `ticks`, `missed`}].
    pub fn json(&self, start_clock_ns: u64, period_ns: u64) -> Value {
        json!({
            "first_seconds": self.first_ns.saturating_sub(start_clock_ns) as f64 / 1e9,
            "bucket_ns": self.bucket_ns,
            "period_ns": period_ns,
            "threads": self.threads.iter().map(|(id, (info, line))| json!({
                "thread": id,
                "describe": info.describe(),
                "ticks": line.ticks,
                "missed": line.missed,
            })).collect::<Vec<_>>(),
        })
    }
}
