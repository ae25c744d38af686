//! Stopping every thread of a process for a consistent read, for as short
//! a time as possible, with ptrace.
//!
//! The target is charged for the time its threads are *stopped*, not for
//! our work, so the steps that need no stopped thread run before the first
//! stop, and the threads stop in parallel:
//!
//! 1. list `/proc/PID/task` and `PTRACE_SEIZE` each thread (seizing does
//!    not stop it), with `PTRACE_O_TRACECLONE` so a thread started by a
//!    seized thread is seized by the kernel and starts stopped;
//! 2. `PTRACE_INTERRUPT` every thread, then wait for each to stop: they
//!    stop concurrently;
//! 3. list the threads once more (one `getdents64` on the directory kept
//!    open, [`Tasks`]) to catch a thread started by a thread that was
//!    inside `clone()` when seized; stop it likewise;
//! 4. the caller reads;
//! 5. `PTRACE_DETACH` every thread, handing back any signal that arrived
//!    meanwhile.
//!
//! The seize is never kept between pauses: a seized thread enters
//! signal-delivery-stop on every signal, so keeping it would delay the
//! target's signals until our next look. Nothing is ever stopped with
//! `SIGSTOP` and `PTRACE_O_EXITKILL` is not set, so if pydeep dies the
//! kernel detaches (and resumes) every thread (`exit_ptrace`,
//! kernel/ptrace.c).
//!
//! ptrace requests are only accepted from the thread that seized: a
//! [`Pause`] must be released on the thread that made it.

use std::time::{Duration, Instant};

use nix::errno::Errno;

/// Most rounds of "list the threads, seize the new ones" before giving up
/// on a process that starts threads faster than we can seize them.
const MAX_LISTINGS: usize = 64;

/// Why a process could not be paused.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// The kernel refused to let us trace a living thread.
    #[error("permission denied tracing thread {tid} of process {pid}{tracer}")]
    PermissionDenied {
        /// The process.
        pid: i32,
        /// The thread refused.
        tid: i32,
        /// ", already traced by process N" when another tracer holds it.
        tracer: String,
    },
    /// No thread of the process is left.
    #[error("process {pid} has exited")]
    Exited {
        /// The process.
        pid: i32,
    },
    /// Threads kept appearing faster than they could be seized.
    #[error("process {pid} kept starting threads while being paused ({seized} seized)")]
    Unsettled {
        /// The process.
        pid: i32,
        /// Threads seized when we gave up.
        seized: usize,
    },
    /// Any other failure of a ptrace or wait call.
    #[error("{call} of thread {tid} of process {pid} failed: {errno}")]
    Call {
        /// The process.
        pid: i32,
        /// The thread.
        tid: i32,
        /// The request that failed.
        call: &'static str,
        /// What the kernel said.
        errno: Errno,
    },
}

/// Where a seized thread stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Seized, maybe asked to stop, not yet seen stopped.
    Seized,
    /// Seen stopped by `waitpid`; `signal` (0 for none) arrived meanwhile
    /// and is handed back at release.
    Stopped { signal: i32 },
    /// Exited (or was reaped) while seized: nothing to release.
    Gone,
}

#[derive(Debug)]
struct Thread {
    tid: i32,
    state: State,
}

/// Every thread of a process, stopped until this is released or dropped.
#[derive(Debug)]
pub struct Pause {
    pid: i32,
    threads: Vec<Thread>,
    /// When the first thread was asked to stop.
    stopping_since: Option<Instant>,
    released: Option<Duration>,
    /// Some thread exited (or began to) during the pause.
    exit_seen: bool,
    /// The thread that seized: the only one the kernel lets release.
    tracer: i32,
}

impl Pause {
    /// Stops every thread of process `pid`, whose threads `tasks` lists. A
    /// thread that exits meanwhile is skipped; a thread we may not trace
    /// is an error (and every thread already seized is let go).
    pub fn stop(pid: i32, tasks: &Tasks) -> Result<Pause, PauseError> {
        let mut pause = Pause {
            pid,
            threads: Vec::new(),
            stopping_since: None,
            released: None,
            exit_seen: false,
            // SAFETY: gettid has no preconditions.
            tracer: unsafe { libc::gettid() },
        };
        let mut listed = Vec::new();
        let mut skipped = Vec::new();
        tasks.list(&mut listed);
        if listed.is_empty() {
            return Err(PauseError::Exited { pid });
        }
        // On any error below, dropping `pause` releases what was seized.
        pause.seize_new(&listed, &mut skipped)?;
        pause.stopping_since = Some(Instant::now());
        for thread in &pause.threads {
            // ESRCH: it exited since; its wait below says so.
            let _ = interrupt(thread.tid);
        }
        pause.wait_all()?;
        // A thread started by a thread that was inside clone() when seized
        // is not traced (kernel_clone decides at entry), and may have been
        // linked after the listing: only a listing made once every thread
        // is stopped is complete. One getdents on an open directory.
        for _ in 0..MAX_LISTINGS {
            tasks.list(&mut listed);
            let before = pause.threads.len();
            pause.seize_new(&listed, &mut skipped)?;
            if pause.threads.len() == before {
                if pause.threads.iter().all(|t| t.state == State::Gone) {
                    return Err(PauseError::Exited { pid });
                }
                return Ok(pause);
            }
            for thread in &pause.threads[before..] {
                let _ = interrupt(thread.tid);
            }
            pause.wait_all()?;
        }
        Err(PauseError::Unsettled {
            pid,
            seized: pause.threads.len(),
        })
    }

    /// The threads stopped now (kernel tids).
    pub fn stopped_threads(&self) -> impl Iterator<Item = i32> + '_ {
        self.threads
            .iter()
            .filter(|t| matches!(t.state, State::Stopped { .. }))
            .map(|t| t.tid)
    }

    /// When the first thread was asked to stop.
    pub fn stopping_since(&self) -> Option<Instant> {
        self.stopping_since
    }

    /// How long the first thread has been asked to stop (so far, or until
    /// the release if released).
    pub fn stopped_for(&self) -> Duration {
        self.released.unwrap_or_else(|| {
            self.stopping_since
                .map_or(Duration::ZERO, |since| since.elapsed())
        })
    }

    /// Lets every thread run again; returns how long the target was
    /// stopped, from the first `PTRACE_INTERRUPT` to the last detach.
    pub fn release(mut self) -> Duration {
        self.release_all(&[])
    }

    /// Like [`Pause::release`], letting the threads of `first` go before
    /// the others: the threads that were running lose the least, while
    /// threads that were waiting (for the GIL, a lock, I/O) would only go
    /// back to waiting. With 500 threads that is hundreds of microseconds.
    pub fn release_first(mut self, first: &[i32]) -> Duration {
        self.release_all(first)
    }

    /// Seizes the threads of `listed` not yet seized nor `skipped`
    /// (exiting); seizing does not stop them.
    fn seize_new(&mut self, listed: &[i32], skipped: &mut Vec<i32>) -> Result<(), PauseError> {
        for &tid in listed {
            if self.threads.iter().any(|t| t.tid == tid) || skipped.contains(&tid) {
                continue;
            }
            match seize(tid) {
                Ok(()) => self.threads.push(Thread {
                    tid,
                    state: State::Seized,
                }),
                // It exited between the listing and the seize.
                Err(Errno::ESRCH) => skipped.push(tid),
                Err(Errno::EPERM) => {
                    // Already ours: the kernel seized it when a seized
                    // thread started it (PTRACE_O_TRACECLONE), and only
                    // our tracee accepts PTRACE_INTERRUPT.
                    if interrupt(tid).is_ok() {
                        self.threads.push(Thread {
                            tid,
                            state: State::Seized,
                        });
                    } else if thread_alive(self.pid, tid) {
                        return Err(PauseError::PermissionDenied {
                            pid: self.pid,
                            tid,
                            tracer: tracer_note(self.pid, tid),
                        });
                    } else {
                        // It is exiting (PF_EXITING gives EPERM,
                        // ptrace_attach in kernel/ptrace.c): skip it.
                        skipped.push(tid);
                    }
                }
                Err(errno) => {
                    return Err(PauseError::Call {
                        pid: self.pid,
                        tid,
                        call: "PTRACE_SEIZE",
                        errno,
                    })
                }
            }
        }
        Ok(())
    }

    /// Phase 2: waits until every seized thread has stopped (or is gone).
    /// The other threads first, the leader last: a leader killed by a
    /// group exit another thread started is a zombie that waitpid waits
    /// on until every other thread is reaped (delay_group_leader,
    /// kernel/exit.c), and the thread that started the exit stops at
    /// PTRACE_EVENT_EXIT waiting for us.
    fn wait_all(&mut self) -> Result<(), PauseError> {
        loop {
            // Threads started meanwhile are appended: scan until none left.
            let next = self
                .threads
                .iter()
                .position(|t| t.state == State::Seized && t.tid != self.pid)
                .or_else(|| {
                    self.threads
                        .iter()
                        .position(|t| t.state == State::Seized && t.tid == self.pid)
                });
            match next {
                Some(index) if self.threads[index].tid == self.pid => self.wait_leader(index)?,
                Some(index) => self.wait_thread(index)?,
                None => return Ok(()),
            }
        }
    }

    /// Waits until thread `index` (not the leader) stops or is gone.
    fn wait_thread(&mut self, index: usize) -> Result<(), PauseError> {
        let tid = self.threads[index].tid;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes one int through a valid pointer.
            let waited = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
            if waited < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    // Not our tracee any more: it exited and was reaped.
                    Errno::ECHILD => {
                        self.gone(index);
                        return Ok(());
                    }
                    errno => {
                        return Err(PauseError::Call {
                            pid: self.pid,
                            tid,
                            call: "waitpid",
                            errno,
                        })
                    }
                }
            }
            // An exited thread is reaped by this waitpid: only its tracer
            // can reap a traced thread.
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.gone(index);
                return Ok(());
            }
            if libc::WIFSTOPPED(status) {
                self.stopped(index, libc::WSTOPSIG(status), status >> 16);
                return Ok(());
            }
        }
    }

    /// Waits until the leader (`index`, tid = pid) stops or is gone, with
    /// waitid(WNOWAIT): its exit status belongs to its parent, which may be
    /// us (`pydeep record` starts its target), and a waitpid would take it.
    /// Once some thread was seen exiting, the whole process may be exiting
    /// and the leader a zombie waitid would wait on forever: then poll.
    fn wait_leader(&mut self, index: usize) -> Result<(), PauseError> {
        let pid = self.pid;
        loop {
            let mut flags = libc::WEXITED | libc::WSTOPPED | libc::__WALL | libc::WNOWAIT;
            if self.exit_seen {
                flags |= libc::WNOHANG;
            }
            // SAFETY: waitid writes one siginfo_t through a valid pointer;
            // a zeroed siginfo_t is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let waited = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
            if waited < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    Errno::ECHILD => {
                        self.gone(index);
                        return Ok(());
                    }
                    errno => {
                        return Err(PauseError::Call {
                            pid,
                            tid: pid,
                            call: "waitid",
                            errno,
                        })
                    }
                }
            }
            // SAFETY: waitid filled the SIGCHLD fields, or left zeroes.
            let (from, status) = unsafe { (info.si_pid(), info.si_status()) };
            if from == 0 {
                // WNOHANG and no news.
                if !thread_alive(pid, pid) {
                    self.gone(index);
                    self.reap_leader();
                    return Ok(());
                }
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            match info.si_code {
                libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED => {
                    self.gone(index);
                    self.reap_leader();
                    return Ok(());
                }
                // A ptrace stop: si_status is the kernel's exit_code,
                // signal | event << 8 (ptrace_stop, kernel/signal.c). Left
                // unconsumed: the detach replaces it.
                libc::CLD_TRAPPED => {
                    self.stopped(index, status & 0xff, status >> 8);
                    return Ok(());
                }
                libc::CLD_STOPPED => {
                    self.stopped(index, 0, 0);
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    fn gone(&mut self, index: usize) {
        self.threads[index].state = State::Gone;
        self.exit_seen = true;
    }

    /// Records thread `index` stopped with `signal` and ptrace `event` (0:
    /// none) from its wait status.
    fn stopped(&mut self, index: usize, signal: i32, event: i32) {
        let tid = self.threads[index].tid;
        if event == 0 {
            // Signal-delivery-stop: a signal arrived before our interrupt
            // took effect. The thread is stopped; the signal is handed
            // back when it is let go.
            self.threads[index].state = State::Stopped { signal };
            return;
        }
        // A ptrace event stop: our interrupt or a group-stop
        // (PTRACE_EVENT_STOP), an exit (PTRACE_EVENT_EXIT) or a thread
        // start (PTRACE_EVENT_CLONE), whose new thread is already ours and
        // stops by itself.
        if event == libc::PTRACE_EVENT_EXIT {
            self.exit_seen = true;
        }
        if event == libc::PTRACE_EVENT_CLONE {
            if let Some(child) = event_message(tid) {
                if !self.threads.iter().any(|t| t.tid == child) {
                    self.threads.push(Thread {
                        tid: child,
                        state: State::Seized,
                    });
                }
            }
        }
        self.threads[index].state = State::Stopped { signal: 0 };
    }

    /// The leader is a zombie: if we are not its parent, reap it as its
    /// tracer, which hands its exit status on to its parent
    /// (wait_task_zombie, kernel/exit.c); our own child is left for the
    /// code that waits for it. Polls for at most a second (it is reapable
    /// once every other thread is).
    fn reap_leader(&mut self) {
        if parent_of(self.pid) == Some(std::process::id() as i32) {
            return;
        }
        for _ in 0..2000 {
            let mut status = 0;
            // SAFETY: waitpid writes one int through a valid pointer.
            let waited =
                unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL | libc::WNOHANG) };
            if waited != 0 {
                return;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Threads killed (SIGKILL) while stopped cannot be detached until
    /// they stop again, at PTRACE_EVENT_EXIT on their way out, or are
    /// gone; as their tracer we must see them through, or they would stay
    /// ours (their exit reported to us, not their parent). The others
    /// first, the leader last (it stops, or is reapable, only once they
    /// are gone). Polls for at most a second each: they are dying.
    fn let_dying_go(&mut self) {
        let leader = self.threads.iter().position(|t| t.tid == self.pid);
        let others = (0..self.threads.len()).filter(|&i| Some(i) != leader);
        for index in others.chain(leader) {
            let thread = &self.threads[index];
            if !matches!(thread.state, State::Stopped { .. }) {
                continue;
            }
            let tid = thread.tid;
            for _ in 0..2000 {
                let (ended, stopped) = if tid == self.pid {
                    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                    // SAFETY: waitid writes one siginfo_t through a valid
                    // pointer. WNOWAIT: an exit is the parent's to take.
                    let flags = libc::WEXITED
                        | libc::WSTOPPED
                        | libc::__WALL
                        | libc::WNOWAIT
                        | libc::WNOHANG;
                    let waited =
                        unsafe { libc::waitid(libc::P_PID, tid as libc::id_t, &mut info, flags) };
                    let from = unsafe { info.si_pid() };
                    (
                        waited < 0 || (from != 0 && info.si_code != libc::CLD_TRAPPED),
                        from != 0 && info.si_code == libc::CLD_TRAPPED,
                    )
                } else {
                    let mut status = 0;
                    // SAFETY: waitpid writes one int through a valid pointer.
                    let waited =
                        unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
                    (
                        waited < 0 || (waited > 0 && !libc::WIFSTOPPED(status)),
                        waited > 0 && libc::WIFSTOPPED(status),
                    )
                };
                if stopped && detach(tid, 0).is_ok() {
                    break;
                }
                if ended {
                    if tid == self.pid {
                        self.reap_leader();
                    }
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            self.threads[index].state = State::Gone;
        }
    }

    fn release_all(&mut self, first: &[i32]) -> Duration {
        if let Some(done) = self.released {
            return done;
        }
        // SAFETY: gettid has no preconditions.
        let here = unsafe { libc::gettid() };
        if here != self.tracer && !self.threads.is_empty() {
            // Every request below would fail with ESRCH and the threads
            // would stay stopped until this process exits: a bug in the
            // caller, said loudly.
            tracing::error!(
                pid = self.pid,
                "pause released on thread {here}, not on thread {} that made it; \
                 the target stays stopped until pydeep exits",
                self.tracer
            );
        }
        // Seized but not seen stopped (an error cut the pause short):
        // PTRACE_DETACH needs a stopped tracee, so stop them first, else
        // they would stay seized, and stop on their next signal with
        // nobody to resume them.
        if self.threads.iter().any(|t| t.state == State::Seized) {
            for thread in &self.threads {
                if thread.state == State::Seized {
                    let _ = interrupt(thread.tid);
                }
            }
            let _ = self.wait_all();
        }
        let mut dying = false;
        for early in [true, false] {
            for thread in &mut self.threads {
                if first.contains(&thread.tid) != early {
                    continue;
                }
                if let State::Stopped { signal } = thread.state {
                    if detach(thread.tid, signal).is_err() {
                        // Only SIGKILL takes a thread out of a ptrace
                        // stop: it is dying, and ours to reap.
                        dying = true;
                        continue;
                    }
                    thread.state = State::Gone;
                }
            }
        }
        let stopped = self
            .stopping_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        if dying {
            self.exit_seen = true;
            self.let_dying_go();
        }
        self.released = Some(stopped);
        stopped
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.release_all(&[]);
    }
}

/// For a thread stopped by a [`Pause`] of this thread: `Some(true)` if it
/// was running when stopped (in user mode, or in a system call that does
/// not wait), `Some(false)` if it was waiting in a blocking call (futex,
/// poll, sleep, read, ...: [`BLOCKING_SYSCALLS`]); `None` if it is not
/// our stopped tracee.
///
/// The answer is the one `/proc/PID/task/TID/syscall` gives (both read the
/// `orig_rax` the kernel saved on entry, `collect_syscall` in
/// lib/syscall.c), from one `PTRACE_GETREGS` instead of opening, reading
/// and formatting a file. `PTRACE_GET_SYSCALL_INFO` would not do: it knows
/// the call only at a syscall-stop, and an interrupt stop is not one.
#[cfg(target_arch = "x86_64")]
pub fn stopped_thread_was_running(tid: i32) -> Option<bool> {
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct through a valid
    // pointer; the struct is plain integers, so zeroed is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let done = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut regs as *mut libc::user_regs_struct as *mut libc::c_void,
        )
    };
    if done < 0 {
        return None;
    }
    Some(syscall_was_running(regs.orig_rax as i64))
}

/// Elsewhere than x86-64 the call number is not in the general registers
/// ptrace hands out: callers read `/proc/PID/task/TID/syscall`.
#[cfg(not(target_arch = "x86_64"))]
pub fn stopped_thread_was_running(_tid: i32) -> Option<bool> {
    None
}

/// True if a thread stopped with system call number `number` (-1: none,
/// it was in user mode) was running rather than waiting.
pub fn syscall_was_running(number: i64) -> bool {
    number < 0 || !BLOCKING_SYSCALLS.contains(&number)
}

/// System calls a thread waits in when it is idle (x86-64 numbers): read,
/// poll, select, pause, nanosleep, accept, recvfrom, recvmsg, wait4,
/// rt_sigtimedwait, rt_sigsuspend, futex, clock_nanosleep, epoll_wait,
/// pselect6, ppoll, epoll_pwait, accept4, epoll_pwait2.
#[cfg(target_arch = "x86_64")]
pub const BLOCKING_SYSCALLS: &[i64] = &[
    0, 7, 23, 34, 35, 43, 45, 47, 61, 128, 130, 202, 230, 232, 270, 271, 281, 288, 441,
];
/// The same calls on aarch64 (read, ppoll, pselect6, nanosleep,
/// clock_nanosleep, rt_sigtimedwait, rt_sigsuspend, futex, epoll_pwait,
/// accept, recvfrom, recvmsg, wait4, accept4, epoll_pwait2).
#[cfg(not(target_arch = "x86_64"))]
pub const BLOCKING_SYSCALLS: &[i64] = &[
    63, 73, 72, 101, 115, 137, 133, 98, 22, 202, 207, 212, 260, 242, 441,
];

fn seize(tid: i32) -> Result<(), Errno> {
    // PTRACE_O_TRACEEXIT: a thread exiting during the pause stops at
    // PTRACE_EVENT_EXIT, where waitpid sees it, rather than becoming a
    // zombie leader that waitpid would wait on until every other thread
    // exits (delay_group_leader, kernel/exit.c).
    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACECLONE;
    request(libc::PTRACE_SEIZE, tid, options as usize)
}

fn interrupt(tid: i32) -> Result<(), Errno> {
    request(libc::PTRACE_INTERRUPT, tid, 0)
}

fn detach(tid: i32, signal: i32) -> Result<(), Errno> {
    // The data carries the signal to deliver.
    request(libc::PTRACE_DETACH, tid, signal as usize)
}

/// A ptrace request that takes no address and an integer (or nothing) as
/// its data: SEIZE (options), INTERRUPT, DETACH (signal).
fn request(request: libc::c_uint, tid: i32, data: usize) -> Result<(), Errno> {
    // SAFETY: these requests read no pointer; the address is null and the
    // data is an integer passed in a pointer-sized argument.
    let done = unsafe {
        libc::ptrace(
            request,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    if done < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The new thread's tid at a `PTRACE_EVENT_CLONE` stop.
fn event_message(tid: i32) -> Option<i32> {
    let mut message: libc::c_ulong = 0;
    // SAFETY: PTRACE_GETEVENTMSG writes one unsigned long through a valid
    // pointer.
    let done = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut message as *mut libc::c_ulong as *mut libc::c_void,
        )
    };
    (done >= 0).then_some(message as i32)
}

/// Lists a process's threads (`/proc/PID/task`) through a directory kept
/// open: one `getdents64` per listing of a few threads, where opening the
/// directory again costs twice that. The open directory follows the
/// process (its `struct pid`), so a recycled pid lists nothing.
#[derive(Debug)]
pub struct Tasks {
    pid: i32,
    directory: Option<std::fs::File>,
}

impl Tasks {
    /// Opens the thread list of `pid` (listing nothing if it cannot).
    pub fn open(pid: i32) -> Tasks {
        Tasks {
            pid,
            directory: std::fs::File::open(format!("/proc/{pid}/task")).ok(),
        }
    }

    /// The kernel tids of the process's threads, into `out` (cleared
    /// first; empty if the process is gone).
    pub fn list(&self, out: &mut Vec<i32>) {
        use std::os::fd::AsRawFd;
        out.clear();
        let Some(directory) = &self.directory else {
            out.extend(list_tasks(self.pid));
            return;
        };
        let fd = directory.as_raw_fd();
        // SAFETY: lseek on a descriptor we own.
        if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
            return;
        }
        let mut buffer = [0u64; 1024];
        // Bounded: a process has at most a few million threads.
        for _ in 0..100_000 {
            // SAFETY: getdents64 writes at most the buffer's length.
            let read = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    fd,
                    buffer.as_mut_ptr(),
                    std::mem::size_of_val(&buffer),
                )
            };
            if read <= 0 {
                return;
            }
            // SAFETY: the buffer is initialised plain bytes.
            let bytes =
                unsafe { std::slice::from_raw_parts(buffer.as_ptr() as *const u8, read as usize) };
            parse_dirents(bytes, out);
        }
    }
}

/// The numeric names in a `getdents64` buffer (struct linux_dirent64:
/// inode u64, offset i64, record length u16, type u8, NUL-ended name).
fn parse_dirents(mut bytes: &[u8], out: &mut Vec<i32>) {
    while bytes.len() >= 19 {
        let length = u16::from_ne_bytes([bytes[16], bytes[17]]) as usize;
        if length < 19 || length > bytes.len() {
            return;
        }
        let name = &bytes[19..length];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if let Some(tid) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
            out.push(tid);
        }
        bytes = &bytes[length..];
    }
}

/// The kernel tids of `pid`'s threads (empty if it is gone).
pub fn list_tasks(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// False if thread `tid` is gone or exiting (zombie or dead).
fn thread_alive(pid: i32, tid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/task/{tid}/stat")) {
        Ok(bytes) => {
            let state = bytes
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|close| bytes.get(close + 2).copied());
            !matches!(state, Some(b'Z' | b'X' | b'x') | None)
        }
        Err(_) => false,
    }
}

/// The parent pid of `pid` (field 4 of `/proc/PID/stat`).
fn parent_of(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// ", already traced by process N (COMMAND)" if another tracer holds `tid`.
fn tracer_note(pid: i32, tid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"));
    let tracer = status.ok().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("TracerPid:"))
            .and_then(|value| value.trim().parse::<i32>().ok())
    });
    match tracer {
        Some(tracer) if tracer != 0 => {
            let name = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
                .map(|n| format!(" ({})", n.trim()))
                .unwrap_or_default();
            format!(", already traced by process {tracer}{name} (a debugger or another profiler): only one tracer at a time")
        }
        _ => String::new(),
    }
}

/// How long pauses stopped the target: count, median, 99th percentile and
/// longest, from a histogram of 1 µs buckets up to 10 ms (longer pauses
/// count in the last bucket, and in the maximum exactly).
#[derive(Debug, Clone)]
pub struct PauseStats {
    buckets: Vec<u32>,
    count: u64,
    total: Duration,
    longest: Duration,
}

impl Default for PauseStats {
    fn default() -> Self {
        PauseStats {
            buckets: vec![0; 10_001],
            count: 0,
            total: Duration::ZERO,
            longest: Duration::ZERO,
        }
    }
}

impl PauseStats {
    /// Counts one pause that stopped the target for `stopped`.
    pub fn record(&mut self, stopped: Duration) {
        let bucket = (stopped.as_micros() as usize).min(self.buckets.len() - 1);
        self.buckets[bucket] = self.buckets[bucket].saturating_add(1);
        self.count += 1;
        self.total += stopped;
        self.longest = self.longest.max(stopped);
    }

    /// Pauses counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The pause length that `fraction` (0 to 1) of pauses do not exceed,
    /// to the microsecond; zero without pauses.
    pub fn quantile(&self, fraction: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.count as f64 * fraction).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (micros, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                if micros == self.buckets.len() - 1 {
                    return self.longest;
                }
                return Duration::from_micros(micros as u64).min(self.longest);
            }
        }
        self.longest
    }

    /// The longest pause.
    pub fn longest(&self) -> Duration {
        self.longest
    }

    /// Mean pause length.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.total / self.count as u32
        }
    }
}

impl std::fmt::Display for PauseStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "target paused {} times: median {:.0} us, p99 {:.0} us, max {:.0} us, mean {:.0} us",
            self.count,
            us(self.quantile(0.5)),
            us(self.quantile(0.99)),
            us(self.longest),
            us(self.mean())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_in_user_mode_or_a_quick_call_was_running_one_in_a_wait_was_not() {
        assert!(syscall_was_running(-1));
        // getpid (x86-64 39, aarch64 172) is not a wait.
        assert!(syscall_was_running(if cfg!(target_arch = "x86_64") {
            39
        } else {
            172
        }));
        for number in BLOCKING_SYSCALLS {
            assert!(!syscall_was_running(*number), "{number}");
        }
    }

    #[test]
    fn pause_stats_give_median_and_tail_to_the_microsecond() {
        let mut stats = PauseStats::default();
        assert_eq!(stats.quantile(0.5), Duration::ZERO);
        for micros in 1..=100 {
            stats.record(Duration::from_micros(micros));
        }
        stats.record(Duration::from_millis(50));
        assert_eq!(stats.count(), 101);
        assert_eq!(stats.quantile(0.5), Duration::from_micros(51));
        assert_eq!(stats.quantile(0.99), Duration::from_micros(100));
        assert_eq!(stats.quantile(1.0), Duration::from_millis(50));
        assert_eq!(stats.longest(), Duration::from_millis(50));
    }

    #[test]
    fn thread_ids_are_read_from_a_getdents_buffer_and_dots_skipped() {
        fn entry(name: &str) -> Vec<u8> {
            let length = (19 + name.len() + 1).next_multiple_of(8);
            let mut bytes = vec![0u8; length];
            bytes[16..18].copy_from_slice(&(length as u16).to_ne_bytes());
            bytes[19..19 + name.len()].copy_from_slice(name.as_bytes());
            bytes
        }
        let mut buffer = Vec::new();
        for name in [".", "..", "4242", "17"] {
            buffer.extend(entry(name));
        }
        let mut tids = Vec::new();
        parse_dirents(&buffer, &mut tids);
        assert_eq!(tids, [4242, 17]);
        // A record length pointing past the end stops the parse.
        let mut cut = entry("99");
        cut[16] = 200;
        parse_dirents(&cut, &mut tids);
        assert_eq!(tids, [4242, 17]);
    }

    #[test]
    fn the_open_thread_list_of_this_process_names_this_thread() {
        let tasks = Tasks::open(std::process::id() as i32);
        let mut tids = Vec::new();
        tasks.list(&mut tids);
        let me = unsafe { libc::gettid() };
        assert!(tids.contains(&me), "{tids:?} lacks {me}");
    }

    #[test]
    fn pausing_a_process_that_does_not_exist_says_it_exited() {
        // Pid numbers stop below 2^22 (PID_MAX_LIMIT).
        let error = Pause::stop(i32::MAX, &Tasks::open(i32::MAX)).expect_err("no such process");
        assert!(matches!(error, PauseError::Exited { .. }), "{error}");
    }
}
