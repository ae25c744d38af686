//! SIGINT / SIGTERM handling: ask the session to stop and finalize the file.

use std::sync::atomic::Ordering;

use crate::session::INTERRUPTED;

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

extern "C" fn on_file_size_limit(_: libc::c_int) {}

/// Installs the handlers for SIGINT and SIGTERM, and one for SIGXFSZ.
///
/// Why SIGXFSZ: a write past the file size limit (`ulimit -f`) raises it,
/// and its default action kills the agent before it can say why; with a
/// handler the write fails with EFBIG, which is reported as an output error
/// (exit 9). A handler, not SIG_IGN: handlers are reset by exec, so the
/// program `pydeep record` starts keeps the default disposition.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    // SAFETY: the handler does nothing.
    unsafe {
        libc::signal(
            libc::SIGXFSZ,
            on_file_size_limit as *const () as libc::sighandler_t,
        )
    };
}
