//! Where the compressed bytes of a recording go, by record kind.
//!
//! For every chunk, each kind of record (and each column of the sample
//! batches) is measured two ways: deflated on its own ("alone"), and by how
//! much the deflated chunk shrinks when that kind is left out ("marginal":
//! what the kind really costs, given that deflate shares a dictionary across
//! the chunk). Framing (file header, 16 bytes per chunk) is counted apart.
//!
//!     cargo run --release -p pydeep-format --example sizes -- FILE.pdr [LEVEL]

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use prost::Message;
use pydeep_format::proto::record::Kind;
use pydeep_format::proto::{Record, SampleBatch};
use pydeep_format::{Reader, FRAME_HEADER_LEN};

fn deflated(bytes: &[u8], level: u32) -> usize {
    if bytes.is_empty() {
        return 0;
    }
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::new(level));
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory").len()
}

fn kind_name(record: &Record) -> &'static str {
    match &record.kind {
        Some(Kind::Header(_)) => "header",
        Some(Kind::String(_)) => "string",
        Some(Kind::SourceFile(_)) => "source_file",
        Some(Kind::CodeObject(_)) => "code_object",
        Some(Kind::Frame(_)) => "frame",
        Some(Kind::Stack(_)) => "stack",
        Some(Kind::Thread(_)) => "thread",
        Some(Kind::Samples(_)) => "sample_batch",
        Some(Kind::Snapshot(_)) => "snapshot",
        Some(Kind::TraceEvents(_)) => "trace_events",
        Some(Kind::ProcessEvent(_)) => "process_event",
        Some(Kind::ChunkStart(_)) => "chunk_start",
        Some(Kind::Gap(_)) => "gap",
        Some(Kind::Footer(_)) => "footer",
        None => "unknown",
    }
}

const COLUMNS: [&str; 6] = [
    "column time_delta_ns",
    "column ticks",
    "column tick_offset_ns",
    "column thread",
    "column stack",
    "column flags",
];

/// `batch` with only column `column` (`keep`) or all but it (`!keep`).
fn select(batch: &SampleBatch, column: usize, keep: bool) -> SampleBatch {
    let mut out = batch.clone();
    let mut only = SampleBatch::default();
    match column {
        0 => std::mem::swap(&mut out.time_delta_ns, &mut only.time_delta_ns),
        1 => std::mem::swap(&mut out.ticks, &mut only.ticks),
        2 => std::mem::swap(&mut out.tick_offset_ns, &mut only.tick_offset_ns),
        3 => std::mem::swap(&mut out.thread, &mut only.thread),
        4 => std::mem::swap(&mut out.stack, &mut only.stack),
        _ => std::mem::swap(&mut out.flags, &mut only.flags),
    }
    if keep {
        only
    } else {
        out
    }
}

#[derive(Default)]
struct Cost {
    records: usize,
    raw: usize,
    alone: usize,
    marginal: isize,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: sizes FILE.pdr [LEVEL]");
    let level: u32 = args.next().map_or(6, |l| l.parse().expect("level 0-9"));
    let file_size = std::fs::metadata(&path).expect("stat").len() as usize;
    let mut reader = Reader::open(path.as_ref()).expect("open");
    let mut costs: BTreeMap<&'static str, Cost> = BTreeMap::new();
    let columns = COLUMNS;
    let mut chunks = 0usize;
    let mut payload_deflated = 0usize;
    let mut samples = 0usize;
    loop {
        let chunk = match reader.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                eprintln!("stopping: {error}");
                break;
            }
        };
        chunks += 1;
        let encoded: Vec<(&'static str, Vec<u8>)> = chunk
            .records
            .iter()
            .map(|r| (kind_name(r), r.encode_length_delimited_to_vec()))
            .collect();
        let full: Vec<u8> = encoded.iter().flat_map(|(_, b)| b.clone()).collect();
        let full_size = deflated(&full, level);
        payload_deflated += full_size;
        let mut kinds: Vec<&'static str> = encoded.iter().map(|(k, _)| *k).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let only: Vec<u8> = encoded
                .iter()
                .filter(|(k, _)| *k == kind)
                .flat_map(|(_, b)| b.clone())
                .collect();
            let rest: Vec<u8> = encoded
                .iter()
                .filter(|(k, _)| *k != kind)
                .flat_map(|(_, b)| b.clone())
                .collect();
            let cost = costs.entry(kind).or_default();
            cost.records += encoded.iter().filter(|(k, _)| *k == kind).count();
            cost.raw += only.len();
            cost.alone += deflated(&only, level);
            cost.marginal += full_size as isize - deflated(&rest, level) as isize;
        }
        for (column, name) in columns.iter().enumerate() {
            let mut rest = Vec::new();
            let mut only = Vec::new();
            for record in &chunk.records {
                match &record.kind {
                    Some(Kind::Samples(batch)) => {
                        if column == 0 {
                            samples += batch.len();
                        }
                        let rest_batch = Record {
                            kind: Some(Kind::Samples(select(batch, column, false))),
                        };
                        rest.extend(rest_batch.encode_length_delimited_to_vec());
                        only.extend(select(batch, column, true).encode_to_vec());
                    }
                    _ => rest.extend(record.encode_length_delimited_to_vec()),
                }
            }
            let cost = costs.entry(name).or_default();
            cost.raw += only.len();
            cost.alone += deflated(&only, level);
            cost.marginal += full_size as isize - deflated(&rest, level) as isize;
        }
    }
    let per = |bytes: f64| bytes / samples.max(1) as f64;
    println!(
        "{path}: {file_size} bytes, {samples} samples, {:.2} bytes/sample; {chunks} chunks; deflate level {level}",
        per(file_size as f64)
    );
    println!(
        "framing: {} bytes (file header + {FRAME_HEADER_LEN} per chunk); payloads deflated: {payload_deflated}",
        16 + chunks * FRAME_HEADER_LEN
    );
    println!("| kind | records | raw bytes | deflated alone | marginal (deflated) | marginal bytes/sample |");
    println!("|---|---|---|---|---|---|");
    for (kind, cost) in &costs {
        println!(
            "| {kind} | {} | {} | {} | {} | {:.2} |",
            cost.records,
            cost.raw,
            cost.alone,
            cost.marginal,
            per(cost.marginal as f64)
        );
    }
}
