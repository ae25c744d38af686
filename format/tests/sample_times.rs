//! Sample times: the writer codes each batch on the tick grid or as deltas,
//! whichever is smaller, and every time reads back exactly either way.

mod common;

use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{Event, Reader, Recording, Writer, WriterOptions};

/// xorshift64: deterministic noise for latenesses.
fn noise(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Writes `times` (one sample of thread 1 or 2 each) with a header asking
/// for `rate_hz`; returns the file's bytes.
fn write(rate_hz: f64, times: &[u64]) -> Vec<u8> {
    let mut header = common::header();
    header.sampling = Some(proto::SamplingConfig {
        rate_hz,
        ..Default::default()
    });
    let options = WriterOptions {
        flush_interval: std::time::Duration::from_secs(3600),
        max_samples_per_chunk: 1_000,
        ..WriterOptions::default()
    };
    let mut writer = Writer::new(Vec::new(), header, options).unwrap();
    for (i, &time) in times.iter().enumerate() {
        writer.sample(time, 1 + (i % 2) as u32, 0, 2).unwrap();
    }
    writer.finish(proto::Footer::default()).unwrap()
}

/// The sample times the reader returns, and the tick interval of each batch.
fn read(bytes: &[u8]) -> (Vec<u64>, Vec<u64>) {
    let mut recording = Recording::new(Reader::new(bytes).unwrap()).unwrap();
    let mut times = Vec::new();
    while let Some(event) = recording.next_event().unwrap() {
        if let Event::Sample(sample) = event {
            times.push(sample.time_ns);
        }
    }
    let mut reader = Reader::new(bytes).unwrap();
    let mut intervals = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        for record in chunk.records {
            if let Some(Kind::Samples(batch)) = record.kind {
                intervals.push(batch.tick_interval_ns);
            }
        }
    }
    (times, intervals)
}

/// Two threads per tick at `interval`, `late(n)` ns late, some ticks missed.
fn ticks(interval: u64, count: u64, mut late: impl FnMut(u64) -> u64) -> Vec<u64> {
    let start = common::header().start_clock_ns + 123_456;
    (0..count)
        .filter(|n| n % 17 != 5)
        .flat_map(|n| {
            let time = start + n * interval + late(n);
            [time, time]
        })
        .collect()
}

#[test]
fn an_on_time_sampler_is_coded_on_the_grid_and_reads_back_exactly() {
    let mut state = 7;
    let times = ticks(1_000_000, 5_000, |_| noise(&mut state) % 800);
    let bytes = write(1000.0, &times);
    let (read_times, intervals) = read(&bytes);
    assert_eq!(read_times, times);
    assert!(intervals.iter().all(|&i| i == 1_000_000), "{intervals:?}");
    // The same samples with no rate in the header are coded as deltas.
    let mut header_less = common::header();
    header_less.sampling = None;
    let mut writer = Writer::new(
        Vec::new(),
        header_less,
        WriterOptions {
            flush_interval: std::time::Duration::from_secs(3600),
            max_samples_per_chunk: 1_000,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    for (i, &time) in times.iter().enumerate() {
        writer.sample(time, 1 + (i % 2) as u32, 0, 2).unwrap();
    }
    let deltas = writer.finish(proto::Footer::default()).unwrap();
    let (delta_times, delta_intervals) = read(&deltas);
    assert_eq!(delta_times, times);
    assert!(delta_intervals.iter().all(|&i| i == 0));
    assert!(
        bytes.len() * 100 < deltas.len() * 95,
        "grid {} bytes, deltas {} bytes",
        bytes.len(),
        deltas.len()
    );
}

#[test]
fn a_sampler_far_behind_its_rate_is_coded_as_deltas_and_reads_back_exactly() {
    // 100 kHz asked, ticks taken every 30-90 us at random.
    let mut state = 11;
    let mut time = common::header().start_clock_ns;
    let times: Vec<u64> = (0..5_000)
        .map(|_| {
            time += 30_000 + noise(&mut state) % 60_000;
            time
        })
        .collect();
    let bytes = write(100_000.0, &times);
    let (read_times, intervals) = read(&bytes);
    assert_eq!(read_times, times);
    assert!(intervals.contains(&0), "{intervals:?}");
}

#[test]
fn a_mix_of_on_time_and_behind_batches_reads_back_exactly() {
    let mut state = 3;
    let mut times = ticks(1_000_000, 1_500, |_| noise(&mut state) % 500);
    let mut time = *times.last().unwrap();
    for _ in 0..1_500 {
        time += 1_000 + noise(&mut state) % 3_000_000;
        times.push(time);
    }
    let last = time;
    times.extend(ticks(1_000_000, 1_500, |n| last + n % 3));
    let bytes = write(1000.0, &times);
    let (read_times, intervals) = read(&bytes);
    assert_eq!(read_times, times);
    assert!(
        intervals.contains(&0) && intervals.contains(&1_000_000),
        "{intervals:?}"
    );
}
