//! What py-spy users type works (issue #17 item 8): `--pid` beside the
//! positional PID, shell completions, and `info --json` with the same facts
//! as the text.

use std::process::{Command, Stdio};

use pydeep_integration::recording::read;
use pydeep_integration::run::{info, record_program};
use pydeep_integration::waits::start_until_ready;
use pydeep_integration::{program, test_pythons, workspace_binary};

fn pydeep(args: &[&str]) -> std::process::Output {
    Command::new(workspace_binary("pydeep"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pydeep")
}

#[test]
fn attach_and_dump_take_the_pid_as_an_option_too() {
    let python = &test_pythons("cli: --pid")[0];
    let mut target = start_until_ready(python, "idle_forever.py");
    let pid = target.id().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("by-option.pdr");
    let out = pydeep(&[
        "attach",
        "--pid",
        &pid,
        "-d",
        "300ms",
        "--idle",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read(&output).samples > 0, "attach --pid recorded nothing");

    let by_option = pydeep(&["dump", "--pid", &pid]);
    assert!(by_option.status.success());
    let text = String::from_utf8_lossy(&by_option.stdout);
    assert!(text.contains(&format!("Process {pid}")), "{text}");

    // Both at once is ambiguous: a usage error (exit 2), naming the clash.
    let both = pydeep(&["dump", &pid, "--pid", &pid]);
    assert_eq!(both.status.code(), Some(2));
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(err.contains("cannot be used with"), "{err}");
    // Neither: the usage error says a PID is required.
    let neither = pydeep(&["heap"]);
    assert_eq!(neither.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&neither.stderr).contains("<PID>"));
    target.kill().unwrap();
    target.wait().unwrap();
}

#[test]
fn completion_scripts_name_every_subcommand_and_bash_parses_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pydeep(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["attach", "record", "dump", "heap", "objects", "pid", "rate"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    // bash -n checks the script's syntax without running it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pydeep.bash");
    std::fs::write(&path, pydeep(&["completions", "bash"]).stdout).unwrap();
    let status = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(status.success(), "bash rejects its completion script");
    // The script completes subcommands when sourced.
    let listed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; COMP_WORDS=(pydeep at); COMP_CWORD=1; _pydeep pydeep at pydeep; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "attach");
}

#[test]
fn info_json_holds_the_same_facts_as_the_text_and_the_file() {
    let python = &test_pythons("cli: info --json")[0];
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("facts.pdr");
    let status = record_program(python, &[], &output, "exit_with.py", &["0", "0.5"]);
    assert!(status.success());
    let out = pydeep(&["info", "--json", output.to_str().unwrap()]);
    assert!(out.status.success());
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json");
    let recorded = read(&output);
    assert_eq!(facts["samples"], recorded.samples);
    assert_eq!(
        facts["footer"]["sample_count"],
        recorded.footer_samples.unwrap()
    );
    assert_eq!(facts["complete"], true);
    assert_eq!(
        facts["file_bytes"],
        std::fs::metadata(&output).unwrap().len()
    );
    let text = info(&output);
    assert!(
        text.contains(&format!("samples:     {} in", recorded.samples)),
        "{text}"
    );
    let version = facts["target"]["python"]["version"].as_str().unwrap();
    assert!(
        python.label().contains(version),
        "{version} vs {}",
        python.label()
    );
    assert_eq!(facts["process_endings"]["total"], 1);
}

#[test]
fn a_clean_run_reports_no_read_error_for_the_targets_own_exit() {
    for python in test_pythons("record: summary of a clean run") {
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let output = dir.path().join("clean.pdr");
            let out = Command::new(workspace_binary("pydeep"))
                .args(["record", "-r", "500", "-o"])
                .arg(&output)
                .arg("--")
                .arg(&python.path)
                .arg(program("exit_with.py"))
                .args(["0", "0.3"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let summary = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {summary}", python.label());
            // The exit itself is never an error. (A read that fails while
            // the interpreter is still starting or finalizing, "no
            // interpreter found", can still be counted: seen once on 3.11.2.)
            assert!(
                !summary.contains("has exited"),
                "{}: the program's normal exit is reported as a read error:\n{summary}",
                python.label()
            );
        }
    }
}
