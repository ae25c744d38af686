//! `--subprocesses` follows child Python processes, forked and spawned, on
//! every interpreter: their samples land in the same recording, tagged with
//! the children's own pids (which the children wrote down themselves).

use std::collections::HashSet;
use std::process::{Command, Stdio};

use pydeep_format::proto::ProcessEventKind;
use pydeep_format::{Event, Recording};
use pydeep_integration::{program, test_pythons, workspace_binary};

#[test]
fn forked_and_spawned_children_are_recorded_under_their_own_pids() {
    for python in test_pythons("record --subprocesses") {
        let dir = tempfile::tempdir().unwrap();
        let pids_dir = dir.path().join("pids");
        std::fs::create_dir(&pids_dir).unwrap();
        let output = dir.path().join("children.pdr");
        let status = Command::new(workspace_binary("pydeep"))
            .args(["record", "--subprocesses", "-r", "200", "-q", "-o"])
            .arg(&output)
            .arg("--")
            .arg(&python.path)
            .arg(program("spawn_children.py"))
            .arg(&pids_dir)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{}: {status}", python.label());

        // The children's own word on who they were.
        let mut forked = HashSet::new();
        let mut spawned = HashSet::new();
        for entry in std::fs::read_dir(&pids_dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let (kind, pid) = name.split_once('-').unwrap();
            let pid: u32 = pid.parse().unwrap();
            if kind == "fork" {
                forked.insert(pid)
            } else {
                spawned.insert(pid)
            };
        }
        assert_eq!((forked.len(), spawned.len()), (2, 1), "{}", python.label());

        let mut recording = Recording::open(&output).unwrap();
        let mut spawned_events = HashSet::new();
        let mut samples_by_pid_and_function: HashSet<(u32, String)> = HashSet::new();
        let mut stacks = Vec::new();
        while let Some(event) = recording.next_event().unwrap() {
            match event {
                Event::Process(p) if p.kind() == ProcessEventKind::ProcessSpawned => {
                    spawned_events.insert(p.pid);
                }
                Event::Sample(s) => stacks.push((s.thread, s.stack)),
                _ => {}
            }
        }
        let tables = recording.tables();
        for (thread, stack) in stacks {
            let pid = tables.threads[&thread].pid;
            for frame in tables.stack_frames(stack) {
                let code = tables.frames[&frame].code;
                let name = tables.string(tables.code_objects[&code].name).to_owned();
                samples_by_pid_and_function.insert((pid, name));
            }
        }
        for &pid in &forked {
            assert!(
                spawned_events.contains(&pid),
                "{}: no spawn event for fork {pid}",
                python.label()
            );
            assert!(
                samples_by_pid_and_function.contains(&(pid, "child_work".into())),
                "{}: no child_work samples from fork {pid}",
                python.label()
            );
        }
        for &pid in &spawned {
            assert!(
                samples_by_pid_and_function.contains(&(pid, "spawned_work".into())),
                "{}: no spawned_work samples from child {pid}",
                python.label()
            );
        }
        eprintln!(
            "{}: forks {forked:?} and child {spawned:?} recorded",
            python.label()
        );
    }
}
