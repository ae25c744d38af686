//! Measures the `.pdr` format on a synthetic stream shaped like a real
//! profile: many threads, deep stacks, few distinct stacks, long runs of the
//! same stack per thread, idle threads parked on one stack.
//!
//!     cargo run --release -p pydeep-format --example format_throughput [-- --quick]
//!
//! Prints, per scenario: bytes per sample, write samples/s (interning every
//! frame and the stack of every sample, as the agent does, then `sample`), and
//! read samples/s (`Recording::next_event` over the file, with and without
//! expanding each sample's stack). Rates are per CPU-second of the measuring
//! thread (steady on a busy machine), with the wall-clock rate in brackets.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pydeep_format::proto::{self, SampleFlag};
use pydeep_format::{Event, FrameKey, Recording, Writer, WriterOptions};

/// CPU time of this thread: rates per CPU-second do not depend on how busy
/// the (shared) machine is, unlike wall-clock rates.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of a piece of work.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Duration,
}

struct Timer(Instant, Duration);

impl Timer {
    fn start() -> Self {
        Timer(Instant::now(), cpu_time())
    }
    fn stop(&self) -> Timed {
        Timed {
            wall: self.0.elapsed(),
            cpu: cpu_time() - self.1,
        }
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    threads: u32,
    depth: usize,
    distinct_stacks: usize,
    rate_hz: u64,
    seconds: u64,
    /// Samples of one tick share its time (as the agent stamps them), or each
    /// thread's sample gets its own time a few microseconds apart.
    shared_tick_time: bool,
    prefix_sharing: bool,
    /// How many innermost levels of the call tree vary between stacks.
    varying_levels: usize,
}

/// A frame position in the synthetic program.
#[derive(Clone, Copy)]
struct SyntheticFrame {
    code: u64,
    instruction_offset: u32,
    line: u32,
}

/// Stacks made by random walks down a call tree whose calls are skewed
/// towards a few children: distinct stacks share prefixes of random length,
/// as real ones do.
fn make_stacks(scenario: &Scenario, rng: &mut Rng) -> Vec<Vec<SyntheticFrame>> {
    let mut seen = HashMap::new();
    let mut stacks = Vec::new();
    let mut attempts = 0;
    while stacks.len() < scenario.distinct_stacks && attempts < 1_000_000 {
        attempts += 1;
        let mut node = 0x1234_5678u64;
        let mut path = Vec::with_capacity(scenario.depth);
        // Recursion-heavy deep stacks vary only near the leaf; shallow ones anywhere.
        let fixed = scenario.depth.saturating_sub(scenario.varying_levels);
        for level in 0..scenario.depth {
            let choice = if level < fixed {
                0
            } else {
                match rng.below(10) {
                    0..=5 => 0,
                    6..=8 => 1,
                    _ => 2 + rng.below(3),
                }
            };
            node = node
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(choice + 1);
            node ^= node >> 31;
            path.push(SyntheticFrame {
                code: node % 150 + 1,
                instruction_offset: ((node >> 8) % 120) as u32 * 2,
                line: ((node >> 20) % 400) as u32 + 1,
            });
        }
        let key: Vec<(u64, u32)> = path
            .iter()
            .map(|f| (f.code, f.instruction_offset))
            .collect();
        if seen.insert(key, ()).is_none() {
            stacks.push(path);
        }
    }
    stacks
}

struct Measured {
    samples: u64,
    bytes: u64,
    chunks: u64,
    stack_defs: u64,
    stack_def_frames: u64,
    write: Timed,
    read: Timed,
    read_expanding: Timed,
}

fn header(rate_hz: u64) -> proto::Header {
    proto::Header {
        pydeep_version: "bench".into(),
        pid: 1,
        start_clock_ns: 1_000_000_000,
        clock: proto::ClockKind::ClockMonotonic as i32,
        sampling: Some(proto::SamplingConfig {
            rate_hz: rate_hz as f64,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run(scenario: &Scenario, path: &Path) -> Measured {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let stacks = make_stacks(scenario, &mut rng);
    let _ = std::fs::remove_file(path);
    // One chunk per simulated second, as a real-time writer with the default
    // 1 s flush interval produces (this loop runs far faster than real time).
    let options = WriterOptions {
        flush_interval: Duration::from_secs(3600),
        max_samples_per_chunk: (scenario.rate_hz * u64::from(scenario.threads)) as usize,
        ..WriterOptions::default()
    };
    let mut writer =
        Writer::create(path, true, header(scenario.rate_hz), options).expect("create output");
    writer.set_stack_prefix_sharing(scenario.prefix_sharing);
    // Code objects with bytecode and a line table of realistic size.
    let mut code_ids = vec![0u64; 151];
    for code in 1..=150u64 {
        let id = writer.next_code_id();
        let name = writer.intern_string(&format!("function_{code}"));
        let file = writer.intern_string(&format!("/srv/app/module_{}.py", code % 20));
        writer.define_code_object(proto::CodeObjectDef {
            id,
            filename: file,
            name,
            qualname: name,
            first_line: code as u32 * 10,
            bytecode: (0..240).map(|i| (i * 7 + code) as u8).collect(),
            line_table: (0..60).map(|i| (i * 3 + code) as u8).collect(),
            line_table_kind: proto::LineTableKind::LineTableLocations as i32,
            ..Default::default()
        });
        code_ids[code as usize] = id;
    }
    for thread in 1..=scenario.threads {
        let name = writer.intern_string(&format!("worker-{thread}"));
        writer.define_thread(proto::ThreadDef {
            id: thread,
            pid: 1,
            native_id: 1000 + u64::from(thread),
            thread_id: 0x7f00_0000_0000 + u64::from(thread) * 0x10_0000,
            name,
            is_main: thread == 1,
            ..Default::default()
        });
    }
    // Half the threads are idle, each parked on one stack; the others run,
    // staying on a stack for a geometric number of samples (mean 8) and
    // preferring a few hot stacks (a Zipf-like pick).
    let busy = scenario.threads.div_ceil(2);
    let mut current: Vec<usize> = (0..scenario.threads as usize)
        .map(|t| t % stacks.len())
        .collect();
    let ticks = scenario.rate_hz * scenario.seconds;
    let period = 1_000_000_000 / scenario.rate_hz;
    let mut frame_ids = Vec::with_capacity(scenario.depth);
    let timer = Timer::start();
    for tick in 0..ticks {
        let tick_time = 1_000_000_000 + tick * period + rng.below(period / 20);
        for thread in 0..scenario.threads {
            let t = thread as usize;
            let flags;
            if thread < busy {
                if rng.below(8) == 0 {
                    // Hot stacks first: squaring a uniform pick skews it.
                    let u = rng.below(1 << 16) as f64 / 65536.0;
                    current[t] = ((u * u) * stacks.len() as f64) as usize;
                }
                flags = if thread == tick as u32 % busy {
                    (SampleFlag::Active as u32) | (SampleFlag::HoldsGil as u32)
                } else {
                    SampleFlag::Active as u32
                };
            } else {
                flags = 0;
            }
            let time = if scenario.shared_tick_time {
                tick_time
            } else {
                tick_time + u64::from(thread) * 3_000 + rng.below(2_000)
            };
            frame_ids.clear();
            for frame in &stacks[current[t]] {
                frame_ids.push(writer.intern_frame(FrameKey {
                    code: code_ids[frame.code as usize],
                    instruction_offset: frame.instruction_offset,
                    line: frame.line,
                    ..Default::default()
                }));
            }
            let stack = writer.intern_stack(&frame_ids);
            writer
                .sample(time, thread + 1, stack, flags)
                .expect("sample");
        }
    }
    let stats = writer.stats();
    writer
        .finish(proto::Footer {
            end_reason: "duration".into(),
            ..Default::default()
        })
        .expect("finish");
    let write = timer.stop();
    let bytes = std::fs::metadata(path).expect("output").len();

    let read_pass = |expand: bool| {
        let timer = Timer::start();
        let mut recording = Recording::open(path).expect("open");
        let mut samples = 0u64;
        let mut frames = 0usize;
        while let Some(event) = recording.next_event().expect("read") {
            if let Event::Sample(sample) = event {
                samples += 1;
                if expand {
                    frames += recording.tables().stack_frames(sample.stack).len();
                }
            }
        }
        assert_eq!(samples, stats.samples);
        assert!(!expand || frames == samples as usize * scenario.depth);
        timer.stop()
    };
    let read = read_pass(false);
    let read_expanding = read_pass(true);
    Measured {
        samples: stats.samples,
        bytes,
        chunks: stats.chunks + 1,
        stack_defs: stats.stacks,
        stack_def_frames: stats.stack_frames,
        write,
        read,
        read_expanding,
    }
}

fn rate(samples: u64, elapsed: Duration) -> String {
    let rate = samples as f64 / elapsed.as_secs_f64();
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else {
        format!("{:.0} k", rate / 1e3)
    }
}

/// "CPU-rate (wall-rate)" in samples per second.
fn per_second(samples: u64, timed: Timed) -> String {
    format!(
        "{} ({})",
        rate(samples, timed.cpu),
        rate(samples, timed.wall)
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let minutes = if quick { 1 } else { 10 };
    let base = Scenario {
        name: "",
        threads: 8,
        depth: 30,
        distinct_stacks: 200,
        rate_hz: 1000,
        seconds: 60 * minutes,
        shared_tick_time: true,
        prefix_sharing: true,
        varying_levels: 12,
    };
    let scenarios = [
        Scenario {
            name: "8 threads, 30 deep, 200 stacks, 1 kHz, shared tick time",
            ..base
        },
        Scenario {
            name: "  same, each thread's sample stamped on its own",
            shared_tick_time: false,
            ..base
        },
        Scenario {
            name: "  same, without stack prefix sharing",
            prefix_sharing: false,
            ..base
        },
        Scenario {
            name: "8 threads, 1000 deep, 200 stacks, 1 kHz",
            depth: 1000,
            seconds: if quick { 10 } else { 60 },
            ..base
        },
        Scenario {
            name: "  same, without stack prefix sharing",
            depth: 1000,
            seconds: if quick { 10 } else { 60 },
            prefix_sharing: false,
            ..base
        },
        Scenario {
            name: "8 threads, 1000 deep, 5000 stacks, 1 kHz",
            depth: 1000,
            distinct_stacks: 5000,
            varying_levels: 40,
            seconds: if quick { 10 } else { 60 },
            ..base
        },
        Scenario {
            name: "  same, without stack prefix sharing",
            depth: 1000,
            distinct_stacks: 5000,
            varying_levels: 40,
            seconds: if quick { 10 } else { 60 },
            prefix_sharing: false,
            ..base
        },
    ];
    let dir = std::env::temp_dir().join(format!("pydeep-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "| scenario | samples | file bytes | bytes/sample | chunks | StackDefs (frames listed) | write samples/s | read samples/s | read+expand samples/s |\n\
         | | | | | | | per CPU-second (per wall-second) | | |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, scenario) in scenarios.iter().enumerate() {
        let path = dir.join(format!("scenario-{i}.pdr"));
        let m = run(scenario, &path);
        println!(
            "| {} | {} | {} | {:.3} | {} | {} ({}) | {} | {} | {} |",
            scenario.name,
            m.samples,
            m.bytes,
            m.bytes as f64 / m.samples as f64,
            m.chunks,
            m.stack_defs,
            m.stack_def_frames,
            per_second(m.samples, m.write),
            per_second(m.samples, m.read),
            per_second(m.samples, m.read_expanding),
        );
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir(&dir);
}
