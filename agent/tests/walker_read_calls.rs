//! How many process_vm_readv calls a sample costs: each call is ~2 µs, so
//! this is the sampler's speed budget. 3.11+ frames live in contiguous
//! data-stack chunks and 3.9/3.10 frame objects mostly stay where they
//! were, both re-read where they were last sample: at most 3 reads
//! however deep the stack (the target of notes/benchmarks.md).

use std::process::{Child, Command};

use pydeep::Target;
use pydeep_integration::{program, test_pythons, Python};

/// The fixture process and the directory of its ready file (kept alive
/// as long as the process).
struct Running {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(python: &Python, depth: u32) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let child = Command::new(&python.path)
        .arg(program("deep_stack.py"))
        .arg(&ready)
        .arg(depth.to_string())
        .spawn()
        .expect("start deep_stack.py");
    let mut running = Running { child, _dir: dir };
    for _ in 0..6000 {
        if ready.exists() {
            return running;
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("{}: deep_stack.py exited: {status}", python.label());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{}: deep_stack.py never got ready", python.label());
}

/// Reads per sample (after the first, which fills caches) and the depth seen.
fn reads_per_sample(target: &mut Target) -> (u64, usize) {
    let mut samples = Vec::new();
    target.sample_threads(&mut samples).expect("sample");
    for frame in samples[0].frames.clone() {
        target.code_object(frame.code_address).expect("code object");
    }
    let before = target.read_calls();
    let rounds = 20;
    for _ in 0..rounds {
        target.sample_threads(&mut samples).expect("sample");
    }
    let depth = samples.iter().map(|s| s.frames.len()).max().unwrap_or(0);
    ((target.read_calls() - before) / rounds, depth)
}

#[test]
fn a_deep_stack_costs_a_handful_of_reads() {
    for python in test_pythons("walker: reads per sample") {
        for depth in [30u32, 1000] {
            let running = start(&python, depth);
            let mut target = Target::attach(running.child.id() as i32).expect("attach");
            let (reads, seen) = reads_per_sample(&mut target);
            eprintln!(
                "   {}: depth {depth}: {reads} process_vm_readv calls per sample ({seen} frames)",
                python.label()
            );
            assert!(seen as u32 > depth, "{}: saw {seen} frames", python.label());
            // The first batch re-reads the thread states with last
            // sample's data-stack windows (3.11+: every chunk of a
            // 1000-deep stack, one read whatever the depth) or frame
            // objects (3.9/3.10: the headers the last walk visited, close
            // ones merged into ranges); the second is the torn-read check
            // with the code-object fingerprints.
            assert!(
                reads <= 3,
                "{}: {reads} reads per sample at depth {depth}",
                python.label()
            );
        }
    }
}
