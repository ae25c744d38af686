//! Every output file is created the one safe way
//! (`pydeep_format::files::OutputFile`): never through a symbolic link
//! (nor creating a dangling link's target), `--force` replaces a file by a
//! new one renamed over it (a hard link's other name keeps the old
//! contents; the new recording is 0600), and `record` checks its output
//! before it starts the program (nothing runs when the path is taken, a
//! link, or cannot be created).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pydeep_integration::{test_pythons, workspace_binary};

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(workspace_binary(binary))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `pydeep record -q -d 2s [EXTRA] -o OUTPUT -- PYTHON -c CODE`.
fn record(python: &Path, output: &Path, extra: &[&str], code: &str) -> Output {
    let mut args = vec!["record", "-q", "-d", "2s", "-r", "200"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", s(output), "--", s(python), "-c", code]);
    run("pydeep", &args)
}

#[test]
fn record_checks_its_output_before_starting_the_program() {
    for python in test_pythons("record checks its output first") {
        let label = python.label();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let code = format!("open({:?}, 'w').close()", s(&marker));
        let taken = dir.path().join("taken.pdr");
        std::fs::write(&taken, b"precious").unwrap();
        let link = dir.path().join("link.pdr");
        std::os::unix::fs::symlink(&taken, &link).unwrap();
        let dangling = dir.path().join("dangling.pdr");
        std::os::unix::fs::symlink(dir.path().join("nowhere.pdr"), &dangling).unwrap();
        for (output, expected) in [
            (taken.clone(), "already exists"),
            (link.clone(), "symbolic link"),
            (dangling.clone(), "symbolic link"),
            (
                dir.path().join("no-such-dir").join("x.pdr"),
                "cannot create",
            ),
            ("/proc/pydeep-cannot-write.pdr".into(), "cannot create"),
        ] {
            for force in [&[][..], &["--force"][..]] {
                if !force.is_empty() && expected == "already exists" {
                    // --force may replace a regular file: that case is below.
                    continue;
                }
                let out = record(&python.path, &output, force, &code);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(9), "{label}: {output:?}: {stderr}");
                assert!(stderr.contains(expected), "{label}: {output:?}: {stderr}");
                assert!(
                    !marker.exists(),
                    "{label}: {output:?}: the program ran although the output was refused"
                );
            }
        }
        assert_eq!(std::fs::read(&taken).unwrap(), b"precious", "{label}");
        assert!(!dir.path().join("nowhere.pdr").exists(), "{label}");
    }
}

#[test]
fn force_replaces_a_file_by_a_new_one_and_never_writes_through_a_hard_link() {
    for python in test_pythons("record --force replaces by rename") {
        let label = python.label();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.pdr");
        let other = dir.path().join("other-name");
        std::fs::write(&output, b"someone else's data").unwrap();
        std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::hard_link(&output, &other).unwrap();
        let before = std::fs::metadata(&output).unwrap().ino();
        let out = record(
            &python.path,
            &output,
            &["--force"],
            "import time; time.sleep(0.3)",
        );
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&other).unwrap(),
            b"someone else's data",
            "{label}: written through the hard link"
        );
        let meta = std::fs::metadata(&output).unwrap();
        assert_ne!(meta.ino(), before, "{label}: not a new file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{label}");
        let verify = run("pydeep", &["verify", s(&output)]);
        assert!(verify.status.success(), "{label}");
        // Nothing left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{label}: {names:?}");
    }
}

#[test]
fn viewer_outputs_never_follow_links_and_replace_files_by_new_ones() {
    let python = &test_pythons("viewer -o")[0];
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("r.pdr");
    let out = record(
        &python.path,
        &recording,
        &["--snapshot-every", "100ms", "--snapshot-locals"],
        "import time\ndef work(items):\n    end = time.monotonic() + 1\n    while time.monotonic() < end: pass\nwork([1, 2])",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let victim = dir.path().join("passwd");
    std::fs::write(&victim, b"root:x:0:0").unwrap();
    let link = dir.path().join("link.out");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dangling = dir.path().join("dangling.out");
    std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
    let file = dir.path().join("file.out");
    let file_link = dir.path().join("file-other-name");
    let r = s(&recording);
    for command in [
        vec!["flamegraph", r],
        vec!["collapsed", r],
        vec!["speedscope", r],
        vec!["pprof", r],
        vec!["chrome", r],
        vec!["objects", r],
    ] {
        for path in [&link, &dangling] {
            let mut args = command.clone();
            args.extend_from_slice(&["-o", s(path)]);
            let out = run("pydeep-view", &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(stderr.contains("symbolic link"), "{args:?}: {stderr}");
        }
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"root:x:0:0",
            "{command:?}"
        );
        assert!(!dir.path().join("created").exists(), "{command:?}");

        let _ = std::fs::remove_file(&file_link);
        std::fs::write(&file, b"old").unwrap();
        std::fs::hard_link(&file, &file_link).unwrap();
        let mut args = command.clone();
        args.extend_from_slice(&["-o", s(&file)]);
        let out = run("pydeep-view", &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(std::fs::read(&file).unwrap(), b"old", "{command:?}");
        assert_eq!(std::fs::read(&file_link).unwrap(), b"old", "{command:?}");
    }
    // A device is written as it is.
    let out = run("pydeep-view", &["collapsed", r, "-o", "/dev/null"]);
    assert!(out.status.success());
}
