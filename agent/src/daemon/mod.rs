//! `pydeep daemon`: records many Python processes continuously.
//!
//! The control plane runs on a single-threaded tokio runtime: the control
//! socket, signals (SIGTERM, SIGINT, SIGHUP), the discovery timer, the
//! retention sweep and the CPU budget. Each target is sampled on its own
//! OS thread ([`worker`]), which reuses the session's attach and sampling
//! code and writes the target's stream of rotated files ([`rotation`]).
//!
//! | module | job |
//! |---|---|
//! | [`config`] | the TOML file, defaults, validation |
//! | [`discovery`] | which processes the rules select (`/proc` scan) |
//! | [`worker`] | one target's sampling thread and its status |
//! | [`rotation`] | file names, rotation, retention |
//! | [`budget`] | the daemon's CPU use and the rate factor |
//! | [`control`] | the JSON control socket and the `ctl` client |

pub mod budget;
pub mod config;
pub mod control;
pub mod discovery;
pub mod worker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::recording::rotation;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::cli::exit::Exit;
use budget::{Budget, RateFactor};
use config::{Config, TargetSettings};
use control::{error_reply, Envelope, Request};
use discovery::{Process, Refused};
use worker::{Command, Report, TargetStatus, WorkerSpec};

/// The configuration read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/pydeep/daemon.toml";

/// Finished targets kept for `ctl status`.
const FINISHED_KEPT: usize = 100;

/// Runs the daemon until SIGTERM or SIGINT; exit 0 once every file is
/// finished.
pub fn run(config_path: Option<&Path>) -> Result<Exit> {
    init_logging();
    let path = config_path.unwrap_or(Path::new(DEFAULT_CONFIG)).to_owned();
    // A bad configuration is bad input, like a bad option: exit 2.
    let config = Config::load(&path)
        .map_err(|e| crate::cli::exit::Failure::new(Exit::Usage, e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control plane")?;
    runtime.block_on(async move {
        let mut daemon = Daemon::new(config, path)?;
        daemon.serve().await
    })?;
    Ok(Exit::Ok)
}

/// Structured logs on stderr: plain when journald reads them (it stamps
/// time itself), with time otherwise. `RUST_LOG` filters (default info).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// A live target thread.
struct Handle {
    process: Process,
    commands: std::sync::mpsc::Sender<Command>,
    status: Arc<Mutex<TargetStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Started with `ctl start`: kept whatever the rules say.
    by_hand: bool,
}

impl Handle {
    fn status(&self) -> TargetStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Daemon {
    config: Config,
    config_path: PathBuf,
    workers: HashMap<i32, Handle>,
    finished: VecDeque<TargetStatus>,
    refused: Refused,
    stopped_by_hand: HashSet<(i32, u64)>,
    pending_stops: HashMap<i32, Vec<oneshot::Sender<Value>>>,
    factor: Arc<RateFactor>,
    budget: Budget,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports: mpsc::UnboundedReceiver<Report>,
    deleted_files: u64,
    started: Instant,
}

impl Daemon {
    fn new(config: Config, config_path: PathBuf) -> Result<Daemon> {
        create_output_dir(&config.output_dir)?;
        let (reports_tx, reports) = mpsc::unbounded_channel();
        Ok(Daemon {
            budget: Budget::new(config.cpu_budget_percent),
            config,
            config_path,
            workers: HashMap::new(),
            finished: VecDeque::new(),
            refused: Refused::default(),
            stopped_by_hand: HashSet::new(),
            pending_stops: HashMap::new(),
            factor: Arc::new(RateFactor::default()),
            reports_tx,
            reports,
            deleted_files: 0,
            started: Instant::now(),
        })
    }

    async fn serve(&mut self) -> Result<()> {
        let listener = control::bind(&self.config.socket)?;
        let (requests_tx, mut requests) = mpsc::channel::<Envelope>(64);
        let server = tokio::spawn(control::serve(listener, requests_tx));
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut scan = tokio::time::interval(self.config.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut budget = tokio::time::interval(Duration::from_secs(1));
        tracing::info!(
            config = %self.config_path.display(),
            output = %self.config.output_dir.display(),
            socket = %self.config.socket.display(),
            rules = self.config.targets.len(),
            "daemon started"
        );
        let signal_name = loop {
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = hangup.recv() => {
                    self.reload();
                    scan = tokio::time::interval(self.config.scan_interval);
                    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                _ = scan.tick() => {
                    self.discover();
                    self.enforce_retention();
                }
                _ = budget.tick() => {
                    if let Some(factor) = self.budget.update(&self.factor) {
                        tracing::info!(
                            used_percent = self.budget.used * 100.0,
                            budget_percent = self.config.cpu_budget_percent,
                            factor,
                            "rate factor changed"
                        );
                    }
                }
                Some(report) = self.reports.recv() => self.on_report(report),
                Some((request, reply)) = requests.recv() => self.on_request(request, reply),
            }
        };
        tracing::info!("{signal_name}: finishing {} recordings", self.workers.len());
        server.abort();
        let _ = std::fs::remove_file(&self.config.socket);
        for handle in self.workers.values() {
            let _ = handle.commands.send(Command::Stop {
                reason: format!("daemon stopped ({signal_name})"),
            });
        }
        let threads: Vec<_> = self
            .workers
            .values_mut()
            .filter_map(|h| h.thread.take())
            .collect();
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await?;
        while let Ok(report) = self.reports.try_recv() {
            self.on_report(report);
        }
        self.enforce_retention();
        tracing::info!("daemon stopped");
        Ok(())
    }

    /// Starts a thread for every newly selected process.
    fn discover(&mut self) {
        let me = std::process::id() as i32;
        self.refused.retain_living();
        self.stopped_by_hand
            .retain(|&(pid, ticks)| discovery::start_ticks(pid) == Some(ticks));
        for (process, index) in discovery::scan(&self.config.targets, me) {
            if self.workers.contains_key(&process.pid)
                || self.refused.contains(&process)
                || self
                    .stopped_by_hand
                    .contains(&(process.pid, process.start_ticks))
            {
                continue;
            }
            let rule = &self.config.targets[index];
            let (name, settings) = (rule.name.clone(), rule.settings.clone());
            self.start(process, name, settings, false);
        }
    }

    fn start(&mut self, process: Process, name: String, settings: TargetSettings, by_hand: bool) {
        let (commands, receiver) = std::sync::mpsc::channel();
        let status = Arc::new(Mutex::new(TargetStatus {
            name: name.clone(),
            pid: process.pid,
            state: "attaching".into(),
            configured_rate_hz: settings.rate_hz,
            ..Default::default()
        }));
        let spec = WorkerSpec {
            name: name.clone(),
            process: process.clone(),
            settings,
            output_dir: self.config.output_dir.clone(),
            rotation: self.config.rotation,
        };
        match worker::spawn(
            spec,
            receiver,
            status.clone(),
            self.factor.clone(),
            self.reports_tx.clone(),
        ) {
            Ok(thread) => {
                tracing::debug!(pid = process.pid, target = %name, "selected");
                self.workers.insert(
                    process.pid,
                    Handle {
                        process,
                        commands,
                        status,
                        thread: Some(thread),
                        by_hand,
                    },
                );
            }
            Err(error) => tracing::error!(pid = process.pid, "cannot start a thread: {error}"),
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Refused {
                process,
                name,
                error,
            } => {
                // Logged once: the process is not tried again.
                tracing::warn!(pid = process.pid, target = %name, "skipped: {error}");
                self.refused.insert(&process);
            }
            Report::FileFinished { .. } => self.enforce_retention(),
            Report::Ended { process } => {
                if let Some(mut handle) = self
                    .workers
                    .remove_entry(&process.pid)
                    .filter(|(_, h)| h.process == process)
                    .map(|(_, h)| h)
                {
                    if let Some(thread) = handle.thread.take() {
                        let _ = thread.join();
                    }
                    let status = handle.status();
                    for reply in self.pending_stops.remove(&process.pid).unwrap_or_default() {
                        let _ = reply.send(json!({"ok": true, "stopped": status}));
                    }
                    if status.state != "refused" {
                        self.finished.push_back(status);
                        while self.finished.len() > FINISHED_KEPT {
                            self.finished.pop_front();
                        }
                    }
                }
            }
        }
    }

    fn on_request(&mut self, request: Request, reply: oneshot::Sender<Value>) {
        match request {
            Request::Status {} => {
                let _ = reply.send(self.status());
            }
            Request::Flush {} => {
                let waits: Vec<_> = self
                    .workers
                    .values()
                    .filter_map(|h| {
                        let (tx, rx) = oneshot::channel();
                        h.commands.send(Command::Flush { reply: tx }).ok()?;
                        Some(rx)
                    })
                    .collect();
                tokio::spawn(async move {
                    let mut flushed = 0;
                    for wait in waits {
                        if matches!(wait.await, Ok(Ok(_))) {
                            flushed += 1;
                        }
                    }
                    let _ = reply.send(json!({"ok": true, "flushed": flushed}));
                });
            }
            Request::Trace {
                pid,
                duration_ms,
                c_calls,
                lines,
                functions,
                opcodes,
                start_timeout_ms,
            } => {
                if opcodes && functions.is_none() {
                    let _ = reply.send(error_reply(
                        "--opcodes needs --functions: counting every instruction of a whole program is too slow to be useful",
                    ));
                    return;
                }
                if c_calls && functions.is_some() {
                    let _ = reply.send(error_reply(
                        "--c-calls cannot be combined with --functions (a C function has no file)",
                    ));
                    return;
                }
                let Some(handle) = self.workers.get(&pid) else {
                    let _ = reply.send(error_reply(format!("process {pid} is not being recorded")));
                    return;
                };
                let functions = match functions.as_deref().map(regex::Regex::new).transpose() {
                    Ok(functions) => functions,
                    Err(error) => {
                        let _ = reply.send(error_reply(format!("--functions: {error}")));
                        return;
                    }
                };
                let options = crate::trace::TraceOptions {
                    duration: Some(Duration::from_millis(duration_ms)),
                    output: PathBuf::new(),
                    overwrite: false,
                    c_calls,
                    lines,
                    opcodes,
                    functions,
                    start_timeout: Duration::from_millis(start_timeout_ms.unwrap_or(5000)),
                    preloaded: None,
                };
                let (tx, rx) = oneshot::channel();
                if handle
                    .commands
                    .send(Command::Trace { options, reply: tx })
                    .is_err()
                {
                    let _ = reply.send(error_reply(format!("process {pid} is ending")));
                    return;
                }
                tokio::spawn(async move {
                    let answer = match rx.await {
                        Ok(Ok(summary)) => json!({
                            "ok": true,
                            "pid": pid,
                            "trace": {
                                "events": summary.events,
                                "lost": summary.lost,
                                "threads_hooked": summary.threads_hooked,
                                "selected": summary.selected,
                                "not_selected": summary.not_selected,
                                "instructions": summary.instructions,
                                "executions": summary.executions,
                                "executions_lost": summary.executions_lost,
                            },
                        }),
                        Ok(Err(error)) => {
                            error_reply(format!("trace window in {pid} failed: {error}"))
                        }
                        Err(_) => {
                            error_reply(format!("process {pid} ended before the trace window did"))
                        }
                    };
                    let _ = reply.send(answer);
                });
            }
            Request::Snapshot { pid, locals, heap } => {
                let Some(handle) = self.workers.get(&pid) else {
                    let _ = reply.send(error_reply(format!("process {pid} is not being recorded")));
                    return;
                };
                let (tx, rx) = oneshot::channel();
                let request = worker::SnapshotRequest { locals, heap };
                if handle
                    .commands
                    .send(Command::Snapshot { request, reply: tx })
                    .is_err()
                {
                    let _ = reply.send(error_reply(format!("process {pid} is ending")));
                    return;
                }
                tokio::spawn(async move {
                    let answer = match rx.await {
                        Ok(Ok(report)) => json!({"ok": true, "pid": pid, "snapshot": report}),
                        Ok(Err(error)) => error_reply(format!("snapshot of {pid} failed: {error}")),
                        Err(_) => error_reply(format!("process {pid} ended before the snapshot")),
                    };
                    let _ = reply.send(answer);
                });
            }
            Request::Start { pid } => {
                if self.workers.contains_key(&pid) {
                    let _ = reply.send(error_reply(format!("process {pid} is already recorded")));
                    return;
                }
                let Some(start_ticks) = discovery::start_ticks(pid) else {
                    let _ = reply.send(error_reply(format!("no process {pid}")));
                    return;
                };
                let process = Process { pid, start_ticks };
                self.stopped_by_hand.remove(&(pid, start_ticks));
                self.refused.forget(&process);
                let (name, settings) = match discovery::rule_for(&self.config.targets, pid) {
                    Some(index) => {
                        let rule = &self.config.targets[index];
                        (rule.name.clone(), rule.settings.clone())
                    }
                    None => (discovery::process_name(pid), TargetSettings::default()),
                };
                self.start(process, name.clone(), settings, true);
                let _ = reply.send(json!({"ok": true, "started": pid, "name": name}));
            }
            Request::Stop { pid } => {
                let Some(handle) = self.workers.get(&pid) else {
                    let _ = reply.send(error_reply(format!("process {pid} is not being recorded")));
                    return;
                };
                self.stopped_by_hand
                    .insert((pid, handle.process.start_ticks));
                let _ = handle.commands.send(Command::Stop {
                    reason: "stopped by `pydeep ctl stop`".into(),
                });
                self.pending_stops.entry(pid).or_default().push(reply);
            }
        }
    }

    fn status(&self) -> Value {
        let stored = rotation::stored(&self.config.output_dir);
        let mut targets: Vec<TargetStatus> = self.workers.values().map(Handle::status).collect();
        targets.sort_by_key(|t| t.pid);
        json!({
            "ok": true,
            "daemon": {
                "pid": std::process::id(),
                "uptime_seconds": self.started.elapsed().as_secs_f64(),
                "cpu_seconds": budget::process_cpu().as_secs_f64(),
                "cpu_percent": self.budget.used * 100.0,
                "cpu_budget_percent": self.config.cpu_budget_percent,
                "rate_factor": self.factor.get(),
                "budget_cuts": self.budget.cuts,
                "config": self.config_path,
                "output_dir": self.config.output_dir,
                "stored_files": stored.len(),
                "stored_bytes": stored.iter().map(|s| s.bytes).sum::<u64>(),
                "deleted_files": self.deleted_files,
            },
            "targets": targets,
            "finished": self.finished,
        })
    }

    /// Re-reads the configuration (SIGHUP). Running targets keep their
    /// files: still-selected ones take the new settings, no-longer-selected
    /// ones are finished. A broken file is reported and ignored.
    fn reload(&mut self) {
        let config = match Config::load(&self.config_path) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!("SIGHUP: keeping the running configuration: {error}");
                return;
            }
        };
        if config.output_dir != self.config.output_dir || config.socket != self.config.socket {
            tracing::warn!("SIGHUP: output_dir and socket changes take effect at the next start");
        }
        let mut config = config;
        config.output_dir = self.config.output_dir.clone();
        config.socket = self.config.socket.clone();
        for (pid, handle) in &self.workers {
            match discovery::rule_for(&config.targets, *pid) {
                Some(index) => {
                    let _ = handle.commands.send(Command::Reconfigure {
                        settings: config.targets[index].settings.clone(),
                        rotation: config.rotation,
                    });
                }
                None if handle.by_hand => {
                    let _ = handle.commands.send(Command::Reconfigure {
                        settings: handle.settings_or_default(),
                        rotation: config.rotation,
                    });
                }
                None => {
                    let _ = handle.commands.send(Command::Stop {
                        reason: "no longer selected (configuration reloaded)".into(),
                    });
                }
            }
        }
        self.budget.limit = config.cpu_budget_percent / 100.0;
        // Processes refused under the old rules may be selected differently now.
        self.refused = Refused::default();
        self.config = config;
        tracing::info!(rules = self.config.targets.len(), "configuration reloaded");
        self.discover();
    }

    fn enforce_retention(&mut self) {
        let open: HashSet<PathBuf> = self
            .workers
            .values()
            .filter_map(|h| h.status().current_file)
            .map(|p| part_of(&p))
            .collect();
        for file in rotation::enforce(&self.config.output_dir, &self.config.retention, &open) {
            self.deleted_files += 1;
            tracing::info!(file = %file.path.display(), bytes = file.bytes, "retention: deleted");
        }
    }
}

impl Handle {
    /// The settings of a target started by hand (no rule): the defaults,
    /// at the rate it runs at.
    fn settings_or_default(&self) -> TargetSettings {
        TargetSettings {
            rate_hz: self.status().configured_rate_hz,
            ..TargetSettings::default()
        }
    }
}

/// The `.part` path of a file's final path.
fn part_of(final_path: &Path) -> PathBuf {
    let mut name = final_path.as_os_str().to_owned();
    name.push(rotation::PART_SUFFIX);
    PathBuf::from(name)
}

fn create_output_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))?;
    }
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    Ok(())
}

/// `pydeep ctl ...`: sends `request`, prints the reply (JSON with `json`,
/// otherwise a readable form), fails on an error reply.
pub fn ctl(socket: &Path, request: Value, json_output: bool, timeout: Duration) -> Result<Exit> {
    let reply = control::request(socket, &request, timeout)?;
    if json_output {
        crate::outln!("{}", serde_json::to_string_pretty(&reply)?)?;
    } else if request["command"] == "status" && reply["ok"] == true {
        crate::out!("{}", render_status(&reply))?;
    } else if reply["ok"] == true {
        crate::outln!("{}", serde_json::to_string(&reply)?)?;
    }
    if reply["ok"] != true {
        let message = reply["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned();
        return Err(crate::cli::exit::Failure::new(Exit::Failure, message).into());
    }
    Ok(Exit::Ok)
}

fn render_status(reply: &Value) -> String {
    let d = &reply["daemon"];
    let mut out = format!(
        "pydeep daemon {}: up {:.0} s, cpu {:.1}% of {}% budget, rate factor {:.2}, {} files ({} bytes) in {}, {} deleted\n",
        d["pid"],
        d["uptime_seconds"].as_f64().unwrap_or(0.0),
        d["cpu_percent"].as_f64().unwrap_or(0.0),
        d["cpu_budget_percent"],
        d["rate_factor"].as_f64().unwrap_or(1.0),
        d["stored_files"],
        d["stored_bytes"],
        d["output_dir"].as_str().unwrap_or("?"),
        d["deleted_files"],
    );
    out.push_str(&format!(
        "{:>8} {:<16} {:<10} {:>8} {:>10} {:>9} {:>6} {:>6} {:>8} file\n",
        "pid", "name", "state", "python", "rate Hz", "samples", "drops", "files", "cpu s"
    ));
    for t in reply["targets"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>8} {:<16} {:<10} {:>8} {:>10} {:>9} {:>6} {:>6} {:>8.2} {}\n",
            t["pid"],
            t["name"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or(""),
            t["python_version"].as_str().unwrap_or(""),
            format!(
                "{:.0}/{:.0}",
                t["rate_hz"].as_f64().unwrap_or(0.0),
                t["configured_rate_hz"].as_f64().unwrap_or(0.0)
            ),
            t["samples"],
            t["missed_ticks"],
            t["files_finished"],
            t["cpu_seconds"].as_f64().unwrap_or(0.0),
            t["current_file"].as_str().unwrap_or("-"),
        ));
    }
    out
}
