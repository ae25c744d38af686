//! `record --subprocesses` follows a child whose parent exits right after
//! forking it (issue #14 item 15: missed on 3.9): pydeep is the subreaper
//! of the program's tree, so the orphan is re-parented to it, found, sampled
//! in its own function and its end recorded with its exit status. A
//! program that is gone before pydeep's first attach (a wrapper that starts
//! Python in the background and exits; under load, any quick parent) leaves
//! its living descendants recorded, not exit 7. On every interpreter.

use std::path::Path;
use std::process::{Command, Stdio};

use pydeep_format::proto::ProcessEventKind;
use pydeep_format::{Event, Recording};
use pydeep_integration::recording::stack_names;
use pydeep_integration::run::record_program;
use pydeep_integration::{program, test_pythons, workspace_binary};

/// Checks that `recording` holds the orphan whose pid is in `pid_file`
/// working in `orphan_work`, and its exit with status 0.
fn assert_orphan_recorded(label: &str, recording: &Path, pid_file: &Path) {
    let child: u32 = std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("{label}: the child wrote no pid: {e}"))
        .trim()
        .parse()
        .unwrap();
    let mut recording = Recording::open(recording).unwrap();
    let mut in_work = 0u64;
    let mut ended = Vec::new();
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(sample) => {
                let tables = recording.tables();
                let pid = tables.threads.get(&sample.thread).map(|t| t.pid);
                if pid == Some(child)
                    && stack_names(tables, sample.stack)
                        .iter()
                        .any(|n| n == "orphan_work")
                {
                    in_work += 1;
                }
            }
            Event::Process(event) if event.pid == child => {
                ended.push((event.kind(), event.code));
            }
            _ => {}
        }
    }
    assert!(
        in_work > 20,
        "{label}: the orphan {child} has {in_work} samples in orphan_work"
    );
    assert!(
        ended.contains(&(ProcessEventKind::ProcessExited, 0)),
        "{label}: the orphan's end: {ended:?}"
    );
}

#[test]
fn a_child_orphaned_at_once_is_followed_and_its_end_recorded() {
    for python in test_pythons("record --subprocesses: orphaned child") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("orphan.pdr");
        let pid_file = dir.path().join("child.pid");
        let status = record_program(
            &python,
            &["--subprocesses", "-r", "200"],
            &output,
            "orphan_child.py",
            &[pid_file.to_str().unwrap(), "1.0"],
        );
        assert!(status.success(), "{}: {status}", python.label());
        assert_orphan_recorded(&python.label(), &output, &pid_file);
    }
}

#[test]
fn a_program_gone_before_the_first_attach_leaves_its_descendants_recorded() {
    for python in test_pythons("record --subprocesses: program gone before attach") {
        let label = python.label();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("wrapper.pdr");
        let pid_file = dir.path().join("child.pid");
        // The program is a shell that starts Python in the background and
        // exits with 3: never attachable, gone at once, its Python
        // re-parented to pydeep.
        let script = "\"$0\" \"$1\" \"$2\" 1.0 & exit 3";
        let result = Command::new(workspace_binary("pydeep"))
            .args(["record", "--subprocesses", "-r", "200", "-o"])
            .arg(&output)
            .args(["--", "sh", "-c", script])
            .arg(&python.path)
            .arg(program("orphan_child.py"))
            .arg(&pid_file)
            .stdin(Stdio::null())
            .output()
            .expect("run pydeep record");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(
            result.status.code(),
            Some(3),
            "{label}: the program's own exit code: {stderr}"
        );
        assert!(
            stderr.contains("recording its descendants"),
            "{label}: says the program was gone: {stderr}"
        );
        assert_orphan_recorded(&label, &output, &pid_file);
    }
}
