//! Reading recordings back in tests.

use std::collections::HashMap;
use std::path::Path;

use pydeep_format::proto::{ProcessEventKind, SampleFlag};
use pydeep_format::{Event, Recording};

/// What a test needs of a recording: per distinct stack its function names
/// and sample count, plus the process events.
pub struct Read {
    /// Samples read.
    pub samples: u64,
    /// Samples flagged torn (left out of `stacks`).
    pub torn: u64,
    /// Function names of each distinct untorn stack (outermost first) and its sample count.
    pub stacks: Vec<(Vec<String>, u64)>,
    /// The same stacks with the sampler ticks their samples stand for (each
    /// sample's weight: more than 1 after ticks the sampler missed), which
    /// is what the viewer's profiles count.
    pub tick_stacks: Vec<(Vec<String>, u64)>,
    /// Process events: kind and code.
    pub events: Vec<(ProcessEventKind, i32)>,
    /// The footer's sample count, if the file has a footer.
    pub footer_samples: Option<u64>,
    /// The untorn samples in recording order, each as its index in
    /// `stacks`: for batches of consecutive samples.
    pub sequence: Vec<usize>,
}

/// Reads the whole recording at `path`, panicking on any format error.
pub fn read(path: &Path) -> Read {
    let mut recording = Recording::open(path).expect("open recording");
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut ticks: HashMap<u64, u64> = HashMap::new();
    let mut events = Vec::new();
    let mut samples = 0;
    let mut torn = 0;
    let mut footer_samples = None;
    let mut order: Vec<u64> = Vec::new();
    while let Some(event) = recording.next_event().expect("read event") {
        match event {
            Event::Sample(sample) => {
                samples += 1;
                // A torn stack may mix two moments: count it, but never as
                // evidence of where the program was.
                if sample.flags & SampleFlag::Torn as u32 != 0 {
                    torn += 1;
                } else {
                    *counts.entry(sample.stack).or_default() += 1;
                    order.push(sample.stack);
                    *ticks.entry(sample.stack).or_default() += u64::from(sample.weight);
                }
            }
            Event::Process(process) => events.push((process.kind(), process.code)),
            Event::Footer(footer) => footer_samples = Some(footer.sample_count),
            _ => {}
        }
    }
    let tables = recording.tables();
    let named = |counts: HashMap<u64, u64>| -> Vec<(Vec<String>, u64)> {
        counts
            .into_iter()
            .map(|(stack, count)| (stack_names(tables, stack), count))
            .collect()
    };
    let ids: Vec<u64> = counts.keys().copied().collect();
    let index: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let stacks = ids
        .iter()
        .map(|id| (stack_names(tables, *id), counts[id]))
        .collect();
    let sequence = order.iter().map(|id| index[id]).collect();
    let tick_stacks = named(ticks);
    Read {
        samples,
        torn,
        stacks,
        tick_stacks,
        events,
        footer_samples,
        sequence,
    }
}

impl Read {
    /// Sampler ticks the untorn samples stand for (their weights).
    pub fn kept_ticks(&self) -> u64 {
        self.tick_stacks.iter().map(|(_, ticks)| ticks).sum()
    }

    /// Sampler ticks of the untorn samples whose stack passes through a
    /// function called `name`.
    pub fn ticks_in(&self, name: &str) -> u64 {
        through(&self.tick_stacks, name)
    }

    /// Samples whose stack passes through a function called `name`.
    pub fn samples_in(&self, name: &str) -> u64 {
        through(&self.stacks, name)
    }

    /// For each of `batches` runs of consecutive untorn samples (the last
    /// takes the rest), how many pass through a function called `name`
    /// and how many pass through any of `names`.
    pub fn in_batches(&self, name: &str, names: &[&str], batches: usize) -> Vec<(u64, u64)> {
        let passes = |stack: usize, name: &str| self.stacks[stack].0.iter().any(|n| n == name);
        let size = (self.sequence.len() / batches.max(1)).max(1);
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, chunk) in self.sequence.chunks(size).enumerate() {
            if i >= batches && !out.is_empty() {
                let last = out.last_mut().unwrap();
                for &stack in chunk {
                    last.0 += u64::from(passes(stack, name));
                    last.1 += u64::from(names.iter().any(|n| passes(stack, n)));
                }
                continue;
            }
            let mut counts = (0, 0);
            for &stack in chunk {
                counts.0 += u64::from(passes(stack, name));
                counts.1 += u64::from(names.iter().any(|n| passes(stack, n)));
            }
            out.push(counts);
        }
        out
    }

    /// Sampler ticks of the untorn samples whose innermost frame is a
    /// function called `name` (its own time).
    pub fn own_ticks_in(&self, name: &str) -> u64 {
        self.tick_stacks
            .iter()
            .filter(|(names, _)| names.last().is_some_and(|n| n == name))
            .map(|(_, ticks)| ticks)
            .sum()
    }
}

/// The counts of the `stacks` that pass through a function called `name`.
fn through(stacks: &[(Vec<String>, u64)], name: &str) -> u64 {
    stacks
        .iter()
        .filter(|(names, _)| names.iter().any(|n| n == name))
        .map(|(_, count)| count)
        .sum()
}

/// The function names of recorded stack `stack`, innermost first as
/// `Tables::stack_frames` gives them.
pub fn stack_names(tables: &pydeep_format::Tables, stack: u64) -> Vec<String> {
    tables
        .stack_frames(stack)
        .into_iter()
        .map(|frame| {
            let code = tables.frames[&frame].code;
            tables.string(tables.code_objects[&code].name).to_owned()
        })
        .collect()
}
