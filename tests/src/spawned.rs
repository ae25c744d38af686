//! A `pydeep` command started by a test, its stderr echoed to the test's
//! output and readable line by line, so the test can wait for what pydeep
//! says ("tracing process", "traced ...") with a bound instead of a sleep.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::waits::LIMIT;

/// A started command and the lines of its stderr.
pub struct Spawned {
    /// The running command.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// The lines read so far, for messages.
    pub seen: Vec<String>,
    /// "LABEL", for messages.
    pub what: String,
}

impl Spawned {
    /// Starts `command` with its stderr piped (each line echoed as
    /// `   pydeep: LINE`).
    pub fn start(mut command: Command, what: &str) -> Spawned {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("   pydeep: {line}");
                let _ = send.send(line);
            }
        });
        Spawned {
            child,
            lines,
            seen: Vec::new(),
            what: what.to_owned(),
        }
    }

    /// Starts `pydeep trace PID -o OUTPUT ARGS...`.
    pub fn trace(pid: i32, output: &std::path::Path, args: &[&str], what: &str) -> Spawned {
        let mut command = Command::new(crate::workspace_binary("pydeep"));
        command
            .args(["trace", &pid.to_string(), "-o"])
            .arg(output)
            .args(args);
        Spawned::start(command, what)
    }

    /// Waits for a line of stderr containing `text` and returns it. Panics
    /// if the command ends without saying it, or after [`LIMIT`].
    pub fn wait_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line.clone());
                if line.contains(text) {
                    return line;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                panic!(
                    "{}: pydeep ended ({status}) before saying {text:?}: {:?}",
                    self.what, self.seen
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: pydeep never said {text:?}: {:?}",
                self.what,
                self.seen
            );
        }
    }

    /// Waits until pydeep has said that at least `threads` threads have
    /// the trace hook ("hooks on N threads": when the window opened, or
    /// when the tracer's rescan hooked threads started since) and returns
    /// that line. Lines already seen count.
    pub fn wait_hooked(&mut self, threads: u64) -> String {
        let hooked = |line: &str| {
            line.split("hooks on ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= threads)
        };
        if let Some(line) = self.seen.iter().find(|l| hooked(l)) {
            return line.clone();
        }
        loop {
            let line = self.wait_line("hooks on ");
            if hooked(&line) {
                return line;
            }
        }
    }

    /// Every line the command said, once it has ended and closed its
    /// stderr (waited for at most [`LIMIT`]).
    pub fn all_lines(&mut self) -> &[String] {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return &self.seen,
                Err(mpsc::RecvTimeoutError::Timeout) => assert!(
                    Instant::now() < deadline,
                    "{}: pydeep's stderr never closed: {:?}",
                    self.what,
                    self.seen
                ),
            }
        }
    }

    /// Waits until `pydeep trace` (or a recording's trace window) has its
    /// hooks in: it says "tracing process".
    pub fn wait_tracing(&mut self) {
        self.wait_line("tracing process");
    }
}
