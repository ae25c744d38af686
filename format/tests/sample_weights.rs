//! Sample weights (format version 3): a sample standing for more than one
//! sampler tick reads back with its weight, and a batch whose samples all
//! stand for one tick carries no weight column.

mod common;

use pydeep_format::proto::{self, record::Kind};
use pydeep_format::{Event, Reader, Recording, Writer, WriterOptions};

fn write(weights: &[u32]) -> Vec<u8> {
    let mut writer = Writer::new(Vec::new(), common::header(), WriterOptions::default()).unwrap();
    let start = common::header().start_clock_ns;
    for (i, &weight) in weights.iter().enumerate() {
        let time = start + 1_000 * i as u64;
        writer.weighted_sample(time, 1, 0, 0, weight).unwrap();
    }
    writer.finish(proto::Footer::default()).unwrap()
}

fn read_weights(bytes: &[u8]) -> Vec<u32> {
    let mut recording = Recording::new(Reader::new(bytes).unwrap()).unwrap();
    let mut weights = Vec::new();
    while let Some(event) = recording.next_event().unwrap() {
        if let Event::Sample(sample) = event {
            weights.push(sample.weight);
        }
    }
    weights
}

fn weight_columns(bytes: &[u8]) -> Vec<usize> {
    let mut reader = Reader::new(bytes).unwrap();
    let mut columns = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        for record in chunk.records {
            if let Some(Kind::Samples(batch)) = record.kind {
                columns.push(batch.weight.len());
            }
        }
    }
    columns
}

#[test]
fn weights_read_back_and_cost_nothing_when_all_are_one() {
    let weights = [1, 1, 3, 1, 7, 1];
    let bytes = write(&weights);
    assert_eq!(read_weights(&bytes), weights);
    assert_eq!(weight_columns(&bytes), [6]);
    // The first sample of a batch standing for more than one tick.
    assert_eq!(read_weights(&write(&[4, 1, 1])), [4, 1, 1]);
    // A weight of 0 means 1: a sample stands for its own tick at least.
    assert_eq!(read_weights(&write(&[0, 2])), [1, 2]);
    let ones = write(&[1; 50]);
    assert_eq!(read_weights(&ones), [1; 50]);
    assert_eq!(weight_columns(&ones), [0]);
}
