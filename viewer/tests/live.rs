//! The viewer on real recordings: `pydeep record` samples a real program on
//! every interpreter found, and every output's totals must equal what the
//! integration crate's independent reader counts in the same file.
//! Needs the `pydeep` binary (`cargo test --workspace` builds it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read as _;

use prost::Message;
use pydeep_integration::recording::read;
use pydeep_integration::run::{record_program, succeeds};
use pydeep_integration::test_pythons;
use pydeep_view::aggregate::Profile;
use pydeep_view::filter::Filter;
use pydeep_view::input::Input;
use pydeep_view::pprof::{profile_proto, PprofOptions};
use pydeep_view::symbols::Granularity;
use pydeep_view::{chrome, collapsed, pprof, speedscope, top};

#[test]
fn outputs_of_real_recordings_count_what_the_recording_holds() {
    for python in test_pythons("viewer: outputs of real recordings") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("shares.pdr");
        let truth = dir.path().join("truth.json");
        let status = record_program(
            &python,
            &["-r", "100"],
            &output,
            "cpu_shares.py",
            &[truth.as_os_str(), "3".as_ref()],
        );
        assert!(
            status.success(),
            "{}: pydeep record: {status}",
            python.label()
        );
        let recorded = read(&output);
        assert!(
            recorded.samples > 30,
            "{}: only {} samples",
            python.label(),
            recorded.samples
        );
        let label = python.label();
        // The viewer leaves torn samples out by default, as the reader's
        // `stacks` do, and its profiles count the sampler ticks each sample
        // stands for (1, more after ticks the sampler missed).
        let kept = recorded.kept_ticks();
        let kept_samples = recorded.samples - recorded.torn;

        let mut input = Input::open(&output).unwrap();
        let profile = Profile::read(&mut input, &Filter::default(), Granularity::Line);
        assert_eq!(profile.damage, None, "{label}");
        assert_eq!(profile.total, kept, "{label}: profile total");

        // Collapsed.
        let mut folded = Vec::new();
        collapsed::write(&profile, false, &mut folded).unwrap();
        let folded_total: u64 = String::from_utf8(folded)
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(folded_total, kept, "{label}: collapsed");

        // top: samples through heavy and light equal the independent count.
        let by_function = Profile::read(
            &mut Input::open(&output).unwrap(),
            &Filter::default(),
            Granularity::Function,
        );
        let totals: HashMap<String, u64> = top::shares(&by_function)
            .into_iter()
            .map(|s| (by_function.symbols.get(s.symbol).name.clone(), s.total))
            .collect();
        for name in ["heavy", "light"] {
            assert_eq!(
                totals.get(name).copied().unwrap_or(0),
                recorded.ticks_in(name),
                "{label}: samples through {name}"
            );
        }
        assert!(recorded.samples_in("heavy") > 0, "{label}: heavy sampled");

        // Instruction granularity names every sampled instruction of spin
        // (its bytecode is recorded and disassembled with the target's tables).
        let by_instruction = Profile::read(
            &mut Input::open(&output).unwrap(),
            &Filter::default(),
            Granularity::Instruction,
        );
        let spin: Vec<_> = by_instruction
            .symbols
            .all()
            .iter()
            .filter(|s| s.name == "spin")
            .collect();
        assert!(!spin.is_empty(), "{label}: spin sampled");
        for symbol in spin {
            assert!(
                symbol.opname.is_some(),
                "{label}: no opname in {}",
                symbol.label
            );
        }

        // speedscope weights.
        let mut json = Vec::new();
        speedscope::write(&profile, "live", &mut json).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let weights: u64 = json["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["weights"].as_array().unwrap().iter())
            .map(|w| w.as_u64().unwrap())
            .sum();
        assert_eq!(
            weights,
            profile.ticks_ns(kept),
            "{label}: speedscope (ticks × period)"
        );

        // pprof, decoded with profile.proto.
        let mut gz = Vec::new();
        pprof::write(&profile, &PprofOptions::default(), &mut gz).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        let decoded = profile_proto::Profile::decode(raw.as_slice()).unwrap();
        let pprof_total: i64 = decoded.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(pprof_total as u64, kept, "{label}: pprof");
        assert_eq!(decoded.string_table[0], "");
        assert!(
            decoded.string_table.iter().any(|s| s == "cpu_shares.py"),
            "{label}: service name"
        );

        // Chrome trace: every sample placed, valid JSON.
        let mut trace = Vec::new();
        let summary = chrome::write(
            &mut Input::open(&output).unwrap(),
            &Filter::default(),
            Granularity::Function,
            &mut trace,
        )
        .unwrap();
        assert_eq!(summary.samples, kept_samples, "{label}: chrome");
        let _: serde_json::Value = serde_json::from_slice(&trace).expect("chrome trace is JSON");

        // The binary's flamegraph.
        let svg = dir.path().join("flame.svg");
        succeeds(
            "pydeep-view",
            [
                OsStr::new("flamegraph"),
                output.as_os_str(),
                OsStr::new("-o"),
                svg.as_os_str(),
            ],
        );
        let svg = std::fs::read_to_string(&svg).unwrap();
        let all = svg.split("<title>all (").nth(1).expect("root frame");
        let count: u64 = all
            .split(' ')
            .next()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap();
        assert_eq!(count, kept, "{label}: flamegraph");
        eprintln!("{label}: {} samples, every output agrees", recorded.samples);
    }
}
