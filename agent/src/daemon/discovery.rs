//! Finds the processes the configuration selects by scanning `/proc`.
//!
//! A scan reads, for every process, only what the rules ask about (command
//! line, executable, uid, cgroup), each file read bounded. Whether a
//! selected process is Python is not decided here: the per-target thread
//! attaches and reports back (attaching reads the target's memory maps and
//! symbols, which is blocking work that does not belong on the control
//! plane's executor).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use super::config::{Selector, TargetRule};

/// Longest `/proc` file read by a scan.
const MAX_PROC_FILE: u64 = 64 << 10;

/// A process as a scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22):
    /// with the pid, it names one process even when pids are reused.
    pub start_ticks: u64,
}

/// What a scan found: each selected process and the index of the first
/// rule selecting it.
pub fn scan(rules: &[TargetRule], exclude: i32) -> Vec<(Process, usize)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == exclude {
            continue;
        }
        let mut facts = Facts::new(pid);
        if let Some(index) = rules.iter().position(|r| facts.matches(&r.selector)) {
            if let Some(start_ticks) = start_ticks(pid) {
                found.push((Process { pid, start_ticks }, index));
            }
        }
    }
    found.sort_by_key(|(p, _)| p.pid);
    found
}

/// The rule (index) selecting `pid`, if any.
pub fn rule_for(rules: &[TargetRule], pid: i32) -> Option<usize> {
    let mut facts = Facts::new(pid);
    rules.iter().position(|r| facts.matches(&r.selector))
}

/// Facts of one process, each read at most once and only when a rule asks.
struct Facts {
    pid: i32,
    cmdline: Option<String>,
    executable: Option<String>,
    uid: Option<Option<u32>>,
    cgroup: Option<String>,
}

impl Facts {
    fn new(pid: i32) -> Facts {
        Facts {
            pid,
            cmdline: None,
            executable: None,
            uid: None,
            cgroup: None,
        }
    }

    fn matches(&mut self, selector: &Selector) -> bool {
        if !selector.is_set() {
            return false;
        }
        if !selector.pids.is_empty() && !selector.pids.contains(&self.pid) {
            return false;
        }
        if let Some(uid) = selector.uid {
            let pid = self.pid;
            if *self.uid.get_or_insert_with(|| real_uid(pid)) != Some(uid) {
                return false;
            }
        }
        if let Some(pattern) = &selector.executable {
            let pid = self.pid;
            let exe = self.executable.get_or_insert_with(|| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            });
            if exe.is_empty() || !pattern.is_match(exe) {
                return false;
            }
        }
        if let Some(pattern) = &selector.cmdline {
            let pid = self.pid;
            let cmdline = self
                .cmdline
                .get_or_insert_with(|| crate::process::procfs::cmdline(pid).join(" "));
            if cmdline.is_empty() || !pattern.is_match(cmdline) {
                return false;
            }
        }
        if let Some(pattern) = &selector.cgroup {
            let pid = self.pid;
            let cgroup = self.cgroup.get_or_insert_with(|| {
                read_bounded(&format!("/proc/{pid}/cgroup")).unwrap_or_default()
            });
            if !pattern.is_match(cgroup) {
                return false;
            }
        }
        true
    }
}

fn read_bounded(path: &str) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The real uid of `pid` (`Uid:` line of `/proc/PID/status`).
pub fn real_uid(pid: i32) -> Option<u32> {
    let status = read_bounded(&format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Start time of `pid` in clock ticks since boot; `None` for a zombie or a
/// vanished process. The command name in `stat` may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = read_bounded(&format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so field N is fields[N - 3].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

/// A short name for a process started by hand with `pydeep ctl start`:
/// its executable's file name.
pub fn process_name(pid: i32) -> String {
    let exe: Option<PathBuf> = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let name: String = exe
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "process".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    if name.is_empty() {
        "process".into()
    } else {
        name
    }
}

/// Processes that were selected but could not be recorded (not Python,
/// unsupported version, no permission): logged once, skipped until the
/// process is replaced by another with the same pid.
#[derive(Debug, Default)]
pub struct Refused {
    processes: HashMap<i32, u64>,
}

impl Refused {
    /// Remembers `process` as refused.
    pub fn insert(&mut self, process: &Process) {
        self.processes.insert(process.pid, process.start_ticks);
    }

    /// True if `process` (this very process, not an earlier holder of its
    /// pid) was refused.
    pub fn contains(&self, process: &Process) -> bool {
        self.processes.get(&process.pid) == Some(&process.start_ticks)
    }

    /// Forgets `process` (to try it again, as `ctl start` does).
    pub fn forget(&mut self, process: &Process) {
        self.processes.remove(&process.pid);
    }

    /// Forgets processes that no longer exist (bounded memory).
    pub fn retain_living(&mut self) {
        self.processes
            .retain(|&pid, &mut ticks| start_ticks(pid) == Some(ticks));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::TargetSettings;

    #[test]
    fn a_child_is_selected_by_its_command_line_and_not_by_another_uid() {
        let mut child = std::process::Command::new("sleep")
            .arg("7.123456")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until it has exec'd, the child's command line is ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !crate::process::procfs::cmdline(pid)
            .iter()
            .any(|a| a == "7.123456")
        {
            assert!(std::time::Instant::now() < deadline, "sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let me = nix::unistd::getuid().as_raw();
        let rule = |cmdline: &str, uid: u32| TargetRule {
            name: "t".into(),
            selector: Selector {
                cmdline: Some(regex::Regex::new(cmdline).unwrap()),
                uid: Some(uid),
                ..Default::default()
            },
            settings: TargetSettings::default(),
        };
        let found = scan(
            &[rule("nothing-matches-this", me), rule(r"7\.123456", me)],
            0,
        );
        let others = scan(&[rule(r"7\.123456", me.wrapping_add(1))], 0);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            found.iter().any(|(p, index)| p.pid == pid && *index == 1),
            "{found:?}"
        );
        assert!(others.iter().all(|(p, _)| p.pid != pid));
        assert!(start_ticks(pid).is_none());
    }
}
