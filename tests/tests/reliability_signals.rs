//! Stop signals are honoured everywhere pydeep waits: `ctl` against a
//! socket that never answers (and its timeout, exit 11), `heap --interval`,
//! `record` of a program that is not Python yet; SIGHUP finishes a
//! recording with its footer like SIGTERM; `record` forwards SIGTERM to its
//! program, and a SIGKILLed `record` does not leave it running
//! (`PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pydeep_integration::waits::{wait_exit, wait_for_samples};
use pydeep_integration::{program, test_pythons, workspace_binary, Fixture};

fn spawn(args: &[&str]) -> Child {
    Command::new(workspace_binary("pydeep"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill on a pid this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Sends `signal` and checks the process ends within 5 s.
fn stops_quickly(child: &mut Child, signal: i32, what: &str) -> std::process::ExitStatus {
    kill(child.id(), signal);
    let sent = Instant::now();
    let status = wait_exit(child, what);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{what}: took {:?} to stop",
        sent.elapsed()
    );
    status
}

#[test]
fn ctl_against_a_socket_that_never_answers_stops_on_a_signal_or_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    // Accepts connections (the kernel does, into the backlog), never reads.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let path = socket.to_str().unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut ctl = spawn(&["ctl", "--socket", path, "status"]);
        std::thread::sleep(Duration::from_millis(300));
        let status = stops_quickly(&mut ctl, signal, "ctl");
        assert_eq!(status.signal(), Some(signal), "{status}");
        let stderr = stderr_of(&mut ctl);
        assert!(stderr.contains("stopped by SIG"), "{stderr}");
    }
    let started = Instant::now();
    let mut ctl = spawn(&["ctl", "--socket", path, "--timeout", "1s", "status"]);
    let status = wait_exit(&mut ctl, "ctl --timeout");
    assert_eq!(status.code(), Some(11), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = stderr_of(&mut ctl);
    assert!(stderr.contains("did not answer within 1 s"), "{stderr}");
}

#[test]
fn heap_waiting_between_counts_stops_on_sigint() {
    for python in test_pythons("heap --interval interrupted") {
        let label = python.label();
        let fixture = Fixture::start(&python, "many_threads.py", &["2"]);
        fixture.wait_ready();
        let pid = fixture.pid().to_string();
        let mut heap = spawn(&[
            "heap",
            &pid,
            "--interval",
            "30s",
            "--count",
            "3",
            "--top",
            "3",
        ]);
        // The first count is printed, then it waits 30 s.
        // The reader is kept open: a closed pipe would end heap on its own.
        let mut stdout = BufReader::new(heap.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.contains(" objects, "), "{label}: {first}");
        let status = stops_quickly(&mut heap, libc::SIGINT, &label);
        assert_eq!(status.signal(), Some(libc::SIGINT), "{label}: {status}");
        let stderr = stderr_of(&mut heap);
        assert!(
            stderr.contains("stopped by SIGINT after 1 of 3 counts"),
            "{label}: {stderr}"
        );
    }
}

#[test]
fn record_of_a_program_that_is_not_python_stops_on_sigterm_and_passes_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("sleep.pdr");
    let mut record = spawn(&[
        "record",
        "-o",
        output.to_str().unwrap(),
        "--",
        "sleep",
        "30",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let status = stops_quickly(&mut record, libc::SIGTERM, "record -- sleep 30");
    // sleep got the SIGTERM and died of it; pydeep reports that like a shell.
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
    let stderr = stderr_of(&mut record);
    assert!(stderr.contains("nothing was recorded"), "{stderr}");
    assert!(!output.exists(), "an empty recording was left");
}

/// Starts `pydeep record -q -r 200 -o OUTPUT -- PYTHON idle_forever.py`
/// and waits until a sample is flushed.
fn record_idle(python: &pydeep_integration::Python, output: &Path) -> Child {
    let mut record = Command::new(workspace_binary("pydeep"))
        .args(["record", "-q", "--idle", "-r", "200", "-o"])
        .arg(output)
        .arg("--")
        .arg(&python.path)
        .arg(program("idle_forever.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_samples(output, &mut record, &python.label());
    record
}

/// The one child of `pid`.
fn child_of(pid: u32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn verify(path: &Path) -> String {
    let out = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}: {text}", path.display());
    text
}

#[test]
fn sighup_finishes_attach_and_record_with_their_footer() {
    for python in test_pythons("SIGHUP finishes the recording") {
        let label = python.label();
        let fixture = Fixture::start(&python, "many_threads.py", &["2"]);
        fixture.wait_ready();
        let output = fixture.dir().join("attach.pdr");
        let mut attach = spawn(&[
            "attach",
            &fixture.pid().to_string(),
            "-q",
            "--idle",
            "-r",
            "200",
            "-o",
            output.to_str().unwrap(),
        ]);
        wait_for_samples(&output, &mut attach, &label);
        let status = stops_quickly(&mut attach, libc::SIGHUP, &label);
        assert_eq!(
            status.code(),
            Some(0),
            "{label}: {}",
            stderr_of(&mut attach)
        );
        let report = verify(&output);
        assert!(report.contains("interrupted"), "{label}: {report}");

        let output = fixture.dir().join("record.pdr");
        let mut record = record_idle(&python, &output);
        let program = child_of(record.id());
        kill(record.id(), libc::SIGHUP);
        // The recording ends; the program (not sent SIGHUP by anyone) runs on
        // until the test ends it, and pydeep waits for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !verify_quiet(&output) {
            assert!(Instant::now() < deadline, "{label}: no footer after SIGHUP");
            std::thread::sleep(Duration::from_millis(50));
        }
        kill(program, libc::SIGTERM);
        let status = wait_exit(&mut record, &label);
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{label}");
    }
}

fn verify_quiet(path: &Path) -> bool {
    Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn record_passes_sigterm_to_its_program_and_a_killed_record_leaves_no_orphan() {
    for python in test_pythons("record forwards SIGTERM, PR_SET_PDEATHSIG") {
        let label = python.label();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("forwarded.pdr");
        let mut record = record_idle(&python, &output);
        let status = stops_quickly(&mut record, libc::SIGTERM, &label);
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{label}");
        let report = verify(&output);
        assert!(report.contains("SIGTERM"), "{label}: {report}");

        let output = dir.path().join("killed.pdr");
        let mut record = record_idle(&python, &output);
        let program = child_of(record.id());
        kill(record.id(), libc::SIGKILL);
        record.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The program is reparented and killed; once reaped by init (or a
        // subreaper) its /proc entry goes, or it stays a zombie.
        loop {
            let state = std::fs::read_to_string(format!("/proc/{program}/stat"))
                .ok()
                .and_then(|t| t.rsplit(')').next().map(|r| r.trim().chars().next()))
                .flatten();
            if matches!(state, None | Some('Z') | Some('X')) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: the program outlived the SIGKILLed record"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn ctl_against_a_socket_whose_backlog_is_full_stops_on_its_timeout_or_a_signal() {
    let python = &test_pythons("ctl: full backlog")[0];
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("full.sock");
    // A listener with a backlog of 0, filled by connections never accepted:
    // a blocking connect(2) would wait for ever.
    let script = "import socket, sys, time\n\
        s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(0)\n\
        held = []\n\
        for _ in range(3):\n    \
            c = socket.socket(socket.AF_UNIX); c.setblocking(False)\n    \
            try: c.connect(sys.argv[1])\n    \
            except BlockingIOError: pass\n    \
            held.append(c)\n\
        print('ready', flush=True)\n\
        time.sleep(120)\n";
    let mut holder = Command::new(&python.path)
        .args(["-c", script])
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let path = socket.to_str().unwrap();
    let mut ctl = spawn(&["ctl", "--socket", path, "--timeout", "1s", "status"]);
    let status = wait_exit(&mut ctl, "ctl --timeout, full backlog");
    let stderr = stderr_of(&mut ctl);
    assert_eq!(status.code(), Some(11), "{status}: {stderr}");
    let mut ctl = spawn(&["ctl", "--socket", path, "status"]);
    std::thread::sleep(Duration::from_millis(300));
    let status = stops_quickly(&mut ctl, libc::SIGINT, "ctl, full backlog");
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    let _ = holder.kill();
    let _ = holder.wait();
}
