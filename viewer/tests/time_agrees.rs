//! One rule for time in every output: a sample stands for its sampler ticks
//! (1, plus the ticks missed right before it) times the sampling period.
//! For one recording, each thread's time must be the same in the Chrome
//! trace, pprof, speedscope and `pydeep-view top --json`, as the binary
//! writes them; on a synthetic recording with missed ticks it must also
//! equal what the plan says, and on real recordings of every interpreter
//! found the outputs must agree with each other.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read as _;
use std::path::Path;

use common::{record, standard_plan, PERIOD_NS};
use prost::Message;
use pydeep_integration::run::{record_program, succeeds};
use pydeep_integration::test_pythons;
use pydeep_view::pprof::profile_proto;

/// Each output's time per thread, in nanoseconds, keyed by kernel tid.
#[derive(Debug, Default)]
struct Times {
    top: BTreeMap<u64, u64>,
    chrome: BTreeMap<u64, u64>,
    pprof: BTreeMap<u64, u64>,
    speedscope: BTreeMap<u64, u64>,
    /// The thread speedscope opens on (its kernel tid).
    speedscope_active: u64,
}

fn view(args: &[&OsStr]) -> Vec<u8> {
    succeeds("pydeep-view", args)
}

/// Runs the four outputs of `recording` through the binary.
fn times_of(recording: &Path) -> Times {
    let dir = tempfile::tempdir().unwrap();
    let file = recording.as_os_str();
    let mut times = Times::default();

    let top: serde_json::Value = serde_json::from_slice(&view(&[
        "top".as_ref(),
        file,
        "--json".as_ref(),
        "--limit".as_ref(),
        "0".as_ref(),
    ]))
    .expect("top --json is JSON");
    let mut tid_of_name = BTreeMap::new();
    for thread in top["threads"].as_array().unwrap() {
        let tid = thread["tid"].as_u64().unwrap();
        times.top.insert(tid, thread["time_ns"].as_u64().unwrap());
        tid_of_name.insert(thread["describe"].as_str().unwrap().to_string(), tid);
    }

    // Chrome: per thread, the outermost events' durations (timestamps are
    // microseconds with three decimals: whole nanoseconds).
    let trace: serde_json::Value =
        serde_json::from_slice(&view(&["chrome".as_ref(), file])).expect("trace is JSON");
    let mut depth: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    for event in trace["traceEvents"].as_array().unwrap() {
        let Some(tid) = event["tid"].as_u64() else {
            continue;
        };
        let ns =
            |event: &serde_json::Value| (event["ts"].as_f64().unwrap() * 1000.0).round() as u64;
        match event["ph"].as_str().unwrap() {
            "B" => {
                let (open, began) = depth.entry(tid).or_default();
                if *open == 0 {
                    *began = ns(event);
                }
                *open += 1;
            }
            "E" => {
                let (open, began) = depth.get_mut(&tid).expect("E after B");
                *open -= 1;
                if *open == 0 {
                    *times.chrome.entry(tid).or_default() += ns(event) - *began;
                }
            }
            _ => {}
        }
    }

    let pprof_path = dir.path().join("profile.pb.gz");
    view(&[
        "pprof".as_ref(),
        file,
        "-o".as_ref(),
        pprof_path.as_os_str(),
    ]);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&pprof_path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let decoded = profile_proto::Profile::decode(raw.as_slice()).unwrap();
    let strings = &decoded.string_table;
    let wall = decoded
        .sample_type
        .iter()
        .position(|t| strings[t.r#type as usize] == "wall")
        .expect("a wall sample type");
    for sample in &decoded.sample {
        let tid: u64 = sample
            .label
            .iter()
            .find(|l| strings[l.key as usize] == "thread_id")
            .map(|l| strings[l.str as usize].parse().unwrap())
            .expect("thread_id label");
        *times.pprof.entry(tid).or_default() += sample.value[wall] as u64;
    }

    let speedscope: serde_json::Value =
        serde_json::from_slice(&view(&["speedscope".as_ref(), file])).expect("JSON");
    let profiles = speedscope["profiles"].as_array().unwrap();
    for profile in profiles {
        assert_eq!(profile["unit"], "nanoseconds", "speedscope uses time units");
        let tid = tid_of_name[profile["name"].as_str().unwrap()];
        let weights: u64 = profile["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .sum();
        assert_eq!(profile["endValue"].as_u64().unwrap(), weights);
        times.speedscope.insert(tid, weights);
    }
    let active = speedscope["activeProfileIndex"].as_u64().unwrap() as usize;
    times.speedscope_active = tid_of_name[profiles[active]["name"].as_str().unwrap()];
    times
}

fn assert_outputs_agree(times: &Times, label: &str) {
    assert!(!times.top.is_empty(), "{label}: threads");
    assert_eq!(times.chrome, times.top, "{label}: Chrome trace against top");
    assert_eq!(times.pprof, times.top, "{label}: pprof against top");
    assert_eq!(
        times.speedscope, times.top,
        "{label}: speedscope against top"
    );
    let busiest = times.top.values().max().unwrap();
    assert_eq!(
        times.top[&times.speedscope_active], *busiest,
        "{label}: speedscope opens on the busiest thread"
    );
}

#[test]
fn every_output_gives_each_thread_its_ticks_times_the_period() {
    // The standard plan with missed ticks: every 7th sample of the main
    // thread comes after two missed ticks (weight 3, the two samples before
    // it left out), and the worker misses a stretch of four ticks once. So
    // each thread still stands for its 600 and 420 ticks.
    let mut plan = Vec::new();
    for mut sample in standard_plan() {
        let tick = (sample.time_ns - common::START_NS) / PERIOD_NS;
        if sample.thread == 1 && (tick % 7 == 5 || tick % 7 == 6) {
            continue;
        }
        // The first one too: it then stands for ticks before the
        // recording's start, and Chrome moves it later rather than clip it.
        if sample.thread == 1 && tick.is_multiple_of(7) {
            sample.weight = 3;
        }
        if sample.thread == 2 && (200..204).contains(&tick) {
            continue;
        }
        if sample.thread == 2 && tick == 204 {
            sample.weight = 5;
        }
        plan.push(sample);
    }
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for sample in &plan {
        let tid = if sample.thread == 1 { 100 } else { 101 };
        *expected.entry(tid).or_default() += u64::from(sample.weight) * PERIOD_NS;
    }
    let recorded = record(&plan);
    let times = times_of(&recorded.path);
    assert_eq!(
        times.top, expected,
        "top's time per thread is ticks × period"
    );
    assert_outputs_agree(&times, "synthetic");
    // 600 ticks, and the first sample's two before the start.
    assert_eq!(expected[&100], 602 * PERIOD_NS, "the plan's main thread");
    assert_eq!(expected[&101], 420 * PERIOD_NS, "the plan's worker");
    assert_eq!(times.speedscope_active, 100, "the busiest thread");
}

#[test]
fn real_recordings_give_each_thread_one_time_in_every_output() {
    for python in test_pythons("viewer: one time per thread in every output") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("demo.pdr");
        // A high rate on a shared machine makes the sampler miss ticks, so
        // samples of weight above 1 are likely (their weights must count).
        let status = record_program(
            &python,
            &["-r", "500", "--idle"],
            &output,
            "demo_app.py",
            &["1.5"],
        );
        assert!(
            status.success(),
            "{}: pydeep record: {status}",
            python.label()
        );
        let times = times_of(&output);
        assert!(times.top.len() >= 4, "{}: {times:?}", python.label());
        assert_outputs_agree(&times, &python.label());
        eprintln!("{}: per-thread ns {:?}", python.label(), times.top);
    }
}
