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

/// State letter and parent pid from `/proc/PID/stat`. The command name sits
/// in parentheses and may itself contain spaces and parentheses, so the
/// fields are taken after the last `)`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let bytes = read_proc(&format!("/proc/{pid}/stat"))?;
    let text = String::from_utf8_lossy(&bytes);
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The fields of `/proc/PID/stat` after the command name: index 0 is field
/// 3 of proc(5) (the state letter), so field N is at index N - 3.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let bytes = read_proc(&format!("/proc/{pid}/stat"))?;
    let text = String::from_utf8_lossy(&bytes);
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// When `pid` started, in clock ticks after boot (field 22 of
/// `/proc/PID/stat`). It stays the same across `exec`, and tells a process
/// from a later one that was given the same pid.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// The wait status of `pid` if it is a zombie (exited, not yet reaped by
/// its parent): field 52 of `/proc/PID/stat`, in waitpid(2)'s encoding.
/// `None` for a living process, a reaped one, or a kernel before 3.5.
pub fn zombie_wait_status(pid: i32) -> Option<i32> {
    let fields = stat_fields(pid)?;
    if fields.first().map(String::as_str) != Some("Z") {
        return None;
    }
    fields.get(52 - 3)?.parse().ok()
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
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Every living descendant of `root` as (pid, parent pid), parents first.
pub fn descendants(root: i32) -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents: Vec<(i32, i32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| match stat(pid)? {
            (state, parent) if state != 'Z' && state != 'X' => Some((pid, parent)),
            _ => None,
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
