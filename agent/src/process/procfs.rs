//! Small, bounded readers of `/proc` for facts about processes that are not
//! in their memory: command line, executable, liveness and descendants.

use std::path::PathBuf;

/// Longest `/proc` file read here; anything longer is cut.
const MAX_PROC_FILE: usize = 64 << 10;

fn read_proc(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_PROC_FILE as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// The command line of `pid`, split at NULs (empty if unreadable).
pub fn cmdline(pid: i32) -> Vec<String> {
    read_proc(&format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The executable of `pid`.
pub fn executable(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// One reading of `/proc/PID/stat`: the facts below come from the same
/// instant, so a process that becomes a zombie between two reads is never
/// seen half living, half dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (field 3): `R`, `S`, `D`, `Z` (zombie), `X` (dead)...
    pub state: char,
    /// The parent's pid (field 4).
    pub parent: i32,
    /// When the process started, in clock ticks after boot (field 22). It
    /// stays the same across `exec`, and tells a process from a later one
    /// that was given the same pid.
    pub start_time: Option<u64>,
    /// The exit status in waitpid(2)'s encoding (field 52; kernel 3.5+).
    /// Meaningful only for a zombie.
    exit_code: Option<i32>,
}

impl Stat {
    /// True if the process exists and is neither a zombie nor dead.
    pub fn is_alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }

    /// The wait status if the process is a zombie (exited, not yet reaped
    /// by its parent).
    pub fn zombie_wait_status(&self) -> Option<i32> {
        (self.state == 'Z').then_some(self.exit_code).flatten()
    }
}

/// Reads `/proc/PID/stat` once. The command name sits in parentheses and
/// may itself contain spaces and parentheses, so the fields are taken after
/// the last `)`: index 0 is field 3 of proc(5), field N is at index N - 3.
pub fn stat(pid: i32) -> Option<Stat> {
    let bytes = read_proc(&format!("/proc/{pid}/stat"))?;
    let text = String::from_utf8_lossy(&bytes);
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        state: field(3)?.chars().next()?,
        parent: field(4)?.parse().ok()?,
        start_time: field(22).and_then(|f| f.parse().ok()),
        exit_code: field(52).and_then(|f| f.parse().ok()),
    })
}

/// When `pid` started (see [`Stat::start_time`]).
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid)?.start_time
}

/// The wait status of `pid` if it is a zombie (see
/// [`Stat::zombie_wait_status`]). `None` for a living process, a reaped
/// one, or a kernel before 3.5.
pub fn zombie_wait_status(pid: i32) -> Option<i32> {
    stat(pid)?.zombie_wait_status()
}

/// The auxiliary vector the kernel gave `pid` at its last `exec` (raw
/// bytes). It holds the load addresses and the AT_RANDOM pointer, which
/// differ at every exec, so it tells an exec of the same program with the
/// same arguments apart from the process that was attached.
pub fn auxv(pid: i32) -> Option<Vec<u8>> {
    read_proc(&format!("/proc/{pid}/auxv"))
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|stat| stat.is_alive())
}

/// Every living descendant of `root` as (pid, parent pid), parents first.
pub fn descendants(root: i32) -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents: Vec<(i32, i32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = stat(pid)?;
            stat.is_alive().then_some((pid, stat.parent))
        })
        .collect();
    parents.sort_unstable();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    // Bounded by the number of processes: each is taken at most once.
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && pid != root && !found.iter().any(|&(p, _)| p == pid) {
                found.push((pid, ppid));
                frontier.push(pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_its_child_is_a_descendant() {
        let me = std::process::id() as i32;
        assert!(is_alive(me));
        assert!(!cmdline(me).is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = descendants(me);
        let pid = child.id() as i32;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&(pid, me)), "{found:?} lacks {pid}");
        assert!(!is_alive(pid));
    }

    #[test]
    fn a_zombie_tells_its_wait_status_until_reaped() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let started = start_time(pid);
        // Bounded: sh exits at once; give up after 10 s rather than hang.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(zombie_wait_status(pid), Some(7 << 8));
        assert_eq!(start_time(pid), started);
        child.wait().unwrap();
        assert_eq!(zombie_wait_status(pid), None);
        assert!(zombie_wait_status(std::process::id() as i32).is_none());
        assert!(auxv(std::process::id() as i32).is_some_and(|a| !a.is_empty()));
    }
}
