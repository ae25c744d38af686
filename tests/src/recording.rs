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
    let stacks = named(counts);
    let tick_stacks = named(ticks);
    Read {
        samples,
        torn,
        stacks,
        tick_stacks,
        events,
        footer_samples,
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

/// The (file name, function name) of frame `frame` in `tables`, or empty
/// strings if it is unknown.
pub fn frame_name(tables: &pydeep_format::Tables, frame: u64) -> (String, String) {
    tables
        .frames
        .get(&frame)
        .and_then(|f| tables.code_objects.get(&f.code))
        .map(|c| {
            (
                tables.string(c.filename).to_owned(),
                tables.string(c.name).to_owned(),
            )
        })
        .unwrap_or_default()
}
