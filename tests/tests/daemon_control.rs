//! The control socket: owner-only (mode 0600, and SO_PEERCRED refuses other
//! uids even when the mode is loosened), garbage requests get a clear JSON
//! error and leave the daemon serving, and the ctl commands (snapshot with
//! locals, stop, start, flush) do what they say, on every interpreter.

mod daemon_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use daemon_support::{ends, tag, verifies, Daemon, Target};
use pydeep_integration::{test_pythons, workspace_binary};
use serde_json::{json, Value};

/// Connects as uid/gid 65534 (nobody) through a Python helper and returns
/// what it printed: the reply line, or the connect error.
fn connect_as_nobody(python: &std::path::Path, socket: &std::path::Path) -> String {
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print('connect failed:', e.errno); sys.exit(0)\n\
        try:\n    s.sendall(b'{\"command\":\"status\"}\\n')\nexcept OSError:\n    pass\n\
        print(s.makefile().readline().strip())\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_socket_refuses_other_users_and_garbage_and_keeps_serving() {
    // The helper runs as nobody: an interpreter nobody may execute (the
    // pyenv ones and those scripts/build-pythons builds live under root's
    // home). It is only a socket client, not a target: when the chosen
    // interpreters (PYDEEP_TEST_PYTHONS) hold none under /usr, any
    // /usr/bin/python3 serves.
    let python = test_pythons("daemon control socket")
        .into_iter()
        .map(|p| p.path)
        .find(|p| p.starts_with("/usr/"))
        .or_else(|| {
            let system = std::path::PathBuf::from("/usr/bin/python3");
            system.exists().then_some(system)
        })
        .expect("a system python3 under /usr/bin for the helper run as nobody");
    let mut daemon = Daemon::start("scan_interval = \"100ms\"\n");
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Let nobody reach the socket's folder: only the socket's mode and the
    // daemon's credential check stand in the way.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused = connect_as_nobody(&python, &daemon.socket);
    assert_eq!(refused, format!("connect failed: {}", libc::EACCES));
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let reply: Value = serde_json::from_str(&connect_as_nobody(&python, &daemon.socket)).unwrap();
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("uid 65534"),
        "{reply}"
    );
    assert!(daemon.log_text().contains("control connection refused"));

    // Garbage on one connection: each line gets an error, the connection
    // and the daemon stay usable.
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let garbage: [&[u8]; 7] = [
        b"hello\n",
        b"{\"command\":\"explode\"}\n",
        b"{\"command\":\"stop\"}\n",
        b"{\"command\":\"stop\",\"pid\":\"x\"}\n",
        b"[1,2,3]\n",
        b"\xff\xfe\x00\x01\n",
        b"{\"command\":\"snapshot\",\"pid\":1}\n",
    ];
    for line in garbage {
        stream.write_all(line).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["ok"], false, "{line:?}: {reply}");
        assert!(!reply["error"].as_str().unwrap().is_empty());
    }
    stream.write_all(b"{\"command\":\"status\"}\n").unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&reply).unwrap()["ok"], true);
    // An endless line is cut off with an error.
    let mut long = UnixStream::connect(&daemon.socket).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = long.write_all(&vec![b'x'; 100 << 10]);
    let mut reply = String::new();
    BufReader::new(long).read_line(&mut reply).unwrap();
    assert!(reply.contains("longer than"), "{reply}");
    // Still serving, and the ctl client reports errors with exit 1.
    assert_eq!(daemon.status()["ok"], true);
    let ctl = Command::new(workspace_binary("pydeep"))
        .args(["ctl", "--socket"])
        .arg(&daemon.socket)
        .args(["stop", "999999999"])
        .output()
        .unwrap();
    assert_eq!(ctl.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ctl.stderr).contains("not being recorded"));
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// Snapshots the ctl test takes of each target.
const SNAPSHOTS: usize = 5;

#[test]
fn ctl_snapshots_stops_starts_and_flushes_on_every_interpreter() {
    let pythons = test_pythons("daemon ctl");
    let tag = tag("ctl");
    let mut daemon = Daemon::start(&format!(
        "scan_interval = \"100ms\"\n[[target]]\nname = \"ctl\"\ncmdline = \"{tag}\"\nrate = 100\n"
    ));
    let targets: Vec<Target> = pythons.iter().map(|p| Target::start(p, &tag, 0)).collect();
    for target in &targets {
        target.truth();
        let pid = target.pid();
        let label = target.python.label();
        daemon.wait_until(
            &format!("{label} recording"),
            Duration::from_secs(60),
            |d| {
                d.target(pid)
                    .is_some_and(|t| t["samples"].as_u64() >= Some(10))
            },
        );
        let ctl = |args: &[&str]| {
            Command::new(workspace_binary("pydeep"))
                .args(["ctl", "--json", "--socket"])
                .arg(&daemon.socket)
                .args(args)
                .output()
                .unwrap()
        };
        // Several snapshots: the main thread spends a little of its time in
        // daemon_work between two daemon_leaf calls (3.12.1 in a CI proxy:
        // a snapshot there holds no `n`), so at least one must catch
        // daemon_leaf.
        for _ in 0..SNAPSHOTS {
            let out = ctl(&["snapshot", &pid.to_string(), "--locals"]);
            assert!(
                out.status.success(),
                "{label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                reply["snapshot"]["threads"].as_u64() >= Some(1),
                "{label}: {reply}"
            );
        }
        // flush: the open file's chunks hold the snapshot now.
        assert_eq!(daemon.request(&json!({"command": "flush"}))["ok"], true);
        let out = ctl(&["stop", &pid.to_string()]);
        assert!(out.status.success(), "{label}");
        // Not picked up again by discovery, until started by hand.
        std::thread::sleep(Duration::from_millis(500));
        assert!(daemon.target(pid).is_none(), "{label}: picked up again");
        let files = daemon.files_of(pid);
        let last = ends(files.last().unwrap());
        verifies(files.last().unwrap()).unwrap();
        assert_eq!(last.footer.end_reason, "stopped by `pydeep ctl stop`");
        // The snapshots: daemon_leaf's argument n is 2000, as the program
        // passes it, in those that caught daemon_leaf (at least one).
        assert_eq!(last.snapshots.len(), SNAPSHOTS, "{label}: snapshots kept");
        let n_values: Vec<&str> = last
            .snapshots
            .iter()
            .flat_map(|s| &s.threads)
            .flat_map(|t| &t.frames)
            .flat_map(|f| &f.locals)
            .filter(|v| v.value == "2000")
            .map(|v| v.value.as_str())
            .collect();
        assert!(!n_values.is_empty(), "{label}: {:?}", last.snapshots);
        let out = ctl(&["start", &pid.to_string()]);
        assert!(out.status.success(), "{label}");
        daemon.wait_until(
            &format!("{label} recording again"),
            Duration::from_secs(60),
            |d| {
                d.target(pid)
                    .is_some_and(|t| t["samples"].as_u64() >= Some(10))
            },
        );
    }
    assert_eq!(daemon.terminate().code(), Some(0));
    for target in &targets {
        let files = daemon.files_of(target.pid());
        assert!(files.len() >= 2);
        for file in &files {
            verifies(file).unwrap();
        }
    }
}
