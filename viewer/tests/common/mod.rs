//! Synthetic recordings whose true counts the tests know: a plan of samples
//! is written with the format crate's Writer, and the expected outputs are
//! computed from the plan directly, never through the viewer.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pydeep_format::proto::{self, SampleFlag};
use pydeep_format::{FrameKey, Writer, WriterOptions};

pub const PID: u32 = 4242;
/// A child process the recording announces; its thread is thread 3.
pub const CHILD_PID: u32 = 4343;
/// Stream clock at the start of the recording.
pub const START_NS: u64 = 5_000_000_000;
/// 100 Hz: one sample per thread every 10 ms.
pub const PERIOD_NS: u64 = 10_000_000;

pub const GIL: u32 = SampleFlag::HoldsGil as u32;
pub const ACTIVE: u32 = SampleFlag::Active as u32;
pub const NO_PYTHON: u32 = SampleFlag::NoPython as u32;

/// A function of the synthetic program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub qualname: &'static str,
    pub file: &'static str,
    pub first_line: u32,
}

pub const MAIN: Function = Function {
    qualname: "<module>",
    file: "/srv/app.py",
    first_line: 1,
};
pub const WORK: Function = Function {
    qualname: "Job.work",
    file: "/srv/app.py",
    first_line: 10,
};
pub const HELPER: Function = Function {
    qualname: "helper",
    file: "/srv/lib.py",
    first_line: 3,
};
pub const LOOP: Function = Function {
    qualname: "worker_loop",
    file: "/srv/lib.py",
    first_line: 20,
};
pub const WAIT: Function = Function {
    qualname: "Condition.wait",
    file: "/usr/lib/python3.12/threading.py",
    first_line: 320,
};
pub const FUNCTIONS: [Function; 5] = [MAIN, WORK, HELPER, LOOP, WAIT];

/// The text of /srv/app.py embedded in the recording (15 lines).
pub const APP_SOURCE: &str = "import lib\n\n\n\njob = Job(); job.work()  # line 5\n\n\n\n\nclass Job:\n    def work(self):\n        total = sum(range(10))  # line 12\n        total += 1  # line 13\n        lib.helper(total)  # line 14\n        return total\n";

/// `def work(a): return a.x` compiled by CPython 3.12.1, the bytecode of
/// Job.work in the recording, and what `dis` shows for it: RESUME at 0,
/// LOAD_FAST at 2, LOAD_ATTR at 4 (with 9 cache units up to 24),
/// RETURN_VALUE at 24.
pub const WORK_BYTECODE_3_12: [u8; 26] = [
    151, 0, 124, 0, 106, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 83, 0,
];

/// The opname `dis` gives the instruction holding `offset` of Job.work.
pub fn work_opname(offset: u32) -> Option<&'static str> {
    match offset {
        0..=1 => Some("RESUME"),
        2..=3 => Some("LOAD_FAST"),
        4..=23 => Some("LOAD_ATTR"),
        24..=25 => Some("RETURN_VALUE"),
        _ => None,
    }
}

/// A frame: function, line, instruction offset.
pub type Frame = (Function, u32, u32);

/// One planned sample.
#[derive(Clone, Debug)]
pub struct Planned {
    pub time_ns: u64,
    /// 1 = MainThread (native id 100), 2 = "worker" (native id 101), both
    /// of PID; 3 = MainThread (native id 200) of CHILD_PID.
    pub thread: u32,
    /// Outermost first; empty for a thread running no Python.
    pub frames: Vec<Frame>,
    pub flags: u32,
    /// Sampler ticks the sample stands for (1, more after missed ticks).
    pub weight: u32,
}

/// The standard plan: 600 ticks of MainThread and 420 of the worker, with
/// stacks and flags cycling so that every filter selects a known subset.
pub fn standard_plan() -> Vec<Planned> {
    let mut plan = Vec::new();
    for tick in 0..600u64 {
        let time_ns = START_NS + tick * PERIOD_NS;
        let (frames, flags) = match tick % 6 {
            0..=2 => (vec![(MAIN, 5, 20), (WORK, 12, 8)], GIL | ACTIVE),
            3 | 4 => (
                vec![(MAIN, 5, 20), (WORK, 14, 30), (HELPER, 4, 2)],
                GIL | ACTIVE,
            ),
            _ => (vec![(MAIN, 5, 20), (WORK, 13, 16)], ACTIVE),
        };
        plan.push(Planned {
            time_ns,
            thread: 1,
            frames,
            flags,
            weight: 1,
        });
        if tick < 420 {
            let (frames, flags) = match tick % 21 {
                0..=14 => (vec![(LOOP, 22, 6), (WAIT, 330, 40)], 0),
                15..=19 => (vec![(LOOP, 24, 18), (HELPER, 4, 2)], GIL | ACTIVE),
                _ => (vec![], NO_PYTHON),
            };
            plan.push(Planned {
                time_ns,
                thread: 2,
                frames,
                flags,
                weight: 1,
            });
        }
    }
    plan
}

/// Writes `plan` as a recording at `path`; with `finish` false the footer is
/// left out, as when the recorder is killed.
pub fn write_recording(path: &Path, plan: &[Planned], finish: bool) {
    let header = proto::Header {
        format_version: 1,
        pydeep_version: "0.1.0".into(),
        pid: PID,
        argv: vec!["python3".into(), "/srv/app.py".into(), "--fast".into()],
        executable: "/usr/bin/python3.12".into(),
        start_unix_ns: 1_700_000_000_000_000_000,
        clock: proto::ClockKind::ClockMonotonic as i32,
        sampling: Some(proto::SamplingConfig {
            rate_hz: 1e9 / PERIOD_NS as f64,
            max_depth: 128,
            ..Default::default()
        }),
        start_clock_ns: START_NS,
        mode: "record".into(),
        ..Default::default()
    };
    let file = std::fs::File::create(path).expect("create recording");
    let mut writer = Writer::new(file, header, WriterOptions::default()).expect("writer");
    let app_path = writer.intern_string(MAIN.file);
    let app_source = writer.define_source_file(app_path, Some(APP_SOURCE.as_bytes().to_vec()));
    let mut codes = BTreeMap::new();
    for function in FUNCTIONS {
        let id = writer.next_code_id();
        let filename = writer.intern_string(function.file);
        let name = writer.intern_string(function.qualname.rsplit('.').next().unwrap());
        let qualname = writer.intern_string(function.qualname);
        let is_work = function == WORK;
        let names = if is_work {
            vec![writer.intern_string("x")]
        } else {
            vec![]
        };
        let varnames = if is_work {
            vec![writer.intern_string("a")]
        } else {
            vec![]
        };
        writer.define_code_object(proto::CodeObjectDef {
            bytecode: if is_work {
                WORK_BYTECODE_3_12.to_vec()
            } else {
                vec![]
            },
            python_version: is_work.then(|| proto::PythonVersion {
                major: 3,
                minor: 12,
                patch: 1,
                ..Default::default()
            }),
            argcount: u32::from(is_work),
            names,
            varnames,
            id,
            filename,
            name,
            qualname,
            first_line: function.first_line,
            source_file: if function.file == MAIN.file {
                app_source
            } else {
                0
            },
            pid: PID,
            ..Default::default()
        });
        codes.insert(function.qualname, id);
    }
    writer
        .record(proto::record::Kind::ProcessEvent(proto::ProcessEvent {
            time_ns: START_NS,
            pid: CHILD_PID,
            kind: proto::ProcessEventKind::ProcessSpawned as i32,
            parent_pid: PID,
            argv: vec!["python3".into(), "/srv/child.py".into()],
            ..Default::default()
        }))
        .expect("process event");
    for (id, pid, native_id, name, is_main) in [
        (1u32, PID, 100u64, "MainThread", true),
        (2, PID, 101, "worker", false),
        (3, CHILD_PID, 200, "MainThread", true),
    ] {
        let name = writer.intern_string(name);
        writer.define_thread(proto::ThreadDef {
            id,
            pid,
            thread_id: 0x7f00 + native_id,
            native_id,
            name,
            is_main,
            interpreter: 0,
        });
    }
    for sample in plan {
        let frames: Vec<u64> = sample
            .frames
            .iter()
            .map(|(function, line, offset)| {
                writer.intern_frame(FrameKey {
                    code: codes[function.qualname],
                    instruction_offset: *offset,
                    line: *line,
                    is_generator: false,
                    is_shim: false,
                })
            })
            .collect();
        let stack = if frames.is_empty() {
            0
        } else {
            writer.intern_stack(&frames)
        };
        writer
            .weighted_sample(
                sample.time_ns,
                sample.thread,
                stack,
                sample.flags,
                sample.weight,
            )
            .expect("sample");
    }
    if finish {
        let footer = proto::Footer {
            sample_count: plan.len() as u64,
            duration_ns: plan.last().map_or(0, |s| s.time_ns - START_NS + PERIOD_NS),
            end_reason: "duration".into(),
            ..Default::default()
        };
        writer.finish(footer).expect("finish");
    } else {
        writer.flush().expect("flush");
    }
}

/// A recording of `plan` in a temporary directory.
pub struct Recorded {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn record(plan: &[Planned]) -> Recorded {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("synthetic.pdr");
    write_recording(&path, plan, true);
    Recorded { dir, path }
}

/// What a frame is labelled at each granularity (the viewer's documented
/// label format).
pub fn label(frame: &Frame, granularity: &str) -> String {
    let (function, line, offset) = frame;
    match granularity {
        "function" => format!("{} ({})", function.qualname, function.file),
        "line" => format!("{} ({}:{line})", function.qualname, function.file),
        _ => match (*function == WORK).then(|| work_opname(*offset)).flatten() {
            Some(opname) => format!(
                "{} ({}:{line}) @ +{offset} {opname}",
                function.qualname, function.file
            ),
            None => format!(
                "{} ({}:{line}) @ +{offset}",
                function.qualname, function.file
            ),
        },
    }
}

/// The folded stacks the plan should give, from the plan alone.
pub fn expected_folded(
    plan: &[Planned],
    granularity: &str,
    keep: impl Fn(&Planned) -> bool,
) -> BTreeMap<String, u64> {
    let mut folded = BTreeMap::new();
    for sample in plan.iter().filter(|s| keep(s)) {
        let stack = if sample.frames.is_empty() {
            "<no Python frame>".to_string()
        } else {
            sample
                .frames
                .iter()
                .map(|f| label(f, granularity))
                .collect::<Vec<_>>()
                .join(";")
        };
        *folded.entry(stack).or_insert(0) += u64::from(sample.weight);
    }
    folded
}

/// Parses folded-stack text into a map.
pub fn parse_folded(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').expect("count");
            (stack.to_string(), count.parse().expect("number"))
        })
        .collect()
}
