//! Shared by the daemon tests: a `pydeep daemon` started on a config in a
//! temporary folder, its control socket, the files it writes, and Python
//! targets tagged so that only the test's own rule selects them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pydeep_integration::{program, workspace_binary, Python};
use serde_json::{json, Value};

/// A running daemon; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub out: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `pydeep daemon` with `settings` (top-level keys and tables,
    /// `output_dir` and `socket` are filled in) and waits for its socket.
    pub fn start(settings: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let socket = dir.path().join("control.sock");
        let config = dir.path().join("daemon.toml");
        let log = dir.path().join("daemon.log");
        write_config(&config, &out, &socket, settings);
        let child = Command::new(workspace_binary("pydeep"))
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            dir,
            out,
            socket,
            config,
            log,
        };
        daemon.wait_until("the control socket exists", Duration::from_secs(60), |d| {
            d.socket.exists()
        });
        daemon
    }

    /// Rewrites the configuration (to be loaded on SIGHUP).
    pub fn rewrite_config(&self, settings: &str) {
        write_config(&self.config, &self.out, &self.socket, settings);
    }

    /// Sends `request` on a new connection and returns the reply.
    pub fn request(&self, request: &Value) -> Value {
        let mut stream = UnixStream::connect(&self.socket).expect("connect to the control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        stream.write_all(&line).unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
    }

    pub fn status(&self) -> Value {
        let status = self.request(&json!({"command": "status"}));
        assert_eq!(status["ok"], true, "{status}");
        status
    }

    /// The live target with `pid` in the status, if any.
    pub fn target(&self, pid: u32) -> Option<Value> {
        self.status()["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pid"] == pid)
            .cloned()
    }

    /// The finished target with `pid` in the status, if any.
    pub fn finished(&self, pid: u32) -> Option<Value> {
        self.status()["finished"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pid"] == pid)
            .cloned()
    }

    /// Polls `condition` every 50 ms; panics with the daemon's log after
    /// `limit` (a bound against hanging, not a timing assertion).
    pub fn wait_until(&mut self, what: &str, limit: Duration, condition: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if condition(self) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "daemon exited ({status}) waiting for {what}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; daemon log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 60 s after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Finished recordings (`.pdr`) of `pid`, oldest first (names sort by time).
    pub fn files_of(&self, pid: u32) -> Vec<PathBuf> {
        files(&self.out)
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.ends_with(".pdr") && name.split('-').nth(1) == Some(&pid.to_string())
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(path: &Path, out: &Path, socket: &Path, settings: &str) {
    // Top-level keys must come before any table.
    let text = format!(
        "output_dir = {:?}\nsocket = {:?}\n{settings}\n",
        out.display().to_string(),
        socket.display().to_string()
    );
    std::fs::write(path, text).unwrap();
}

/// Every file in `dir`, sorted by name.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// `pydeep verify FILE` passes.
pub fn verifies(path: &Path) -> Result<(), String> {
    let out = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// A Python target started by a test, tagged for the test's rule.
pub struct Target {
    pub child: Child,
    pub python: Python,
    ready: PathBuf,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `daemon_target.py` with `tag` on its command line.
    pub fn start(python: &Python, tag: &str, workers: u32) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let child = Command::new(&python.path)
            .arg(program("daemon_target.py"))
            .arg(&ready)
            .arg(tag)
            .arg(workers.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Target {
            child,
            python: python.clone(),
            ready,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the program's own truth: its stack at `daemon_leaf`.
    pub fn truth(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready.exists() {
            assert!(
                Instant::now() < deadline,
                "{} never ready",
                self.python.label()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        serde_json::from_str(&std::fs::read_to_string(&self.ready).unwrap()).unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tag unique to this test run, so rules select no other process.
pub fn tag(test: &str) -> String {
    format!("pydeep-test-{test}-{}", std::process::id())
}

/// A recording's footer and its events of interest.
pub struct Ends {
    pub footer: pydeep_format::proto::Footer,
    pub header: pydeep_format::proto::Header,
    pub first_sample_ns: Option<u64>,
    pub last_sample_ns: Option<u64>,
    /// The sampler ticks the samples stand for (their weights): the time
    /// they cover, whatever the stratum the schedule sampled them from.
    pub sample_weights: u64,
    pub process_events: Vec<pydeep_format::proto::ProcessEvent>,
    pub snapshots: Vec<pydeep_format::proto::Snapshot>,
}

/// Reads `path` whole: header, footer, sample time range, events.
pub fn ends(path: &Path) -> Ends {
    use pydeep_format::{Event, Recording};
    let mut recording = Recording::open(path).unwrap();
    let header = recording.header().clone();
    let mut footer = None;
    let (mut first, mut last) = (None, None);
    let mut sample_weights = 0u64;
    let mut process_events = Vec::new();
    let mut snapshots = Vec::new();
    while let Some(event) = recording.next_event().unwrap() {
        match event {
            Event::Sample(sample) => {
                first.get_or_insert(sample.time_ns);
                last = Some(sample.time_ns);
                sample_weights += u64::from(sample.weight);
            }
            Event::Process(event) => process_events.push(event),
            Event::Snapshot(snapshot) => snapshots.push(*snapshot),
            Event::Footer(f) => footer = Some(f),
            _ => {}
        }
    }
    Ends {
        footer: footer.unwrap_or_else(|| panic!("{} has no footer", path.display())),
        header,
        first_sample_ns: first,
        last_sample_ns: last,
        sample_weights,
        process_events,
        snapshots,
    }
}
