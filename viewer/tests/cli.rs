//! The `pydeep-view` binary: arguments reach the library, errors are one
//! line with a non-zero exit, damaged recordings still render with a
//! warning, and a closed pipe is not an error.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};

use common::*;

fn view(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
        .args(args)
        .output()
        .expect("run pydeep-view")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_missing_recording_is_a_one_line_error() {
    let output = view(&["top", "/nonexistent/x.pdr"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pydeep-view: error: cannot open recording /nonexistent/x.pdr"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_recording_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.pdr");
    std::fs::write(
        &path,
        "just some text, long enough to hold a header of sixteen bytes",
    )
    .unwrap();
    let output = view(&["collapsed", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot read recording") && stderr.contains("not a pydeep recording"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_truncated_recording_renders_what_is_readable_with_a_warning() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let bytes = std::fs::read(&recorded.path).unwrap();
    for cut in [bytes.len() - 1, bytes.len() * 2 / 3] {
        let path = recorded.dir.path().join(format!("cut{cut}.pdr"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let output = view(&["collapsed", path.to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("pydeep-view: warning: "), "{stderr}");
        assert!(
            stderr.contains("showing what was readable") || stderr.contains("readable"),
            "{stderr}"
        );
        let shown: u64 = parse_folded(&text(&output.stdout)).values().sum();
        assert!(shown <= plan.len() as u64);
    }
}

#[test]
fn an_unfinished_recording_renders_every_flushed_sample_with_a_warning() {
    let plan = standard_plan();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unfinished.pdr");
    write_recording(&path, &plan, false);
    let output = view(&["collapsed", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("warning"),
        "{}",
        text(&output.stderr)
    );
    let shown: u64 = parse_folded(&text(&output.stdout)).values().sum();
    assert_eq!(shown, plan.len() as u64, "flushed samples are all readable");
}

#[test]
fn flamegraph_command_applies_filters_and_writes_the_file() {
    let plan = standard_plan();
    let recorded = record(&plan);
    let svg = recorded.dir.path().join("out.svg");
    let output = view(&[
        "flamegraph",
        recorded.path.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
        "--thread",
        "MainThread",
        "--pid",
        &PID.to_string(),
        "--from",
        "1s",
        "--to",
        "4500ms",
        "--gil-only",
        "--granularity",
        "line",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected = plan
        .iter()
        .filter(|s| s.thread == 1 && s.flags & GIL != 0)
        .filter(|s| s.time_ns >= START_NS + 1_000_000_000 && s.time_ns < START_NS + 4_500_000_000)
        .count();
    let svg = std::fs::read_to_string(&svg).unwrap();
    let all = format!("all ({} samples, 100%)", thousands(expected));
    assert!(svg.contains(&all), "expected {all}");
    assert!(
        svg.contains("Job.work (/srv/app.py:12)"),
        "line granularity labels"
    );
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn lines_command_shows_shares_in_the_gutter_from_the_embedded_source() {
    let recorded = record(&standard_plan());
    let output = view(&[
        "lines",
        recorded.path.to_str().unwrap(),
        "--source",
        "/srv/app.py",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let line = |n: u32| {
        stdout
            .lines()
            .find(|l| {
                l.split('|').next().unwrap().split_whitespace().last() == Some(&n.to_string())
            })
            .unwrap_or_else(|| panic!("line {n} in {stdout}"))
            .to_string()
    };
    // 1020 samples: line 12 is innermost in 300, line 13 in 100, line 14 is
    // on 200 stacks (helper is innermost), line 5 on all 600 of MainThread.
    assert!(
        line(12).starts_with(" 29.41%  29.41%     12 | "),
        "{}",
        line(12)
    );
    assert!(
        line(13).starts_with("  9.80%   9.80%     13 | "),
        "{}",
        line(13)
    );
    assert!(
        line(14).starts_with("         19.61%     14 | "),
        "{}",
        line(14)
    );
    assert!(
        line(5).starts_with("         58.82%      5 | job = Job()"),
        "{}",
        line(5)
    );
    assert!(
        line(1).starts_with("                     1 | import lib"),
        "{}",
        line(1)
    );
}

#[test]
fn lines_command_reads_the_file_on_disk_when_a_suffix_names_it() {
    let recorded = record(&standard_plan());
    let srv = recorded.dir.path().join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::fs::write(
        srv.join("app.py"),
        APP_SOURCE.replace("import lib", "import lib  # on disk"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
        .current_dir(recorded.dir.path())
        .args([
            "lines",
            recorded.path.to_str().unwrap(),
            "--source",
            "srv/app.py",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("import lib  # on disk"));
}

#[test]
fn lines_command_names_sampled_files_when_the_source_is_unknown() {
    let recorded = record(&standard_plan());
    let output = view(&[
        "lines",
        recorded.path.to_str().unwrap(),
        "--source",
        "nothere.py",
    ]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("/srv/app.py") && stderr.contains("/srv/lib.py"),
        "{stderr}"
    );
}

#[test]
fn pprof_command_writes_a_gzipped_profile_with_the_service_name() {
    let recorded = record(&standard_plan());
    let out = recorded.dir.path().join("out.pb.gz");
    let output = view(&[
        "pprof",
        recorded.path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--service-name",
        "billing",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    use prost::Message;
    let profile = pydeep_view::pprof::profile_proto::Profile::decode(raw.as_slice()).unwrap();
    assert!(profile.string_table.iter().any(|s| s == "billing"));
}

#[test]
fn a_closed_pipe_ends_quietly_with_success() {
    // Enough distinct stacks that the output outgrows a pipe's buffer.
    let mut plan = Vec::new();
    for tick in 0..20_000u64 {
        let line = 1 + (tick % 10_000) as u32;
        plan.push(Planned {
            time_ns: START_NS + tick * PERIOD_NS,
            thread: 1,
            frames: vec![(MAIN, 5, 0), (WORK, line, 2 * line)],
            flags: ACTIVE,
            weight: 1,
        });
    }
    let recorded = record(&plan);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pydeep-view"))
        .args([
            "collapsed",
            recorded.path.to_str().unwrap(),
            "--granularity",
            "line",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        !text(&output.stderr).contains("error"),
        "{}",
        text(&output.stderr)
    );
}
