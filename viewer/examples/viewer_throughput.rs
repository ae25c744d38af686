//! Measures how many samples per second each viewer output is produced at,
//! on a synthetic recording of 10 million samples (8 threads, thousands of
//! distinct stacks that share prefixes, runs of repeated stacks as a real
//! program has), and the peak memory of each.
//!
//!     cargo run --release -p pydeep-view --example viewer_throughput [-- SAMPLES [OUTPUT]]
//!
//! OUTPUT keeps only the outputs whose name contains it (e.g. `report`).
//!
//! Outputs are written to a byte-counting sink so that the figures measure
//! the viewer, not the disk. Results go into notes/viewer.md by hand.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use pydeep_format::proto::{self, SampleFlag};
use pydeep_format::{FrameKey, Writer, WriterOptions};
use pydeep_view::aggregate::Profile;
use pydeep_view::filter::Filter;
use pydeep_view::flamegraph::FlamegraphOptions;
use pydeep_view::input::Input;
use pydeep_view::pprof::PprofOptions;
use pydeep_view::symbols::Granularity;
use pydeep_view::{chrome, collapsed, flamegraph, pprof, speedscope, top};

const THREADS: u32 = 8;
const FUNCTIONS: u64 = 400;
const STACKS_PER_THREAD: usize = 600;
const PERIOD_NS: u64 = 1_000_000;

/// xorshift64*: deterministic, dependency-free.
struct Random(u64);
impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn generate(path: &Path, samples: u64) -> io::Result<()> {
    let header = proto::Header {
        pid: 1234,
        argv: vec!["python3".into(), "bench.py".into()],
        sampling: Some(proto::SamplingConfig {
            rate_hz: 1e9 / PERIOD_NS as f64,
            ..Default::default()
        }),
        start_clock_ns: 1_000_000_000,
        ..Default::default()
    };
    let file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut writer =
        Writer::new(file, header, WriterOptions::default()).map_err(io::Error::other)?;
    let mut codes = Vec::new();
    for index in 0..FUNCTIONS {
        let id = writer.next_code_id();
        let file_name = writer.intern_string(&format!("/srv/app/module{}.py", index % 40));
        let name = writer.intern_string(&format!("function_{index}"));
        writer.define_code_object(proto::CodeObjectDef {
            id,
            filename: file_name,
            name,
            qualname: name,
            first_line: 10 * (index as u32 % 50) + 1,
            ..Default::default()
        });
        codes.push(id);
    }
    for thread in 1..=THREADS {
        let name = writer.intern_string(&format!("worker-{thread}"));
        writer.define_thread(proto::ThreadDef {
            id: thread,
            pid: 1234,
            native_id: 5000 + u64::from(thread),
            name,
            is_main: thread == 1,
            ..Default::default()
        });
    }
    // Each thread's stacks: random walks down a call tree, so they share
    // prefixes; depth 8..40.
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut pools: Vec<Vec<u64>> = Vec::new();
    for _ in 0..THREADS {
        let mut pool = Vec::new();
        for _ in 0..STACKS_PER_THREAD {
            let depth = 8 + random.below(33) as usize;
            let mut stack = Vec::with_capacity(depth);
            let mut function = random.below(8);
            for level in 0..depth {
                let line = 1 + random.below(if level < 4 { 2 } else { 30 }) as u32;
                stack.push(FrameKey {
                    code: codes[function as usize],
                    instruction_offset: 2 * line,
                    line,
                    is_generator: false,
                    is_shim: false,
                });
                function =
                    (function * 7 + 1 + random.below(if level < 4 { 2 } else { 20 })) % FUNCTIONS;
            }
            let frames: Vec<u64> = stack
                .into_iter()
                .map(|key| writer.intern_frame(key))
                .collect();
            pool.push(writer.intern_stack(&frames));
        }
        pools.push(pool);
    }
    let mut current = vec![0usize; THREADS as usize];
    let mut written = 0;
    let mut time = 1_000_000_000;
    while written < samples {
        time += PERIOD_NS;
        for thread in 0..THREADS {
            if written == samples {
                break;
            }
            // A quarter of the samples move to another stack.
            if random.below(4) == 0 {
                current[thread as usize] = random.below(STACKS_PER_THREAD as u64) as usize;
            }
            let stack = pools[thread as usize][current[thread as usize]];
            let flags = match random.below(4) {
                0 => 0,
                1 => SampleFlag::Active as u32,
                _ => (SampleFlag::Active as u32) | (SampleFlag::HoldsGil as u32),
            };
            writer
                .sample(time, thread + 1, stack, flags)
                .map_err(io::Error::other)?;
            written += 1;
        }
    }
    writer
        .finish(proto::Footer {
            sample_count: samples,
            ..Default::default()
        })
        .map_err(io::Error::other)?
        .flush()
}

/// Counts bytes written.
struct CountingSink(u64);
impl Write for CountingSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Peak resident memory since the last reset, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resets the peak-RSS counter (Linux 4.0+: "5" to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn profile(path: &Path, granularity: Granularity) -> Profile {
    let mut input = Input::open(path).expect("open");
    Profile::read(&mut input, &Filter::default(), granularity)
}

fn main() -> io::Result<()> {
    let samples: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SAMPLES is a number"))
        .unwrap_or(10_000_000);
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp"))
        .join(format!("throughput-{samples}.pdr"));
    std::fs::create_dir_all(path.parent().unwrap())?;
    if !path.exists() {
        let started = Instant::now();
        generate(&path, samples)?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "generated {samples} samples in {seconds:.1} s ({:.2} M samples/s written)",
            samples as f64 / seconds / 1e6
        );
    }
    let size = std::fs::metadata(&path)?.len();
    println!(
        "recording: {samples} samples, {:.1} MiB, {THREADS} threads, {} stacks in pools",
        size as f64 / (1 << 20) as f64,
        THREADS as usize * STACKS_PER_THREAD
    );
    println!("| output | seconds | M samples/s | output MiB | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    type Job = Box<dyn Fn(&Path, &mut CountingSink) -> io::Result<u64>>;
    let jobs: Vec<(&str, Job)> = vec![
        (
            "read only (baseline)",
            Box::new(|path, _| {
                let mut input = Input::open(path).expect("open");
                let mut n = 0;
                while input.next_sample().is_some() {
                    n += 1;
                }
                Ok(n)
            }),
        ),
        (
            "collapsed (function)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Function);
                collapsed::write(&p, false, sink)?;
                Ok(p.total)
            }),
        ),
        (
            "collapsed (instruction)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Instruction);
                collapsed::write(&p, false, sink)?;
                Ok(p.total)
            }),
        ),
        (
            "flamegraph SVG (function)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Function);
                flamegraph::write(&p, &FlamegraphOptions::default(), sink)?;
                Ok(p.total)
            }),
        ),
        (
            "flamegraph SVG (line)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Line);
                flamegraph::write(&p, &FlamegraphOptions::default(), sink)?;
                Ok(p.total)
            }),
        ),
        (
            "top (function)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Function);
                top::write(&p, 40, sink)?;
                Ok(p.total)
            }),
        ),
        (
            "speedscope (line)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Line);
                speedscope::write(&p, "bench", sink)?;
                Ok(p.total)
            }),
        ),
        (
            "pprof (line)",
            Box::new(|path, sink| {
                let p = profile(path, Granularity::Line);
                pprof::write(&p, &PprofOptions::default(), sink)?;
                Ok(p.total)
            }),
        ),
        (
            "report page (HTML)",
            Box::new(|path, sink| {
                let report = pydeep_view::report::gather(
                    path,
                    &Filter::default(),
                    &pydeep_view::report::ReportOptions::default(),
                )
                .expect("report");
                pydeep_view::report::write_page(&report.data, sink)?;
                Ok(report.data["top"]["samples"].as_u64().unwrap_or(0))
            }),
        ),
        (
            "chrome trace (function)",
            Box::new(|path, sink| {
                let mut input = Input::open(path).expect("open");
                let summary =
                    chrome::write(&mut input, &Filter::default(), Granularity::Function, sink)?;
                Ok(summary.samples)
            }),
        ),
    ];
    // An optional second argument keeps the outputs whose name contains it.
    let only = std::env::args().nth(2).unwrap_or_default();
    for (name, job) in jobs {
        if !name.contains(only.as_str()) {
            continue;
        }
        reset_peak();
        let mut sink = CountingSink(0);
        let started = Instant::now();
        let counted = job(&path, &mut sink)?;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(counted, samples, "{name} counted every sample");
        println!(
            "| {name} | {seconds:.2} | {:.2} | {:.1} | {:.0} |",
            samples as f64 / seconds / 1e6,
            sink.0 as f64 / (1 << 20) as f64,
            peak_rss_mib()
        );
    }
    Ok(())
}
