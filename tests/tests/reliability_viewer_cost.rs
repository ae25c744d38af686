//! What a valid recording of N bytes can cost the viewer (issue #14 item
//! 9): a file holding a great many stack definitions, and one holding a
//! great many samples that compress to almost nothing. Every viewer
//! command must finish (bounded wait: a hang fails) with a peak RSS under a
//! bound; the figures are printed for notes/reliability.md. No timing is
//! asserted. A file's definitions cost the viewer a few dozen bytes each
//! (dense tables: format/src/id_table.rs, stack_table.rs), and what it
//! counts grows with what the view shows, not with the stacks defined
//! (viewer/src/aggregate.rs): the bound here is ~2x the measured cost.

use std::path::Path;
use std::process::Command;

use pydeep_format::{proto, FrameKey, Writer, WriterOptions};
use pydeep_integration::waits::run_measured_within;
use pydeep_integration::workspace_binary;

/// Distinct stacks in the many-stacks file (each its own frame).
const STACKS: u64 = 500_000;
/// Samples in the many-samples file (one stack, one thread).
const SAMPLES: u64 = 20_000_000;

fn writer(path: &Path) -> Writer<std::fs::File> {
    let header = proto::Header {
        pid: 1,
        start_clock_ns: 1,
        sampling: Some(proto::SamplingConfig {
            rate_hz: 1000.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    Writer::create(path, false, header, WriterOptions::default()).unwrap()
}

fn thread_and_code(writer: &mut Writer<std::fs::File>) -> u64 {
    let name = writer.intern_string("MainThread");
    writer.define_thread(proto::ThreadDef {
        id: 1,
        pid: 1,
        name,
        is_main: true,
        ..Default::default()
    });
    let code = writer.next_code_id();
    let function = writer.intern_string("work");
    let file = writer.intern_string("app.py");
    writer.define_code_object(proto::CodeObjectDef {
        id: code,
        name: function,
        qualname: function,
        filename: file,
        first_line: 1,
        ..Default::default()
    });
    code
}

/// STACKS distinct stacks: one frame each at its own instruction and
/// line, one sample each.
fn many_stacks(path: &Path) {
    let mut writer = writer(path);
    let code = thread_and_code(&mut writer);
    for i in 0..STACKS {
        let frame = writer.intern_frame(FrameKey {
            code,
            instruction_offset: (i * 2) as u32,
            line: i as u32 + 1,
            ..Default::default()
        });
        let stack = writer.intern_stack(&[frame]);
        writer.sample(1_000_000 * (i + 1), 1, stack, 0).unwrap();
    }
    writer.finish(proto::Footer::default()).unwrap();
}

/// SAMPLES samples of one stack, one per tick.
fn many_samples(path: &Path) {
    let mut writer = writer(path);
    let code = thread_and_code(&mut writer);
    let frame = writer.intern_frame(FrameKey {
        code,
        instruction_offset: 2,
        line: 1,
        ..Default::default()
    });
    let stack = writer.intern_stack(&[frame]);
    for i in 0..SAMPLES {
        writer.sample(1_000_000 * (i + 1), 1, stack, 0).unwrap();
    }
    writer.finish(proto::Footer::default()).unwrap();
}

/// What a viewer command may hold besides the definitions: its code, one
/// chunk, the output's tables.
const BASE_KIB: u64 = 16 << 10;

/// What one stack definition (with its own frame definition) may cost the
/// viewer: ~160 bytes measured at 500,000 (81 MiB peak; it was 212 MiB,
/// ~430 bytes each, before the dense tables), held to twice that.
const BYTES_PER_STACK: u64 = 320;

/// Runs every profile command of the viewer on `file` under
/// `/usr/bin/time` (whose own child starts from a small process, so its
/// peak RSS is the viewer's alone: a child forked from this test would
/// inherit the test's size in `ru_maxrss`); returns the largest peak RSS.
fn measure(file: &Path, what: &str, definitions: u64) -> u64 {
    let bound_kib = BASE_KIB + definitions * BYTES_PER_STACK / 1024;
    let size = std::fs::metadata(file).unwrap().len();
    let rss_file = file.with_extension("rss");
    let mut largest = 0;
    for args in [
        vec!["top"],
        vec!["collapsed"],
        vec!["speedscope", "-o", "/dev/null"],
        vec!["flamegraph", "-o", "/dev/null"],
    ] {
        let mut command = Command::new("/usr/bin/time");
        command
            .args(["-f", "%M", "-o"])
            .arg(&rss_file)
            .arg(workspace_binary("pydeep-view"))
            .args(&args)
            .arg(file);
        let label = format!("{what} ({size} bytes): pydeep-view {}", args.join(" "));
        let finished =
            run_measured_within(&mut command, &label, std::time::Duration::from_secs(600));
        assert_eq!(finished.code, Some(0), "{label}: {}", finished.stderr);
        let rss: u64 = std::fs::read_to_string(&rss_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        eprintln!(
            "{label}: peak RSS {rss} KiB, {:.1} s",
            finished.elapsed.as_secs_f64()
        );
        assert!(
            rss < bound_kib,
            "{label}: peak RSS {rss} KiB, more than {bound_kib} KiB"
        );
        largest = largest.max(rss);
    }
    largest
}

#[test]
fn the_viewer_stays_bounded_on_many_stacks_and_many_samples() {
    let dir = tempfile::tempdir().unwrap();
    let stacks = dir.path().join("stacks.pdr");
    many_stacks(&stacks);
    measure(&stacks, &format!("{STACKS} stacks"), STACKS);
    let samples = dir.path().join("samples.pdr");
    many_samples(&samples);
    measure(&samples, &format!("{SAMPLES} samples"), 1);
}
