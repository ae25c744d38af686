//! The daemon's configuration file (TOML): where recordings go, how they
//! rotate and expire, the CPU budget, and which processes to record with
//! which options. `notes/daemon.md` is the reference of every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::recording::rotation::{Retention, Rotation};

/// A configuration error: the file, and what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line).
        message: String,
    },
    /// A value is out of range or a pattern does not compile.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
}

/// The whole configuration, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where recordings are written (default `/var/lib/pydeep`).
    pub output_dir: PathBuf,
    /// The control socket (default `/run/pydeep/control.sock`).
    pub socket: PathBuf,
    /// How often `/proc` is scanned for new targets (default 2 s).
    pub scan_interval: Duration,
    /// The daemon's CPU budget in percent of one core (default 25).
    pub cpu_budget_percent: f64,
    /// When a recording is closed and the next one started.
    pub rotation: Rotation,
    /// When finished recordings are deleted.
    pub retention: Retention,
    /// Which processes to record, first match wins.
    pub targets: Vec<TargetRule>,
}

/// One `[[target]]`: which processes, and how to record them.
#[derive(Debug, Clone)]
pub struct TargetRule {
    /// Name used in file names and labels (letters, digits, `_`, `.`).
    pub name: String,
    /// Selectors; a process must satisfy every one given.
    pub selector: Selector,
    /// How matching processes are recorded.
    pub settings: TargetSettings,
}

/// Which processes a rule selects. A rule with no selector selects nothing.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Exactly these pids.
    pub pids: Vec<i32>,
    /// `/proc/PID/exe` matches this regex.
    pub executable: Option<Regex>,
    /// The command line, arguments joined by spaces, matches this regex.
    pub cmdline: Option<Regex>,
    /// The process's real uid.
    pub uid: Option<u32>,
    /// `/proc/PID/cgroup` matches this regex (containers, systemd units).
    pub cgroup: Option<Regex>,
}

impl Selector {
    /// True if at least one selector is given.
    pub fn is_set(&self) -> bool {
        !self.pids.is_empty()
            || self.executable.is_some()
            || self.cmdline.is_some()
            || self.uid.is_some()
            || self.cgroup.is_some()
    }
}

/// How one target is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    /// Samples per second per thread (default 100).
    pub rate_hz: f64,
    /// A deep snapshot (stacks, and locals if `locals`) this often (default never).
    pub snapshot_every: Option<Duration>,
    /// A heap summary (objects by type) this often (default never).
    pub heap_every: Option<Duration>,
    /// Snapshots include each frame's variables (default false).
    pub locals: bool,
    /// Record idle threads too (default false).
    pub idle: bool,
    /// Embed source: each recorded function's lines (default true).
    pub embed_source: bool,
    /// Embed whole source files instead of functions' lines (default false).
    pub full_source: bool,
    /// Deepest stack read (default 4096).
    pub max_depth: u32,
}

impl Default for TargetSettings {
    fn default() -> Self {
        TargetSettings {
            rate_hz: 100.0,
            snapshot_every: None,
            heap_every: None,
            locals: false,
            idle: false,
            embed_source: true,
            full_source: false,
            max_depth: 4096,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    output_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    scan_interval: Option<String>,
    cpu_budget_percent: Option<f64>,
    #[serde(default)]
    rotation: RawRotation,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default, rename = "target")]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    max_bytes: Option<Size>,
    max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_total_bytes: Option<Size>,
    max_age: Option<String>,
}

/// A size: a number of bytes, or a string such as "64MiB", "1.5GB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// A user: a uid or a name from /etc/passwd.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum User {
    Uid(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    #[serde(default)]
    pids: Vec<i32>,
    executable: Option<String>,
    cmdline: Option<String>,
    user: Option<User>,
    cgroup: Option<String>,
    rate: Option<f64>,
    snapshot_every: Option<String>,
    heap_every: Option<String>,
    locals: Option<bool>,
    idle: Option<bool>,
    embed_source: Option<bool>,
    full_source: Option<bool>,
    max_depth: Option<u32>,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes =
            pydeep_format::files::read_limited(path, MAX_CONFIG_BYTES).map_err(|source| {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Syntax {
            path: path.to_owned(),
            message: "not UTF-8 text".into(),
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text` (named `path` in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let duration = |key: &str, value: &Option<String>, default: Option<Duration>| match value {
            None => Ok(default),
            Some(text) => parse_duration(text)
                .map(Some)
                .map_err(|e| invalid(format!("{key}: {e}"))),
        };
        let size = |key: &str, value: &Option<Size>, default: u64| match value {
            None => Ok(default),
            Some(Size::Bytes(n)) => Ok(*n),
            Some(Size::Text(text)) => parse_size(text).map_err(|e| invalid(format!("{key}: {e}"))),
        };
        let budget = raw.cpu_budget_percent.unwrap_or(25.0);
        if !(budget.is_finite() && budget > 0.0) {
            return Err(invalid(format!(
                "cpu_budget_percent must be above 0, not {budget}"
            )));
        }
        let scan_interval = duration(
            "scan_interval",
            &raw.scan_interval,
            Some(Duration::from_secs(2)),
        )?
        .unwrap_or_default()
        .max(Duration::from_millis(10));
        let rotation = Rotation {
            max_bytes: size("rotation.max_bytes", &raw.rotation.max_bytes, 64 << 20)?.max(4096),
            max_age: duration(
                "rotation.max_age",
                &raw.rotation.max_age,
                Some(Duration::from_secs(600)),
            )?
            .unwrap_or_default()
            .max(Duration::from_millis(100)),
        };
        let retention = Retention {
            max_total_bytes: size(
                "retention.max_total_bytes",
                &raw.retention.max_total_bytes,
                1 << 30,
            )?,
            max_age: duration(
                "retention.max_age",
                &raw.retention.max_age,
                Some(Duration::from_secs(7 * 86_400)),
            )?
            .unwrap_or_default(),
        };
        let mut targets = Vec::new();
        for (index, target) in raw.targets.into_iter().enumerate() {
            let at = format!("target {} (`{}`)", index + 1, target.name);
            if target.name.is_empty()
                || !target
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(invalid(format!(
                    "{at}: a name is letters, digits, `_` and `.` only (it goes into file names)"
                )));
            }
            let regex = |key: &str, value: &Option<String>| match value {
                None => Ok(None),
                Some(pattern) => Regex::new(pattern)
                    .map(Some)
                    .map_err(|e| invalid(format!("{at}: {key}: {e}"))),
            };
            let uid = match &target.user {
                None => None,
                Some(User::Uid(uid)) => Some(*uid),
                Some(User::Name(name)) => Some(
                    nix::unistd::User::from_name(name)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                        .ok_or_else(|| invalid(format!("{at}: no user named `{name}`")))?,
                ),
            };
            let selector = Selector {
                pids: target.pids.clone(),
                executable: regex("executable", &target.executable)?,
                cmdline: regex("cmdline", &target.cmdline)?,
                uid,
                cgroup: regex("cgroup", &target.cgroup)?,
            };
            if !selector.is_set() {
                return Err(invalid(format!(
                    "{at}: give at least one of pids, executable, cmdline, user, cgroup"
                )));
            }
            let defaults = TargetSettings::default();
            let rate_hz = target.rate.unwrap_or(defaults.rate_hz);
            crate::cli::options::check_rate(rate_hz, MAX_RATE_HZ)
                .map_err(|e| invalid(format!("{at}: rate: {e}")))?;
            let settings = TargetSettings {
                rate_hz,
                snapshot_every: duration(
                    &format!("{at}: snapshot_every"),
                    &target.snapshot_every,
                    None,
                )?,
                heap_every: duration(&format!("{at}: heap_every"), &target.heap_every, None)?,
                locals: target.locals.unwrap_or(defaults.locals),
                idle: target.idle.unwrap_or(defaults.idle),
                embed_source: target.embed_source.unwrap_or(defaults.embed_source),
                full_source: target.full_source.unwrap_or(defaults.full_source),
                max_depth: target.max_depth.unwrap_or(defaults.max_depth).max(1),
            };
            targets.push(TargetRule {
                name: target.name,
                selector,
                settings,
            });
        }
        Ok(Config {
            output_dir: raw
                .output_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/pydeep")),
            socket: raw.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            scan_interval,
            cpu_budget_percent: budget,
            rotation,
            retention,
            targets,
        })
    }
}

/// The fastest rate a daemon target may be given (the command line takes
/// up to [`crate::cli::options::MAX_RATE_HZ`]; a daemon samples many targets at once).
pub const MAX_RATE_HZ: f64 = 10_000.0;

/// The largest configuration file read (a config is a few kilobytes; this
/// keeps `--config /dev/zero` from eating memory).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where `pydeep daemon` listens and `pydeep ctl` connects by default.
pub const DEFAULT_SOCKET: &str = "/run/pydeep/control.sock";

/// Parses a duration: the command line's one parser and range
/// ([`crate::cli::options::parse_duration`]: `250ms`, `10s`, `5m`, `2h`, `7d` or bare
/// seconds, 1ms to 3650d).
pub use crate::cli::options::parse_duration;

/// Parses a size: `4096`, `512KiB`, `64MiB`, `1GiB` (also KB, MB, GB as
/// powers of 1000, and K/M/G as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 64MiB)"))?;
    Ok((value * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses_with_every_unit() {
        let config = Config::parse(
            r#"
            output_dir = "/tmp/out"
            socket = "/tmp/out/s.sock"
            scan_interval = "500ms"
            cpu_budget_percent = 10
            [rotation]
            max_bytes = "8MiB"
            max_age = "1m"
            [retention]
            max_total_bytes = 1000000
            max_age = "2d"
            [[target]]
            name = "web"
            cmdline = "gunicorn"
            user = 0
            rate = 50
            snapshot_every = "30s"
            locals = true
            full_source = true
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(config.scan_interval, Duration::from_millis(500));
        assert_eq!(config.rotation.max_bytes, 8 << 20);
        assert_eq!(config.retention.max_age, Duration::from_secs(2 * 86_400));
        assert_eq!(config.retention.max_total_bytes, 1_000_000);
        let rule = &config.targets[0];
        assert_eq!(rule.selector.uid, Some(0));
        assert!(rule
            .selector
            .cmdline
            .as_ref()
            .unwrap()
            .is_match("gunicorn app"));
        assert_eq!(rule.settings.rate_hz, 50.0);
        assert_eq!(rule.settings.snapshot_every, Some(Duration::from_secs(30)));
        assert!(rule.settings.locals);
        assert!(rule.settings.embed_source && rule.settings.full_source);
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| {
            Config::parse(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string()
        };
        assert!(error("bogus = 1").contains("bogus"));
        assert!(error("[[target]]\nname = \"a b\"\ncmdline = \"x\"").contains("name"));
        assert!(error("[[target]]\nname = \"a\"").contains("at least one"));
        assert!(error("[[target]]\nname = \"a\"\ncmdline = \"(\"").contains("cmdline"));
        assert!(error("[rotation]\nmax_bytes = \"12 parsecs\"").contains("parsecs"));
        assert!(error("cpu_budget_percent = 0").contains("cpu_budget"));
    }

    #[test]
    fn every_duration_and_rate_is_checked_against_one_range() {
        let error = |text: &str| {
            Config::parse(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string()
        };
        let rule = "[[target]]\nname = \"a\"\ncmdline = \"x\"\n";
        for huge in ["99999999999999999999s", "1e20s", "10000000000000d", "0s"] {
            for (text, key) in [
                (format!("scan_interval = \"{huge}\""), "scan_interval"),
                (
                    format!("[rotation]\nmax_age = \"{huge}\""),
                    "rotation.max_age",
                ),
                (
                    format!("[retention]\nmax_age = \"{huge}\""),
                    "retention.max_age",
                ),
                (
                    format!("{rule}snapshot_every = \"{huge}\""),
                    "snapshot_every",
                ),
                (format!("{rule}heap_every = \"{huge}\""), "heap_every"),
            ] {
                let message = error(&text);
                assert!(message.contains(key), "{text}: {message}");
                assert!(
                    message.contains(crate::cli::options::DURATION_RANGE),
                    "{text}: {message}"
                );
            }
        }
        for rate in ["0", "-5", "nan", "inf", "1e-300", "10001"] {
            let message = error(&format!("{rule}rate = {rate}"));
            assert!(message.contains("0.01 to 10000 Hz"), "{rate}: {message}");
        }
    }
}
