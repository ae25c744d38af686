//! SIGINT, SIGTERM and SIGHUP: ask the command to stop (a recording stops
//! at its next tick and is finished with its footer), and forward SIGINT
//! and SIGTERM to the program `pydeep record` started.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::cli::session::INTERRUPTED;

/// The last stop signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The program `pydeep record` started (0: none), to forward signals to.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only atomics and kill(2): async-signal-safe.
    SIGNAL.store(signal, Ordering::Relaxed);
    INTERRUPTED.store(true, Ordering::Relaxed);
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 && (signal == libc::SIGINT || signal == libc::SIGTERM) && !info.is_null() {
        // A signal the terminal sent (Ctrl-C: SI_KERNEL) reached the
        // program already, with the whole foreground process group; one
        // sent to pydeep alone (kill: SI_USER, SI_QUEUE) is passed on.
        // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
        let code = unsafe { (*info).si_code };
        if code == libc::SI_USER || code == libc::SI_QUEUE || code == libc::SI_TKILL {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(child, signal) };
        }
    }
}

extern "C" fn on_file_size_limit(_: libc::c_int) {}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP, and one for
/// SIGXFSZ. Without `SA_RESTART`, so a blocking call returns `EINTR`; the
/// waits of pydeep's own loops are sliced ([`sleep`]) in any case.
///
/// SIGHUP (a closed terminal) stops a recording the way SIGTERM does: the
/// file is finished with its footer.
///
/// Why SIGXFSZ: a write past the file size limit (`ulimit -f`) raises it,
/// and its default action kills the agent before it can say why; with a
/// handler the write fails with EFBIG, which is reported as an output error
/// (exit 9). A handler, not SIG_IGN: handlers are reset by exec, so the
/// program `pydeep record` starts keeps the default disposition.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to
        // atomics and calls kill.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    // SAFETY: the handler does nothing.
    unsafe {
        libc::signal(
            libc::SIGXFSZ,
            on_file_size_limit as *const () as libc::sighandler_t,
        )
    };
}

/// From now on SIGINT and SIGTERM sent to pydeep are passed on to `pid`
/// (the program `pydeep record` started); 0 stops forwarding.
pub fn forward_to(pid: i32) {
    CHILD.store(pid, Ordering::Relaxed);
}

/// Asks the running command to stop the way a stop signal does (the user
/// pressed `q` in `pydeep top`): a recording stops at its next tick and is
/// finished with its footer.
pub fn stop() {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// The stop signal received, if one was.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 if INTERRUPTED.load(Ordering::Relaxed) => Some(libc::SIGINT),
        0 => None,
        signal => Some(signal),
    }
}

/// A command stopped by a signal before it finished: `main` says so and
/// ends by that signal, so a shell sees 128+N as it would without pydeep's
/// handlers.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {} {what}", signal_name(*.signal))]
pub struct Interrupted {
    /// The signal.
    pub signal: i32,
    /// What was stopped, e.g. "while waiting for the daemon's reply".
    pub what: String,
}

impl Interrupted {
    /// The error for the signal received, if one was.
    pub fn check(what: impl FnOnce() -> String) -> Result<(), Interrupted> {
        match received() {
            Some(signal) => Err(Interrupted {
                signal,
                what: what(),
            }),
            None => Ok(()),
        }
    }
}

/// `SIGINT`, `SIGTERM`, ... for the signals pydeep handles.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// Ends the process by `signal`, with its default action.
pub fn die_by(signal: i32) -> ! {
    // SAFETY: resetting a disposition and raising a signal.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

/// The longest slice of [`sleep`]: how late a signal may be seen.
const SLICE: Duration = Duration::from_millis(20);

/// Sleeps for `duration`, or until a stop signal arrives: returns false
/// if one did.
pub fn sleep(duration: Duration) -> bool {
    let end = Instant::now().checked_add(duration);
    loop {
        if received().is_some() {
            return false;
        }
        let now = Instant::now();
        let left = match end {
            Some(end) if end <= now => return true,
            Some(end) => end - now,
            None => SLICE,
        };
        std::thread::sleep(left.min(SLICE));
    }
}
