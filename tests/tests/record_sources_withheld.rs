//! A target names a file in `co_filename` (here by `compile()`ing code under
//! that name): pydeep embeds it only if the target's own user could read
//! it, through the target's root, never as pydeep (root) sees it. A target
//! running as `nobody` that names a root-only file (0600) gets nothing of
//! it embedded, and the summary and `info` say why; a world-readable file
//! named the same way is embedded, so the check is not a blanket refusal.
//!
//! Runs on the interpreters `nobody` can start (the pyenv ones live under
//! root's 0700 home); the rule is the agent's, not the interpreter's.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use pydeep_format::Recording;
use pydeep_integration::{test_pythons, workspace_binary};

/// Runs as `nobody`: compiles a function under each of two file names and
/// spins in both for `seconds`.
const PROGRAM: &str = r#"
import sys, time
secret, public, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
src = "def {0}(until):\n    while time.monotonic() < until:\n        pass\n"
ns = {"time": time}
exec(compile(src.format("in_secret"), secret, "exec"), ns)
exec(compile(src.format("in_public"), public, "exec"), ns)
end = time.monotonic() + seconds
while time.monotonic() < end:
    ns["in_secret"](time.monotonic() + 0.05)
    ns["in_public"](time.monotonic() + 0.05)
"#;

const NOBODY: &[&str] = &["--reuid=65534", "--regid=65534", "--clear-groups"];

#[test]
fn a_root_only_file_named_by_an_unprivileged_target_is_withheld_and_said_so() {
    let mut tested = 0;
    for python in test_pythons("sources withheld from an unprivileged target") {
        let label = python.label();
        let runs = Command::new("setpriv")
            .args(NOBODY)
            .arg(&python.path)
            .args(["-c", "pass"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !runs {
            eprintln!("{label}: skipped (nobody cannot run it)");
            continue;
        }
        tested += 1;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("secret.py");
        let public = dir.path().join("public.py");
        std::fs::write(
            &secret,
            "def in_secret(until):\n    TOKEN = 'hunter2-root-only'\n    pass\n",
        )
        .unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            &public,
            "def in_public(until):\n    note = 'world-readable'\n    pass\n",
        )
        .unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        let output = dir.path().join("withheld.pdr");
        let run = Command::new(workspace_binary("pydeep"))
            .args(["record", "-r", "200", "-o"])
            .arg(&output)
            .args(["--", "setpriv"])
            .args(NOBODY)
            .arg(&python.path)
            .args(["-c", PROGRAM])
            .arg(&secret)
            .arg(&public)
            .arg("1.5")
            .output()
            .unwrap();
        let summary = String::from_utf8_lossy(&run.stderr).into_owned()
            + &String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{label}: record failed: {summary}");

        let mut recording = Recording::open(&output).unwrap();
        while recording.next_event().unwrap().is_some() {}
        let tables = recording.tables();
        let named = |path: &std::path::Path| {
            let path = path.display().to_string();
            tables
                .source_files
                .values()
                .filter(|def| tables.string(def.path) == path)
                .cloned()
                .collect::<Vec<_>>()
        };
        let secret_defs = named(&secret);
        assert!(
            !secret_defs.is_empty(),
            "{label}: no sample in the secret code object"
        );
        for def in &secret_defs {
            assert!(def.missing && def.content.is_empty(), "{label}: {def:?}");
            assert!(
                def.missing_reason
                    .contains("not readable by the target's user (uid 65534"),
                "{label}: reason {:?}",
                def.missing_reason
            );
        }
        for def in tables.source_files.values() {
            assert!(
                !String::from_utf8_lossy(&def.content).contains("hunter2"),
                "{label}: the secret was embedded"
            );
        }
        let public_defs = named(&public);
        assert!(
            public_defs
                .iter()
                .any(|d| String::from_utf8_lossy(&d.content).contains("world-readable")),
            "{label}: the world-readable file was not embedded: {public_defs:?}"
        );
        let secret_name = secret.display().to_string();
        assert!(
            summary.contains(&format!("source withheld: {secret_name}: not readable")),
            "{label}: the summary does not say: {summary}"
        );
        let info = pydeep_integration::run::info(&output);
        assert!(
            info.contains(&format!("withheld:    source {secret_name}: not readable")),
            "{label}: info does not say: {info}"
        );
        println!(
            "{label}: secret withheld ({}), public embedded",
            secret_defs[0].missing_reason
        );
    }
    assert!(tested > 0, "no interpreter nobody can run");
}
