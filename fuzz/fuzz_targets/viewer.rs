//! Feeds arbitrary bytes, as a `.pdr` file, to every `pydeep-view` output:
//! the aggregation at each granularity, then collapsed, flamegraph, top,
//! lines, speedscope, pprof and chrome, and the annotated bytecode listing
//! with its disassembler. None may panic, loop forever or allocate without
//! bound, whatever the recording holds (dangling ids, cyclic stack tables,
//! absurd offsets, bytecode of any version). How the bytes become a file:
//! see `pydeep_format_fuzz::file_of`.
#![no_main]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pydeep_format::{Reader, Recording};
use pydeep_view::aggregate::Profile;
use pydeep_view::bytecode::annotate::{AnnotateOptions, Profile as BytecodeProfile};
use pydeep_view::filter::Filter;
use pydeep_view::flamegraph::FlamegraphOptions;
use pydeep_view::input::Input;
use pydeep_view::pprof::PprofOptions;
use pydeep_view::symbols::Granularity;
use pydeep_view::{chrome, collapsed, flamegraph, lines, pprof, speedscope, top};

fn input(file: &[u8]) -> Option<Input<&[u8]>> {
    let reader = Reader::new(file).ok()?;
    let recording = Recording::new(reader).ok()?;
    Some(Input::new(recording, "fuzz".into()))
}

/// Where the bytecode listing reads its input: it opens a path, so each
/// input is written to one file per fuzzing process in memory-backed /dev/shm.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| PathBuf::from(format!("/dev/shm/pydeep-fuzz-{}.pdr", std::process::id())))
}

fn outputs(file: &[u8]) {
    let filter = Filter::default();
    for granularity in [
        Granularity::Function,
        Granularity::Line,
        Granularity::Instruction,
    ] {
        let Some(mut source) = input(file) else {
            return;
        };
        let profile = Profile::read(&mut source, &filter, granularity);
        let _ = collapsed::write(&profile, granularity == Granularity::Line, io::sink());
        let _ = top::write(&profile, 40, io::sink());
        if granularity == Granularity::Function {
            let _ = speedscope::write(&profile, "fuzz", io::sink());
            let _ = pprof::write(&profile, &PprofOptions::default(), io::sink());
            // inferno is the slowest output by far; a small profile keeps
            // the fuzzer's throughput up without skipping it.
            if profile.stacks.len() <= 64 {
                let _ = flamegraph::write(&profile, &FlamegraphOptions::default(), io::sink());
            }
        }
        if granularity == Granularity::Line {
            let any_file = profile
                .stacks
                .iter()
                .flat_map(|s| s.frames.iter())
                .map(|&f| profile.symbols.get(f).file.clone())
                .find(|f| !f.is_empty());
            if let Some(name) = any_file {
                if let Ok(recorded) = lines::recorded_file(&profile, &name) {
                    let tables = source.tables();
                    // Never the disk: a path that does not exist makes
                    // source_text fall back to the embedded file.
                    let text =
                        lines::source_text(tables, Path::new("/nonexistent/pydeep"), &recorded)
                            .unwrap_or_default();
                    let _ = lines::write(&profile, &recorded, &text, io::sink());
                }
            }
        }
    }
    if let Some(mut source) = input(file) {
        let _ = chrome::write(&mut source, &filter, Granularity::Line, io::sink());
    }
    if std::fs::write(scratch(), file).is_ok() {
        if let Ok(profile) = BytecodeProfile::read(scratch()) {
            for show_caches in [false, true] {
                let options = AnnotateOptions {
                    top: 8,
                    show_caches,
                    ..AnnotateOptions::default()
                };
                if let Ok(ids) = profile.select(&options) {
                    for id in ids {
                        let _ = profile.render(id, show_caches);
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(file) = pydeep_format_fuzz::file_of(data) {
        outputs(&file);
    }
});
