//! Where a fixture's threads sleep: the number of the system call a
//! blocked thread is in, as `/proc/PID/syscall` (main thread) and
//! `/proc/PID/task/TID/syscall` report it. Fixtures write their truth and
//! then block; a test snapshots them only once they are known to sleep
//! at their blocking point, so nothing depends on timing.

/// futex(2): 202 on x86-64, 98 on aarch64.
#[cfg(target_arch = "x86_64")]
pub const FUTEX: &[&str] = &["202"];
/// futex(2): 202 on x86-64, 98 on aarch64.
#[cfg(not(target_arch = "x86_64"))]
pub const FUTEX: &[&str] = &["98"];

/// epoll_wait, epoll_pwait, epoll_pwait2 (x86-64); epoll_pwait (aarch64).
#[cfg(target_arch = "x86_64")]
pub const EPOLL: &[&str] = &["232", "281", "441"];
/// epoll_wait, epoll_pwait, epoll_pwait2 (x86-64); epoll_pwait (aarch64).
#[cfg(not(target_arch = "x86_64"))]
pub const EPOLL: &[&str] = &["22"];

/// pause(2) is 34 on x86-64 (glibc may use rt_sigsuspend, 130); aarch64
/// has only rt_sigsuspend (133).
#[cfg(target_arch = "x86_64")]
pub const PAUSE: &[&str] = &["34", "130"];
/// pause(2) is 34 on x86-64 (glibc may use rt_sigsuspend, 130); aarch64
/// has only rt_sigsuspend (133).
#[cfg(not(target_arch = "x86_64"))]
pub const PAUSE: &[&str] = &["133"];

/// rt_sigtimedwait(2), which sigwait() uses: 128 on x86-64, 137 on aarch64.
#[cfg(target_arch = "x86_64")]
pub const SIGTIMEDWAIT: &[&str] = &["128"];
/// rt_sigtimedwait(2), which sigwait() uses: 128 on x86-64, 137 on aarch64.
#[cfg(not(target_arch = "x86_64"))]
pub const SIGTIMEDWAIT: &[&str] = &["137"];

/// True if the main thread of `pid` sleeps in one of `calls`.
pub fn process_in(pid: u32, calls: &[&str]) -> bool {
    in_call(&format!("/proc/{pid}/syscall"), calls)
}

/// True if thread `tid` (native id) of `pid` sleeps in one of `calls`.
pub fn thread_in(pid: u32, tid: u64, calls: &[&str]) -> bool {
    in_call(&format!("/proc/{pid}/task/{tid}/syscall"), calls)
}

/// True if thread `truth.thread.native_id` of `pid` sleeps in one of
/// `calls`: the fixtures name their scene thread so in their truth.
pub fn scene_thread_in(pid: u32, truth: &serde_json::Value, calls: &[&str]) -> bool {
    let tid = truth["thread"]["native_id"]
        .as_u64()
        .expect("truth.thread.native_id");
    thread_in(pid, tid, calls)
}

/// Number of threads `pid` has now.
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

fn in_call(path: &str, calls: &[&str]) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.split_whitespace()
            .next()
            .is_some_and(|number| calls.contains(&number))
    })
}
