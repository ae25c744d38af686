//! What one sample of a running target costs the walker alone (no
//! recorder): `cargo run --release --example walk_cost -- PID [SAMPLES]
//! [--paused]`. Samples back to back and prints CPU per sample (user and
//! system, this thread's `getrusage`), `process_vm_readv` calls and bytes
//! per sample, torn samples and the deepest stack. The figures behind
//! notes/benchmarks.md's "Depth 1,000" (issue #13 item 2).

use std::collections::HashSet;
use std::time::Instant;

use pydeep::Target;

fn thread_times() -> (f64, f64) {
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pid: i32 = args.first().and_then(|a| a.parse().ok()).expect("PID");
    let samples: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let paused = args.iter().any(|a| a == "--paused");
    let mut target = Target::attach(pid).expect("attach");
    let mut out = Vec::new();
    let mut known = HashSet::new();
    // Warm up: every code object the stacks name is read once (as the
    // recorder does), so the samples check fingerprints only.
    for _ in 0..200 {
        target.sample_threads(&mut out).expect("sample");
        for frame in out.iter().flat_map(|t| t.frames.iter()) {
            if known.insert(frame.code_address) {
                let _ = target.code_object(frame.code_address);
            }
        }
    }
    let (calls, bytes) = (target.read_calls(), target.read_bytes());
    let (user, system) = thread_times();
    let started = Instant::now();
    let (mut torn, mut deepest, mut frames) = (0u64, 0usize, 0u64);
    for _ in 0..samples {
        let guard = paused.then(|| target.pause().expect("pause"));
        target.sample_threads(&mut out).expect("sample");
        drop(guard);
        for thread in &out {
            torn += u64::from(thread.torn);
            deepest = deepest.max(thread.frames.len());
            frames += thread.frames.len() as u64;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let (user2, system2) = thread_times();
    let n = samples as f64;
    println!(
        "{samples} samples in {wall:.2} s ({:.0}/s): cpu {:.2} us/sample (user {:.2}, sys {:.2}), \
         reads {:.2}/sample, {:.0} bytes/sample, torn {torn}, deepest {deepest}, frames/sample {:.0}",
        n / wall,
        (user2 - user + system2 - system) / n * 1e6,
        (user2 - user) / n * 1e6,
        (system2 - system) / n * 1e6,
        (target.read_calls() - calls) as f64 / n,
        (target.read_bytes() - bytes) as f64 / n,
        frames as f64 / n,
    );
}
