//! `record --subprocesses` follows a child whose parent exits right after
//! forking it (issue #14 item 15: missed on 3.9): pydeep is the subreaper
//! of the program's tree, so the orphan is re-parented to it, found, sampled
//! in its own function and its end recorded with its exit status. On every
//! interpreter.

use pydeep_format::proto::ProcessEventKind;
use pydeep_format::{Event, Recording};
use pydeep_integration::recording::stack_names;
use pydeep_integration::run::record_program;
use pydeep_integration::test_pythons;

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
        let child: u32 = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: the child wrote no pid: {e}", python.label()))
            .trim()
            .parse()
            .unwrap();
        let mut recording = Recording::open(&output).unwrap();
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
            "{}: the orphan {child} has {in_work} samples in orphan_work",
            python.label()
        );
        assert!(
            ended.contains(&(ProcessEventKind::ProcessExited, 0)),
            "{}: the orphan's end: {ended:?}",
            python.label()
        );
    }
}
