//! A recording survives the death of the agent: SIGKILL `pydeep` mid-run and
//! every chunk flushed before the kill is still readable, with at most about
//! a second of samples lost, on every interpreter.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pydeep_format::{Event, FormatError, Recording};
use pydeep_integration::{program, test_pythons, workspace_binary};

#[test]
fn killing_the_agent_loses_at_most_the_last_second() {
    for python in test_pythons("agent SIGKILL") {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("killed.pdr");
        let truth = dir.path().join("truth.json");
        let mut target = Command::new(&python.path)
            .arg(program("cpu_shares.py"))
            .arg(&truth)
            .arg("30")
            .spawn()
            .unwrap();
        // Attach once the target's interpreter is up (an attempt that comes
        // too early is refused as "not Python", exit 5), and count from the
        // moment the recording exists.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut agent = start_agent(target.id(), &output);
        while !output.exists() {
            if let Some(status) = agent.try_wait().unwrap() {
                assert_eq!(
                    status.code(),
                    Some(5),
                    "{}: pydeep stopped: {status}",
                    python.label()
                );
                std::thread::sleep(Duration::from_millis(100));
                agent = start_agent(target.id(), &output);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no recording after 30 s",
                python.label()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(3500));
        agent.kill().unwrap();
        let killed_after = started.elapsed();
        agent.wait().unwrap();
        target.kill().unwrap();
        target.wait().unwrap();

        // `verify` calls it incomplete but says what is readable.
        let verify = Command::new(workspace_binary("pydeep"))
            .arg("verify")
            .arg(&output)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&verify.stdout);
        assert_eq!(
            verify.status.code(),
            Some(8),
            "{}: {report}",
            python.label()
        );

        // Every complete chunk reads; the end is reported as truncation (or
        // a clean end of the flushed chunks), never as corruption.
        let mut recording = Recording::open(&output).unwrap();
        let mut samples = 0u64;
        let mut first = None;
        let mut last = 0u64;
        loop {
            match recording.next_event() {
                Ok(Some(Event::Sample(sample))) => {
                    samples += 1;
                    first.get_or_insert(sample.time_ns);
                    last = sample.time_ns;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(FormatError::Truncated { .. }) => break,
                Err(other) => panic!("{}: {other}", python.label()),
            }
        }
        let covered = Duration::from_nanos(last - first.unwrap_or(last));
        eprintln!(
            "{}: killed after {killed_after:?}; {samples} samples readable covering {covered:?}; {report}",
            python.label()
        );
        assert!(samples > 0, "{}: nothing readable", python.label());
        // At most the last flush interval (1 s) may be missing, plus a
        // little slack for the first tick and the kill itself.
        assert!(
            covered + Duration::from_millis(1300) >= killed_after,
            "{}: samples cover only {covered:?} of {killed_after:?}",
            python.label()
        );
    }
}

fn start_agent(pid: u32, output: &std::path::Path) -> std::process::Child {
    Command::new(workspace_binary("pydeep"))
        .args(["attach", &pid.to_string(), "-r", "200", "-q", "-o"])
        .arg(output)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
