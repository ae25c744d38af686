//! speedscope's JSON file format
//! (<https://www.speedscope.app/file-format-schema.json>): one "sampled"
//! profile per thread over a shared frame table.
//!
//! Samples are written aggregated, one entry per distinct stack weighted by
//! its time in nanoseconds (its sampler ticks × the sampling period, the
//! rule every output follows), which keeps the file and the memory used
//! bounded by distinct stacks; speedscope's left-heavy and sandwich views
//! show the same as with one entry per sample. The file opens on the
//! busiest thread (most ticks; the first by id among equals).

use std::io::{self, Write};

use serde::Serialize;

use crate::aggregate::Profile;
use crate::symbols::{Granularity, SymbolId};

const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    name: String,
    exporter: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    shared: Shared<'a>,
    profiles: Vec<SampledProfile<'a>>,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<Frame<'a>>,
}

#[derive(Serialize)]
struct Frame<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct SampledProfile<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<&'a [SymbolId]>,
    weights: Vec<u64>,
}

/// Writes `profile` as a speedscope file named `name`.
pub fn write(profile: &Profile, name: &str, out: impl Write) -> io::Result<()> {
    let granularity = profile.symbols.granularity();
    let frames = profile
        .symbols
        .all()
        .iter()
        .map(|symbol| Frame {
            name: match (granularity, symbol.instruction_offset) {
                (Granularity::Function, _) => symbol.function.clone(),
                (_, Some(offset)) => format!("{}:{} @ +{offset}", symbol.function, symbol.line),
                (_, None) => format!("{}:{}", symbol.function, symbol.line),
            },
            file: (!symbol.file.is_empty()).then_some(symbol.file.as_str()),
            line: (symbol.line != 0 || symbol.first_line != 0).then_some(if symbol.line != 0 {
                symbol.line
            } else {
                symbol.first_line
            }),
        })
        .collect();

    let period = profile.sample_period_ns();
    let mut profiles = Vec::new();
    let mut active_profile_index = 0;
    let mut most = 0;
    for (index, thread) in profile.threads.values().enumerate() {
        let stacks = profile.stacks.iter().filter(|s| s.thread == thread.id);
        let (samples, weights): (Vec<&[SymbolId]>, Vec<u64>) = stacks
            .map(|s| (s.frames.as_slice(), s.count.saturating_mul(period)))
            .unzip();
        if thread.samples > most {
            most = thread.samples;
            active_profile_index = index;
        }
        profiles.push(SampledProfile {
            kind: "sampled",
            name: thread.describe(),
            unit: "nanoseconds",
            start_value: 0,
            end_value: thread.samples.saturating_mul(period),
            samples,
            weights,
        });
    }
    let file = File {
        schema: SCHEMA,
        name: name.to_string(),
        exporter: format!("pydeep-view {}", env!("CARGO_PKG_VERSION")),
        active_profile_index,
        shared: Shared { frames },
        profiles,
    };
    let mut out = io::BufWriter::new(out);
    serde_json::to_writer(&mut out, &file)?;
    out.flush()
}
