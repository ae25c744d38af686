//! Rewrites a recording with this build's writer, chunk for chunk: the same
//! records and samples, encoded as this version encodes them. Compares
//! encodings on the very same data, whatever the machine's load was when it
//! was recorded.
//!
//!     cargo run --release -p pydeep-format --example transcode -- IN.pdr OUT.pdr

use pydeep_format::proto::record::Kind;
use pydeep_format::{Event, Reader, Recording, Writer, WriterOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let input = args.next().expect("usage: transcode IN.pdr OUT.pdr");
    let output = args.next().expect("usage: transcode IN.pdr OUT.pdr");
    // Sample times as the reader of the input's version decodes them.
    let mut times = Vec::new();
    let mut recording = Recording::open(input.as_ref()).expect("open");
    while let Some(event) = recording.next_event().expect("readable") {
        if let Event::Sample(sample) = event {
            times.push(sample.time_ns);
        }
    }
    let mut reader = Reader::open(input.as_ref()).expect("open");
    let mut writer: Option<Writer<std::fs::File>> = None;
    let mut next_time = times.into_iter();
    let options = WriterOptions {
        // Chunks are cut where the input's were.
        flush_interval: std::time::Duration::from_secs(3600),
        max_samples_per_chunk: usize::MAX,
        ..WriterOptions::default()
    };
    while let Some(chunk) = reader.next_chunk().expect("readable") {
        for record in chunk.records {
            let Some(kind) = record.kind else { continue };
            match (kind, writer.as_mut()) {
                (Kind::Header(header), None) => {
                    writer = Some(
                        Writer::create(output.as_ref(), true, header, options.clone())
                            .expect("create"),
                    );
                }
                (Kind::Footer(footer), Some(_)) => {
                    writer.take().unwrap().finish(footer).expect("finish");
                }
                (Kind::Samples(batch), Some(writer)) => {
                    for i in 0..batch.len() {
                        let time = next_time.next().expect("a time per sample");
                        writer
                            .sample(time, batch.thread[i], batch.stack[i], batch.flags[i])
                            .expect("sample");
                    }
                }
                (kind, Some(writer)) => writer.record(kind).expect("record"),
                (_, None) => panic!("the file does not start with a header"),
            }
        }
        if let Some(writer) = writer.as_mut() {
            if !chunk.is_final {
                writer.flush().expect("flush");
            }
        }
    }
    let before = std::fs::metadata(&input).expect("stat").len();
    let after = std::fs::metadata(&output).expect("stat").len();
    println!("{input}: {before} bytes -> {output}: {after} bytes");
}
