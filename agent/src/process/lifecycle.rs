//! How a recorded process ended, told as exactly as can be known.
//!
//! * Our own child (`pydeep record`): its wait status, exact.
//! * Any other process (`pydeep attach`, followed descendants): while it is a
//!   zombie its wait status is field 52 of `/proc/PID/stat`, exact; once its
//!   parent has reaped it, nothing says how it ended, and the recording says
//!   so ("status unknown") instead of guessing.
//! * A process that `exec`s is still alive but no longer the program that
//!   was attached: the executable, the command line or the auxiliary vector
//!   (load addresses and AT_RANDOM, new at every exec) changed.
//! * A pid that now belongs to a later process (its start time differs) is
//!   treated as the first one having exited.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};

use pydeep_format::proto::ProcessEventKind;

use crate::process::procfs;

/// What identifies one program image of one process: it changes on `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/PID/exe`.
    pub exe: Option<PathBuf>,
    /// `/proc/PID/cmdline`.
    pub argv: Vec<String>,
    /// `/proc/PID/auxv`.
    auxv: Option<Vec<u8>>,
    /// Start time after boot, in clock ticks (the same across exec).
    start_time: Option<u64>,
}

impl Identity {
    /// The identity of `pid` now.
    pub fn of(pid: i32) -> Identity {
        Identity {
            exe: procfs::executable(pid),
            argv: procfs::cmdline(pid),
            auxv: procfs::auxv(pid),
            start_time: procfs::start_time(pid),
        }
    }

    /// True if `now` is another program image of the same process: the
    /// same start time, but a different executable, command line or
    /// auxiliary vector. Fields that could not be read compare as equal.
    pub fn execed_into(&self, now: &Identity) -> bool {
        fn differs<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            a.is_some() && b.is_some() && a != b
        }
        self.start_time == now.start_time
            && (differs(&self.exe, &now.exe)
                || (!now.argv.is_empty() && self.argv != now.argv)
                || differs(&self.auxv, &now.auxv))
    }
}

/// How a process ended: what the process event records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// PROCESS_EXITED, PROCESS_KILLED_BY_SIGNAL or PROCESS_VANISHED (status unknown).
    pub kind: ProcessEventKind,
    /// The exit status or the signal number (0 when unknown).
    pub code: i32,
    /// The same in words, with how it was learnt.
    pub detail: String,
}

/// What became of a process since it was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Still the same program.
    Running,
    /// It replaced itself by another program with `exec`.
    Execed(Identity),
    /// It ended.
    Ended(Ending),
}

/// What became of `pid`, attached as `identity`; `child` is set when the
/// process is ours (then its wait status is read, which reaps it).
pub fn fate(pid: i32, identity: &Identity, child: Option<&mut Child>) -> Fate {
    if let Some(child) = child {
        if let Ok(Some(status)) = child.try_wait() {
            return Fate::Ended(from_exit_status(
                status,
                "its wait status: pydeep started it",
            ));
        }
    } else {
        // One reading: a process read as still exiting, then as a zombie
        // by a second read, must not be taken for one whose status is gone.
        let Some(stat) = procfs::stat(pid) else {
            return Fate::Ended(unknown(
                "exited; its exit status is unknown: pydeep is not its parent, and its parent had already reaped it",
            ));
        };
        if stat.start_time != identity.start_time {
            return Fate::Ended(unknown(
                "exited; its exit status is unknown: its pid already belongs to another process",
            ));
        }
        if let Some(status) = stat.zombie_wait_status() {
            if stat.parent == std::process::id() as i32 && is_subreaper() {
                // Ours by re-parenting (`record --subprocesses` is the
                // subreaper of its program's tree): reap it, its status
                // is read.
                // SAFETY: waitpid on one pid, no status pointer.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
            return Fate::Ended(from_exit_status(
                ExitStatus::from_raw(status),
                "read from /proc/PID/stat while it awaited its parent",
            ));
        }
        if !stat.is_alive() {
            return Fate::Ended(unknown("exited; its exit status is unknown"));
        }
    }
    let now = Identity::of(pid);
    if identity.execed_into(&now) {
        Fate::Execed(now)
    } else {
        Fate::Running
    }
}

/// Makes pydeep the subreaper of its descendants (`PR_SET_CHILD_SUBREAPER`):
/// an orphan among them is re-parented to pydeep instead of init, so
/// `record --subprocesses` still finds (and reaps) a child whose parent
/// exited right after forking it.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True if pydeep is a subreaper ([`become_subreaper`]).
pub fn is_subreaper() -> bool {
    let mut on: libc::c_int = 0;
    // SAFETY: prctl writes one int through the pointer.
    let ok = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut on as *mut libc::c_int,
            0,
            0,
            0,
        )
    };
    ok == 0 && on != 0
}

fn unknown(detail: &str) -> Ending {
    Ending {
        kind: ProcessEventKind::ProcessVanished,
        code: 0,
        detail: detail.into(),
    }
}

/// Names a signal number ("SIGKILL"), or "signal N".
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

fn from_exit_status(status: ExitStatus, source: &str) -> Ending {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending {
            kind: ProcessEventKind::ProcessExited,
            code,
            detail: format!("exited with status {code} ({source})"),
        },
        (None, Some(signal)) => Ending {
            kind: ProcessEventKind::ProcessKilledBySignal,
            code: signal,
            detail: format!(
                "killed by {}{} ({source})",
                signal_name(signal),
                if status.core_dumped() {
                    ", core dumped"
                } else {
                    ""
                }
            ),
        },
        _ => unknown("ended in a way its wait status does not tell"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn wait_for_zombie(pid: i32) {
        // Bounded: the programs below end at once; fail after 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        while procfs::is_alive(pid) {
            assert!(Instant::now() < deadline, "{pid} never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The identity of `pid` once it runs the program whose command line
    /// contains `argv_part`. Read right after spawn, /proc can still show
    /// the forked parent's image (the test binary), and the child's own
    /// exec would then read as "the exec" (seen once in CI).
    fn running_image(pid: i32, argv_part: &str) -> Identity {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let identity = Identity::of(pid);
            let complete = identity.exe.is_some() && identity.auxv.is_some();
            if complete && identity.argv.iter().any(|a| a.contains(argv_part)) {
                return identity;
            }
            assert!(Instant::now() < deadline, "{argv_part} never started");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_process_not_ours_ends_with_its_exact_status_while_a_zombie_then_unknown() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id() as i32;
        let identity = Identity::of(pid);
        wait_for_zombie(pid);
        let Fate::Ended(ending) = fate(pid, &identity, None) else {
            panic!("still running")
        };
        assert_eq!(
            (ending.kind, ending.code),
            (ProcessEventKind::ProcessExited, 3)
        );
        child.wait().unwrap();
        let Fate::Ended(ending) = fate(pid, &identity, None) else {
            panic!("still running")
        };
        assert_eq!(ending.kind, ProcessEventKind::ProcessVanished);
        assert!(ending.detail.contains("unknown"), "{}", ending.detail);
    }

    #[test]
    fn a_child_killed_by_a_signal_says_which() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let identity = running_image(pid, "sleep");
        assert_eq!(fate(pid, &identity, Some(&mut child)), Fate::Running);
        child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let ending = loop {
            if let Fate::Ended(ending) = fate(pid, &identity, Some(&mut child)) {
                break ending;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            (ending.kind, ending.code),
            (ProcessEventKind::ProcessKilledBySignal, libc::SIGKILL)
        );
        assert!(ending.detail.contains("SIGKILL"), "{}", ending.detail);
    }

    #[test]
    fn an_exec_is_told_from_the_process_that_was_attached() {
        // sh execs sleep once it has read the ready line from its stdin.
        let mut child = Command::new("sh")
            .args(["-c", "read line; exec sleep 30"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let identity = running_image(pid, "exec sleep");
        assert_eq!(fate(pid, &identity, Some(&mut child)), Fate::Running);
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let now = loop {
            if let Fate::Execed(now) = fate(pid, &identity, Some(&mut child)) {
                break now;
            }
            assert!(Instant::now() < deadline, "exec not seen");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(now.argv.iter().any(|a| a == "sleep"), "{:?}", now.argv);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
