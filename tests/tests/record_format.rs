//! One step from process to picture (issue #17 item 3): `record` and
//! `attach` with `--format F` write, when recording ends, exactly what
//! `pydeep-view F` writes from the recording kept beside it; `--no-pdr`
//! keeps only the export; a taken export path fails before the program runs.

use std::path::Path;
use std::process::{Command, Stdio};

use pydeep_integration::run::succeeds;
use pydeep_integration::{program, test_pythons, workspace_binary};

const FORMATS: [(&str, &str); 6] = [
    ("flamegraph", "svg"),
    ("speedscope", "speedscope.json"),
    ("pprof", "pb.gz"),
    ("chrome", "trace.json"),
    ("collapsed", "txt"),
    ("report", "html"),
];

fn record(python: &Path, args: &[&str], seconds: &str) -> std::process::Output {
    Command::new(workspace_binary("pydeep"))
        .arg("record")
        .args(["-q", "-r", "200"])
        .args(args)
        .arg("--")
        .arg(python)
        .arg(program("exit_with.py"))
        .args(["0", seconds])
        .stdin(Stdio::null())
        .output()
        .expect("run pydeep record")
}

#[test]
fn each_format_equals_what_the_viewer_writes_from_the_recording() {
    let python = &test_pythons("record --format")[0];
    let dir = tempfile::tempdir().unwrap();
    for (format, extension) in FORMATS {
        let recording = dir.path().join(format!("{format}.pdr"));
        let out = record(
            &python.path,
            &["--format", format, "-o", recording.to_str().unwrap()],
            "0.3",
        );
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let export = dir.path().join(format!("{format}.{extension}"));
        let written = std::fs::read(&export)
            .unwrap_or_else(|e| panic!("{format}: no {}: {e}", export.display()));
        assert!(!written.is_empty(), "{format}: empty");
        let viewer_out = dir.path().join(format!("viewer-{format}"));
        succeeds(
            "pydeep-view",
            [
                format,
                recording.to_str().unwrap(),
                "-o",
                viewer_out.to_str().unwrap(),
            ],
        );
        assert!(
            std::fs::read(&viewer_out).unwrap() == written,
            "{format}: the one-step output differs from pydeep-view {format}'s"
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(&format!("wrote {format} ")), "{said}");
    }
}

#[test]
fn an_export_named_by_o_keeps_the_recording_beside_it_unless_no_pdr() {
    let python = &test_pythons("record --format -o NAME.svg")[0];
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("profile.svg");
    let out = record(
        &python.path,
        &["-f", "flamegraph", "-o", svg.to_str().unwrap()],
        "0.2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    assert!(
        dir.path().join("profile.pdr").exists(),
        "no profile.pdr beside it"
    );

    let raw = dir.path().join("stacks.txt");
    let out = record(
        &python.path,
        &["-f", "raw", "--no-pdr", "-o", raw.to_str().unwrap()],
        "0.2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folded = std::fs::read_to_string(&raw).unwrap();
    assert!(
        folded.lines().all(|l| l
            .rsplit_once(' ')
            .is_some_and(|(_, n)| n.parse::<u64>().is_ok())),
        "{folded}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stacks"))
        .collect();
    assert_eq!(left, ["stacks.txt"], "--no-pdr left {left:?}");
}

#[test]
fn a_taken_export_path_fails_before_the_program_runs() {
    let python = &test_pythons("record --format: taken path")[0];
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("taken.svg");
    std::fs::write(&svg, "mine").unwrap();
    let marker = dir.path().join("ran");
    let out = Command::new(workspace_binary("pydeep"))
        .args(["record", "-q", "-f", "flamegraph", "-o"])
        .arg(&svg)
        .arg("--")
        .arg(&python.path)
        .arg("-c")
        .arg(format!("open({:?}, 'w').close()", marker.to_str().unwrap()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert!(
        !marker.exists(),
        "the program ran although the output was taken"
    );
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), "mine");
    assert!(!dir.path().join("taken.pdr").exists());
}
