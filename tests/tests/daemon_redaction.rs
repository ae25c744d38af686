//! The daemon masks secret-looking values of the command lines it records
//! with the default `--redact` pattern everywhere: in each file's header
//! as in its process events. (The header's argv was once masked only by
//! `record`/`attach`: it read a pattern only they set.)

mod daemon_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::{tag, Daemon};
use pydeep_format::{Event, Recording};
use pydeep_integration::test_pythons;
use pydeep_integration::waits::wait_for_file;
use serde_json::json;

#[test]
fn the_daemon_masks_secrets_in_the_recorded_command_lines_of_headers_and_events() {
    let python = test_pythons("daemon redaction")
        .into_iter()
        .rfind(|p| p.at_least(3, 11))
        .unwrap();
    let label = python.label();
    let tag = tag("redaction");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[[target]]\nname = \"red\"\ncmdline = \"{tag}\"\nrate = 100\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut target = Command::new(&python.path)
        .args(["-c", pydeep_integration::waits::BUSY])
        .arg(&ready)
        .arg(&tag)
        .arg("--password=hunter2-in-argv")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready, &mut target, &label);
    let pid = target.id();
    daemon.wait_until("recording", Duration::from_secs(60), |d| {
        d.target(pid)
            .is_some_and(|t| t["samples"].as_u64() > Some(10))
    });
    let reply = daemon.request(&json!({"command": "stop", "pid": pid}));
    assert_eq!(reply["ok"], true, "{label}: {reply}");
    let _ = target.kill();
    let _ = target.wait();
    let files = daemon.files_of(pid);
    assert!(!files.is_empty(), "{label}: no file");
    for file in files {
        let mut recording = Recording::open(&file).unwrap();
        let header_argv = recording.header().argv.join(" ");
        assert!(
            header_argv.contains(&tag) && !header_argv.contains("hunter2"),
            "{label}: header argv {header_argv:?}"
        );
        let mut events = 0;
        while let Some(event) = recording.next_event().unwrap() {
            if let Event::Process(event) = event {
                events += 1;
                let argv = event.argv.join(" ");
                assert!(!argv.contains("hunter2"), "{label}: event argv {argv:?}");
            }
        }
        assert!(events > 0, "{label}: no process event");
        println!("{label}: header argv {header_argv:?}");
    }
}
