//! Every output's totals equal the synthetic recording's true counts.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use common::*;
use prost::Message;
use pydeep_view::aggregate::{Profile, ProfileOptions};
use pydeep_view::filter::Filter;
use pydeep_view::flamegraph::FlamegraphOptions;
use pydeep_view::input::Input;
use pydeep_view::pprof::{profile_proto, PprofOptions};
use pydeep_view::symbols::Granularity;
use pydeep_view::{chrome, collapsed, flamegraph, pprof, speedscope, top};

fn profile(path: &std::path::Path, filter: &Filter, granularity: Granularity) -> Profile {
    let mut input = Input::open(path).expect("open");
    let profile = Profile::read(&mut input, filter, granularity);
    assert_eq!(profile.damage, None, "a finished recording is not damaged");
    profile
}

fn folded_text(profile: &Profile, reverse: bool) -> String {
    let mut out = Vec::new();
    collapsed::write(profile, reverse, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn collapsed_stacks_count_every_sample_at_every_granularity() {
    let plan = standard_plan();
    let recorded = record(&plan);
    for (granularity, name) in [
        (Granularity::Function, "function"),
        (Granularity::Line, "line"),
        (Granularity::Instruction, "instruction"),
    ] {
        let profile = profile(&recorded.path, &Filter::default(), granularity);
        assert_eq!(profile.total, plan.len() as u64);
        let folded = parse_folded(&folded_text(&profile, false));
        assert_eq!(
            folded,
            expected_folded(&plan, name, |_| true),
            "granularity {name}"
        );
        if granularity == Granularity::Instruction {
            let attr = folded
                .keys()
                .filter(|k| k.contains("@ +8 LOAD_ATTR"))
                .count();
            assert_eq!(
                attr, 1,
                "recorded bytecode names the instruction: {folded:?}"
            );
        }
    }
}

#[test]
fn collapsed_output_matches_the_golden_file() {
    let recorded = record(&standard_plan());
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Line);
    let text = folded_text(&profile, false);
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/collapsed_line.txt"
    );
    if std::env::var_os("PYDEEP_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(golden).expect("golden file (PYDEEP_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(text, expected);
}

/// The standard plan with some samples standing for missed ticks (as a
/// saturated sampler writes them): every count is in ticks.
#[test]
fn a_sample_after_missed_ticks_counts_for_them_in_every_profile() {
    let mut plan = standard_plan();
    for (i, sample) in plan.iter_mut().enumerate() {
        sample.weight = match i % 13 {
            3 => 4,
            7 => 2,
            _ => 1,
        };
    }
    let ticks: u64 = plan.iter().map(|s| u64::from(s.weight)).sum();
    let recorded = record(&plan);
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Function);
    assert_eq!(profile.total, ticks);
    assert_eq!(profile.samples, plan.len() as u64);
    let folded = parse_folded(&folded_text(&profile, false));
    assert_eq!(folded, expected_folded(&plan, "function", |_| true));
    let mut text = Vec::new();
    top::write(&profile, 0, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "{} samples counted (standing for {ticks} sampler ticks",
            plan.len()
        )),
        "{first}"
    );
    let pprof = pprof::build(&profile, &PprofOptions::default());
    let values: i64 = pprof.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(values, ticks as i64);
}

#[test]
fn top_output_matches_the_golden_file() {
    let recorded = record(&standard_plan());
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Line);
    let mut text = Vec::new();
    top::write(&profile, 0, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/top_line.txt");
    if std::env::var_os("PYDEEP_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(golden).expect("golden file (PYDEEP_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(text, expected);
}

/// Reads "NAME (N samples, P%)" titles out of inferno's SVG.
fn svg_titles(svg: &str) -> HashMap<String, u64> {
    let mut titles = HashMap::new();
    for piece in svg.split("<title>").skip(1) {
        let title = &piece[..piece.find("</title>").unwrap()];
        let title = title
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        if let Some((name, rest)) = title.rsplit_once(" (") {
            let count: String = rest
                .split(' ')
                .next()
                .unwrap()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            if let Ok(count) = count.parse::<u64>() {
                *titles.entry(name.to_string()).or_insert(0) += count;
            }
        }
    }
    titles
}

#[test]
fn flamegraph_total_equals_the_recorded_sample_count() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Function);
    let mut svg = Vec::new();
    flamegraph::write(&profile, &FlamegraphOptions::default(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg"), "an SVG");
    assert!(svg.contains("search"), "interactive: has search");
    let titles = svg_titles(&svg);
    assert_eq!(titles["all"], plan.len() as u64);
    // Job.work is on every MainThread stack: 600 samples.
    assert_eq!(titles[&flame_title(WORK)], 600);
    // helper is called from two places: 200 under Job.work and 100 under worker_loop.
    assert_eq!(titles[&flame_title(HELPER)], 300);
    // Frames show the file's name and the function's first line; titles
    // (tooltips, search) the full path.
    assert!(
        svg.contains("\">Job.work (app.py:10)"),
        "short labels drawn"
    );
    assert!(
        svg.contains("<title>Job.work (/srv/app.py:10) ("),
        "full path in titles"
    );
    assert!(!svg.contains("\">Job.work (/srv"), "no path in frame texts");
}

/// A flamegraph frame's title at function granularity:
/// `qualname (/full/path.py:first_line)`.
fn flame_title(function: Function) -> String {
    format!(
        "{} ({}:{})",
        function.qualname, function.file, function.first_line
    )
}

#[test]
fn flamegraph_shows_thread_roots_and_states_when_asked() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let mut input = Input::open(&recorded.path).unwrap();
    let options = ProfileOptions {
        thread_states: true,
    };
    let profile = Profile::read_with(
        &mut input,
        &Filter::default(),
        Granularity::Function,
        &options,
    );
    let mut svg = Vec::new();
    let options = FlamegraphOptions {
        per_thread: true,
        ..Default::default()
    };
    flamegraph::write(&profile, &options, &mut svg).unwrap();
    let titles = svg_titles(&String::from_utf8(svg).unwrap());
    assert_eq!(titles["all"], plan.len() as u64);
    assert_eq!(titles["MainThread (pid 4242, tid 100)"], 600);
    assert_eq!(titles["worker (pid 4242, tid 101)"], 420);
    let count = |keep: &dyn Fn(u32) -> bool| plan.iter().filter(|s| keep(s.flags)).count() as u64;
    assert_eq!(titles["<idle>"], count(&|f| f & ACTIVE == 0));
    assert_eq!(
        titles["<GIL held>"],
        count(&|f| f & ACTIVE != 0 && f & GIL != 0)
    );
    assert_eq!(
        titles["<no GIL>"],
        count(&|f| f & ACTIVE != 0 && f & GIL == 0)
    );
}

#[test]
fn reversed_flamegraph_is_an_icicle_of_innermost_frames() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Function);
    let folded = parse_folded(&folded_text(&profile, true));
    let helper = label(&(HELPER, 0, 0), "function");
    let roots: u64 = folded
        .iter()
        .filter(|(s, _)| s.starts_with(&helper))
        .map(|(_, c)| c)
        .sum();
    assert_eq!(
        roots, 300,
        "every sample innermost in helper starts with helper"
    );
    let mut svg = Vec::new();
    let options = FlamegraphOptions {
        reverse: true,
        ..Default::default()
    };
    flamegraph::write(&profile, &options, &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert_eq!(svg_titles(&svg)["all"], plan.len() as u64);
    assert_eq!(svg_titles(&svg)[&flame_title(HELPER)], 300);
}

#[test]
fn top_counts_own_and_total_once_per_sample() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Function);
    let shares: HashMap<String, (u64, u64)> = top::shares(&profile)
        .into_iter()
        .map(|s| (profile.label(s.symbol).to_string(), (s.own, s.total)))
        .collect();
    let get = |f: Function| shares[&label(&(f, 0, 0), "function")];
    assert_eq!(get(MAIN), (0, 600));
    assert_eq!(get(WORK), (400, 600));
    assert_eq!(get(HELPER), (300, 300));
    assert_eq!(get(LOOP), (0, 400));
    assert_eq!(get(WAIT), (300, 300));
    assert_eq!(shares["<no Python frame>"], (20, 20));
    let own: u64 = shares.values().map(|s| s.0).sum();
    assert_eq!(own, plan.len() as u64, "own shares add up to every sample");
    let mut text = Vec::new();
    top::write(&profile, 0, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let first = text.lines().nth(2).unwrap();
    assert!(
        first.contains("Job.work") && first.contains("39.22%"),
        "{first}"
    );
}

fn speedscope_schema() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/npm/node_modules/speedscope/dist/release/file-format-schema.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("speedscope's schema is missing ({path}: {e}); run scripts/setup, which installs the speedscope npm package")
    });
    serde_json::from_str(&text).expect("schema is JSON")
}

#[test]
fn speedscope_export_validates_against_speedscope_schema_and_adds_up() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Line);
    let mut out = Vec::new();
    speedscope::write(&profile, "synthetic", &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let schema = speedscope_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:?}");
    // The validator is live: a file without its shared frames fails.
    let mut broken = json.clone();
    broken.as_object_mut().unwrap().remove("shared");
    assert!(!validator.is_valid(&broken));

    let frames = json["shared"]["frames"].as_array().unwrap();
    let mut per_profile = BTreeMap::new();
    for p in json["profiles"].as_array().unwrap() {
        let weights: u64 = p["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .sum();
        assert_eq!(p["endValue"].as_u64().unwrap(), weights);
        for sample in p["samples"].as_array().unwrap() {
            for frame in sample.as_array().unwrap() {
                assert!((frame.as_u64().unwrap() as usize) < frames.len());
            }
        }
        per_profile.insert(p["name"].as_str().unwrap().to_string(), weights);
    }
    let expected: BTreeMap<String, u64> = [
        (
            "MainThread (pid 4242, tid 100)".to_string(),
            600 * PERIOD_NS,
        ),
        ("worker (pid 4242, tid 101)".to_string(), 420 * PERIOD_NS),
    ]
    .into();
    assert_eq!(per_profile, expected, "weights are ticks × period");
    for p in json["profiles"].as_array().unwrap() {
        assert_eq!(p["unit"], "nanoseconds");
    }
    assert_eq!(json["activeProfileIndex"], 0, "opens on the busiest thread");
}

fn decode_pprof(bytes: &[u8]) -> profile_proto::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .expect("gzipped");
    profile_proto::Profile::decode(raw.as_slice()).expect("decodes with profile.proto")
}

#[test]
fn pprof_decodes_with_profile_proto_and_totals_equal_the_recording() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let profile = profile(&recorded.path, &Filter::default(), Granularity::Line);
    let mut out = Vec::new();
    pprof::write(&profile, &PprofOptions::default(), &mut out).unwrap();
    let decoded = decode_pprof(&out);
    let strings = &decoded.string_table;
    assert_eq!(strings[0], "");
    let text = |i: i64| strings[i as usize].as_str();
    assert_eq!(text(decoded.sample_type[0].r#type), "samples");
    assert_eq!(text(decoded.sample_type[0].unit), "count");
    assert_eq!(decoded.period, PERIOD_NS as i64);
    let total: i64 = decoded.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, plan.len() as i64);
    let wall: i64 = decoded.sample.iter().map(|s| s.value[1]).sum();
    assert_eq!(wall, plan.len() as i64 * PERIOD_NS as i64);

    // Every location resolves; leaf first.
    let locations: HashMap<u64, &profile_proto::Location> =
        decoded.location.iter().map(|l| (l.id, l)).collect();
    let functions: HashMap<u64, &profile_proto::Function> =
        decoded.function.iter().map(|f| (f.id, f)).collect();
    let mut per_thread: BTreeMap<String, i64> = BTreeMap::new();
    let mut helper_line_4 = 0;
    for sample in &decoded.sample {
        let labels: HashMap<&str, &str> = sample
            .label
            .iter()
            .map(|l| (text(l.key), text(l.str)))
            .collect();
        assert_eq!(labels["service_name"], "app.py");
        assert_eq!(labels["pid"], "4242");
        *per_thread
            .entry(format!("{}/{}", labels["thread_name"], labels["thread_id"]))
            .or_insert(0) += sample.value[0];
        let leaf = locations[&sample.location_id[0]];
        let function = functions[&leaf.line[0].function_id];
        if text(function.name) == "helper" {
            assert_eq!(text(function.filename), "/srv/lib.py");
            assert_eq!(function.start_line, 3);
            assert_eq!(leaf.line[0].line, 4);
            helper_line_4 += sample.value[0];
        }
    }
    assert_eq!(
        per_thread,
        BTreeMap::from([
            ("MainThread/100".to_string(), 600),
            ("worker/101".to_string(), 420)
        ])
    );
    assert_eq!(helper_line_4, 300);
}

/// Per thread: checks B/E nesting and returns the summed duration (µs) of
/// outermost frames and the count of outermost frames opened.
fn chrome_root_durations(json: &serde_json::Value) -> BTreeMap<u64, f64> {
    let mut open: HashMap<u64, Vec<f64>> = HashMap::new();
    let mut durations: BTreeMap<u64, f64> = BTreeMap::new();
    let mut last_ts: HashMap<u64, f64> = HashMap::new();
    for event in json["traceEvents"].as_array().unwrap() {
        let tid = event["tid"].as_u64().unwrap_or(0);
        let ts = event["ts"].as_f64().unwrap_or(0.0);
        match event["ph"].as_str().unwrap() {
            "B" => {
                assert!(
                    ts >= *last_ts.get(&tid).unwrap_or(&0.0),
                    "events of a thread in time order"
                );
                last_ts.insert(tid, ts);
                open.entry(tid).or_default().push(ts);
            }
            "E" => {
                assert!(
                    ts >= *last_ts.get(&tid).unwrap_or(&0.0),
                    "events of a thread in time order"
                );
                last_ts.insert(tid, ts);
                let stack = open.get_mut(&tid).expect("E after B");
                let begin = stack.pop().expect("E matches a B");
                if stack.is_empty() {
                    *durations.entry(tid).or_insert(0.0) += ts - begin;
                }
            }
            "M" => {}
            other => panic!("unexpected phase {other}"),
        }
    }
    assert!(open.values().all(Vec::is_empty), "every frame is closed");
    durations
}

fn chrome_json(
    path: &std::path::Path,
    filter: &Filter,
) -> (serde_json::Value, chrome::ChromeSummary) {
    let mut input = Input::open(path).unwrap();
    let mut out = Vec::new();
    let summary = chrome::write(&mut input, filter, Granularity::Function, &mut out).unwrap();
    (serde_json::from_slice(&out).expect("valid JSON"), summary)
}

#[test]
fn chrome_trace_durations_add_up_per_thread() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let (json, summary) = chrome_json(&recorded.path, &Filter::default());
    assert_eq!(summary.samples, plan.len() as u64);
    let durations = chrome_root_durations(&json);
    let period_us = PERIOD_NS as f64 / 1000.0;
    assert!(
        (durations[&100] - 600.0 * period_us).abs() < 1e-6,
        "{durations:?}"
    );
    assert!(
        (durations[&101] - 420.0 * period_us).abs() < 1e-6,
        "{durations:?}"
    );
    let names: Vec<&str> = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "MainThread (pid 4242, tid 100)",
            "worker (pid 4242, tid 101)"
        ]
    );
    // Job.work stays open across MainThread's samples: it opens once.
    let work = label(&(WORK, 0, 0), "function");
    let work_opens = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == work.as_str())
        .count();
    assert_eq!(work_opens, 1);
}

#[test]
fn chrome_trace_of_filtered_samples_leaves_gaps() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let filter = Filter {
        gil_only: true,
        ..Default::default()
    };
    let (json, summary) = chrome_json(&recorded.path, &filter);
    let kept = plan.iter().filter(|s| s.flags & GIL != 0).count() as u64;
    assert_eq!(summary.samples, kept);
    let durations = chrome_root_durations(&json);
    let total: f64 = durations.values().sum();
    assert!((total - kept as f64 * PERIOD_NS as f64 / 1000.0).abs() < 1e-6);
}

#[test]
fn chrome_trace_names_each_process_by_its_command_line() {
    let mut plan = standard_plan();
    for tick in 0..50u64 {
        plan.push(Planned {
            time_ns: START_NS + 600 * PERIOD_NS + tick * PERIOD_NS,
            thread: 3,
            frames: vec![(MAIN, 5, 20)],
            flags: GIL | ACTIVE,
            weight: 1,
        });
    }
    let recorded = record(&plan);
    let (json, summary) = chrome_json(&recorded.path, &Filter::default());
    assert_eq!(summary.samples, plan.len() as u64);
    let names: BTreeMap<u64, String> = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        BTreeMap::from([
            (u64::from(PID), "python3 /srv/app.py --fast".to_string()),
            (u64::from(CHILD_PID), "python3 /srv/child.py".to_string()),
        ])
    );
    let durations = chrome_root_durations(&json);
    assert!((durations[&200] - 50.0 * PERIOD_NS as f64 / 1000.0).abs() < 1e-6);
    // The child's samples are also filtered by pid.
    let child_only = Filter {
        pids: vec![CHILD_PID],
        ..Default::default()
    };
    let profile = profile(&recorded.path, &child_only, Granularity::Function);
    assert_eq!(profile.total, 50);
}
