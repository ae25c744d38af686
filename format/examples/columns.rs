//! Where the bytes of a recording's samples go: for each SampleBatch column,
//! its size as packed varints and deflated on its own, plus a histogram of
//! time deltas.
//!
//!     cargo run --release -p pydeep-format --example columns -- FILE.pdr

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use prost::Message;
use pydeep_format::proto::record::Kind;
use pydeep_format::Reader;

fn deflated(bytes: &[u8]) -> usize {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::new(6));
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory").len()
}

fn varints<T: Copy + Into<u64>>(values: &[T], out: &mut Vec<u8>) {
    for &value in values {
        prost::encoding::encode_varint(value.into(), out);
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: columns FILE.pdr");
    let mut reader = Reader::open(path.as_ref()).expect("open");
    let file_size = std::fs::metadata(&path).expect("stat").len();
    let mut columns: [(&str, Vec<u8>); 4] = [
        ("time_delta_ns", Vec::new()),
        ("thread", Vec::new()),
        ("stack", Vec::new()),
        ("flags", Vec::new()),
    ];
    let mut chunk_columns = [0usize; 4];
    let mut samples = 0usize;
    let mut batch_bytes = 0usize;
    let mut deltas = [0usize; 6];
    loop {
        let chunk = match reader.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                eprintln!("stopping: {error}");
                break;
            }
        };
        let mut per_chunk: [Vec<u8>; 4] = Default::default();
        for record in chunk.records {
            let Some(Kind::Samples(batch)) = record.kind else {
                continue;
            };
            samples += batch.len();
            batch_bytes += batch.encoded_len();
            for &delta in &batch.time_delta_ns {
                let bucket = match delta {
                    0 => 0,
                    1..=999 => 1,
                    1_000..=99_999 => 2,
                    100_000..=999_999 => 3,
                    1_000_000..=9_999_999 => 4,
                    _ => 5,
                };
                deltas[bucket] += 1;
            }
            varints(&batch.time_delta_ns, &mut per_chunk[0]);
            varints(&batch.thread, &mut per_chunk[1]);
            varints(&batch.stack, &mut per_chunk[2]);
            varints(&batch.flags, &mut per_chunk[3]);
        }
        for (i, column) in per_chunk.iter().enumerate() {
            chunk_columns[i] += if column.is_empty() {
                0
            } else {
                deflated(column)
            };
            columns[i].1.extend_from_slice(column);
        }
    }
    println!(
        "{path}: {file_size} bytes, {samples} samples, {:.2} bytes/sample",
        file_size as f64 / samples.max(1) as f64
    );
    println!(
        "sample batches: {batch_bytes} bytes before deflate ({:.2}/sample)",
        batch_bytes as f64 / samples.max(1) as f64
    );
    println!("| column | varint bytes/sample | deflated per chunk, bytes/sample |");
    println!("|---|---|---|");
    for (i, (name, bytes)) in columns.iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.3} |",
            bytes.len() as f64 / samples.max(1) as f64,
            chunk_columns[i] as f64 / samples.max(1) as f64
        );
    }
    let names = [
        "0",
        "1 ns-1 us",
        "1-100 us",
        "0.1-1 ms",
        "1-10 ms",
        ">= 10 ms",
    ];
    let histogram: Vec<String> = names
        .iter()
        .zip(deltas)
        .map(|(name, count)| format!("{name}: {count}"))
        .collect();
    println!("time deltas: {}", histogram.join(", "));
}
