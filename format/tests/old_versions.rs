//! Files written by earlier format versions keep reading exactly as they did.
//!
//! `fixtures/v1_*.pdr` were written by pydeep 0.1.0 at format version 1
//! (before the tick-grid sample encoding of version 2): one real recording
//! (`pydeep attach -r 1000 -d 2s` of `bench/workloads/cpu_depth.py --depth 30`
//! on CPython 3.11.7) and one synthetic recording of three threads with a
//! clock step back, a snapshot and a process event. Next to each, the `.txt`
//! is every event as the version-1 reader returned it (each stack expanded to
//! qualname@offset:line where first used), written once by that reader with `BLESS=1`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pydeep_format::{verify, Event, Recording};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every event of `path`, one line each, stacks expanded to frames.
fn describe(path: &Path) -> String {
    let mut recording = Recording::open(path).expect("open");
    let mut out = String::new();
    let mut described = std::collections::HashSet::new();
    let header = recording.header().clone();
    writeln!(
        out,
        "header version={} pid={} start={}",
        header.format_version, header.pid, header.start_clock_ns
    )
    .unwrap();
    while let Some(event) = recording.next_event().expect("readable") {
        let tables = recording.tables();
        match event {
            Event::Sample(sample) => {
                if described.insert(sample.stack) {
                    let frames: Vec<String> = tables
                        .stack_frames(sample.stack)
                        .iter()
                        .map(|id| {
                            let frame = &tables.frames[id];
                            let code = &tables.code_objects[&frame.code];
                            format!(
                                "{}@{}:{}",
                                tables.string(code.qualname),
                                frame.instruction_offset,
                                frame.line
                            )
                        })
                        .collect();
                    writeln!(out, "stack {} = {}", sample.stack, frames.join(";")).unwrap();
                }
                let thread = &tables.threads[&sample.thread];
                writeln!(
                    out,
                    "sample t={} thread={}({}) flags={} stack={}",
                    sample.time_ns,
                    sample.thread,
                    tables.string(thread.name),
                    sample.flags,
                    sample.stack
                )
                .unwrap();
            }
            Event::Snapshot(snapshot) => {
                writeln!(out, "snapshot t={} pid={}", snapshot.time_ns, snapshot.pid).unwrap()
            }
            Event::TraceEvents(batch) => {
                writeln!(out, "trace events={}", batch.frame.len()).unwrap()
            }
            Event::Process(event) => writeln!(
                out,
                "process t={} kind={} code={}",
                event.time_ns, event.kind, event.code
            )
            .unwrap(),
            Event::Gap(gap) => writeln!(
                out,
                "gap from={} to={} ticks={} cause={}",
                gap.from_ns, gap.to_ns, gap.ticks, gap.cause
            )
            .unwrap(),
            Event::Footer(footer) => writeln!(
                out,
                "footer samples={} chunks={} duration={} end={}",
                footer.sample_count, footer.chunk_count, footer.duration_ns, footer.end_reason
            )
            .unwrap(),
        }
    }
    out
}

fn check(name: &str) {
    let path = fixture(&format!("{name}.pdr"));
    let golden = fixture(&format!("{name}.txt"));
    let now = describe(&path);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &now).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert!(
        now.lines().count() > 1000,
        "{name}: too few events to mean much"
    );
    assert!(
        now == expected,
        "{name}: reads differently from the version-1 reader"
    );
    let report = verify(&path);
    assert!(report.is_valid(), "{name}: {report}");
}

#[test]
fn a_version_1_real_recording_reads_as_the_version_1_reader_read_it() {
    check("v1_cpu_depth_3_11");
}

#[test]
fn a_version_1_recording_of_three_threads_reads_as_the_version_1_reader_read_it() {
    check("v1_threads_synthetic");
}
