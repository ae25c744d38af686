//! What the tracer asks of libc: the clock, the thread id, one detached
//! thread, sleeping, `dlsym`. Written against libc directly rather than
//! Rust's `std` so that nothing here can panic (the library is `no_std`, see
//! `lib.rs`) and so that the watchdog thread has no Rust frame that aborts
//! when CPython ends it with `pthread_exit` (see `spawn_detached`).

use core::ffi::{c_char, c_int, c_ulong, c_void};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// glibc's `pthread_attr_t` is 56 bytes on x86_64; 64, aligned, is room
/// enough.
#[repr(C, align(8))]
struct PthreadAttr([u8; 64]);

/// glibc's `sigset_t` is 128 bytes.
type SigSet = [u64; 16];

#[link(name = "c")]
#[link(name = "dl")]
#[link(name = "pthread")]
extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn clock_gettime(clock: c_int, time: *mut Timespec) -> c_int;
    fn nanosleep(request: *const Timespec, remaining: *mut Timespec) -> c_int;
    fn syscall(number: i64, ...) -> i64;
    fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn pthread_attr_init(attr: *mut PthreadAttr) -> c_int;
    fn pthread_attr_destroy(attr: *mut PthreadAttr) -> c_int;
    fn pthread_attr_setstacksize(attr: *mut PthreadAttr, size: usize) -> c_int;
    fn pthread_attr_setdetachstate(attr: *mut PthreadAttr, state: c_int) -> c_int;
    fn pthread_create(
        thread: *mut c_ulong,
        attr: *const PthreadAttr,
        start: extern "C" fn(*mut c_void) -> *mut c_void,
        argument: *mut c_void,
    ) -> c_int;
    fn pthread_setname_np(thread: c_ulong, name: *const c_char) -> c_int;
    fn pthread_self() -> c_ulong;
    fn pthread_key_create(key: *mut u32, destructor: Option<extern "C" fn(*mut c_void)>) -> c_int;
    fn pthread_getspecific(key: u32) -> *mut c_void;
    fn prctl(option: c_int, ...) -> c_int;
    fn pthread_setspecific(key: u32, value: *const c_void) -> c_int;
}

const CLOCK_MONOTONIC: c_int = 1;
const SYS_GETTID: i64 = 186;
const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const PTHREAD_CREATE_DETACHED: c_int = 1;

/// CLOCK_MONOTONIC in nanoseconds (the agent's and the fixtures' clock).
pub fn now_ns() -> u64 {
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// True while this window's event times are TSC ticks ([`use_tsc`]).
static USE_TSC: AtomicBool = AtomicBool::new(false);

/// Event times in TSC ticks from now on (`true`), or CLOCK_MONOTONIC ns.
/// Set by the start function only, before any hook runs.
pub fn use_tsc(on: bool) {
    USE_TSC.store(on, Ordering::Relaxed);
}

/// True if `rdtsc` may run here: x86_64, and this thread's TSC is not
/// made to fault (`prctl(PR_SET_TSC, PR_TSC_SIGSEGV)`, inherited by its
/// threads). Whether the TSC is invariant is the agent's question (it reads
/// /proc/cpuinfo and asks with `FLAG_TSC`).
pub fn tsc_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        const PR_GET_TSC: c_int = 25;
        const PR_TSC_ENABLE: c_int = 1;
        let mut state: c_int = 0;
        // SAFETY: PR_GET_TSC writes one int through the pointer.
        let asked = unsafe { prctl(PR_GET_TSC, &mut state as *mut c_int) };
        asked == 0 && state == PR_TSC_ENABLE
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// An event's time: TSC ticks (one `rdtsc`, ~10 ns against
/// `clock_gettime`'s ~24 ns here) or CLOCK_MONOTONIC ns, as [`use_tsc`] says.
#[inline(always)]
pub fn event_time() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(Ordering::Relaxed) {
        // SAFETY: rdtsc has no preconditions; tsc_enabled checked it runs.
        return unsafe { core::arch::x86_64::_rdtsc() };
    }
    now_ns()
}

/// Sleeps about `ms` milliseconds (an interrupted sleep just ends early).
pub fn sleep_ms(ms: u64) {
    let t = Timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    // SAFETY: a valid request; no remaining time asked for.
    unsafe { nanosleep(&t, core::ptr::null_mut()) };
}

/// Looks `name` (NUL-terminated) up in the process's global scope.
pub fn symbol(name: &[u8]) -> Option<*mut c_void> {
    if name.last() != Some(&0) {
        return None;
    }
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT is the null handle.
    let address = unsafe { dlsym(core::ptr::null_mut(), name.as_ptr().cast()) };
    (!address.is_null()).then_some(address)
}

/// The `pthread_key_create` key holding each thread's kernel id, plus one
/// (0: not created yet; u32::MAX: creating it failed, ask the kernel each
/// time).
static THREAD_ID_KEY: AtomicU32 = AtomicU32::new(0);

/// Creates the key [`thread_id`] caches the id under. Called once, by the
/// start function, before any hook can run.
pub fn create_thread_id_key() {
    if THREAD_ID_KEY.load(Ordering::Acquire) != 0 {
        return;
    }
    let mut key = 0u32;
    // SAFETY: a valid out-pointer, no destructor (the value is no pointer).
    let created = unsafe { pthread_key_create(&mut key, None) } == 0;
    let stored = if created && key < u32::MAX - 1 {
        key + 1
    } else {
        u32::MAX
    };
    THREAD_ID_KEY.store(stored, Ordering::Release);
}

/// The calling thread's kernel id, asked of the kernel once per thread and
/// kept with `pthread_setspecific` (a few instructions to read back,
/// without the `__tls_get_addr` call of a `dlopen`ed library's TLS).
pub fn thread_id() -> u32 {
    let key = THREAD_ID_KEY.load(Ordering::Relaxed);
    if key == 0 || key == u32::MAX {
        // SAFETY: gettid takes no argument.
        return unsafe { syscall(SYS_GETTID) } as u32;
    }
    // SAFETY: a key created by pthread_key_create.
    let cached = unsafe { pthread_getspecific(key - 1) } as usize as u32;
    if cached != 0 {
        return cached;
    }
    // SAFETY: gettid takes no argument; the key is valid, the value is an
    // integer stored as a pointer.
    unsafe {
        let id = syscall(SYS_GETTID) as u32;
        pthread_setspecific(key - 1, id as usize as *const c_void);
        id
    }
}

/// Starts `main` on a new detached thread with a 256 KiB stack and every signal blocked (the
/// target's signals go to its own threads). False if it could not start.
///
/// Not `std::thread`: CPython ends a thread that waits for the GIL when the
/// interpreter starts finalizing with `pthread_exit`, whose forced unwind
/// runs through every frame of the thread. std's thread entry is an
/// `extern "C"` frame compiled to abort on any unwind ("panic in a function
/// that cannot unwind"): that aborted the target at its exit. This thread's
/// entry is `main` itself, and no frame of this library has a landing pad
/// (`panic=abort`), so the unwind passes through to glibc's thread start.
pub fn spawn_detached(main: extern "C" fn(*mut c_void) -> *mut c_void) -> bool {
    let all: SigSet = [u64::MAX; 16];
    let mut old: SigSet = [0; 16];
    let mut attr = PthreadAttr([0; 64]);
    let mut thread: c_ulong = 0;
    // SAFETY: valid buffers; the attribute object is initialised before
    // use and destroyed after; the mask is restored before returning.
    unsafe {
        if pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        pthread_attr_setstacksize(&mut attr, 256 * 1024);
        pthread_attr_setdetachstate(&mut attr, PTHREAD_CREATE_DETACHED);
        // The new thread inherits the mask: blocked from its first
        // instruction, and the calling thread's own mask is put back.
        pthread_sigmask(SIG_BLOCK, &all, &mut old);
        let created = pthread_create(&mut thread, &attr, main, core::ptr::null_mut()) == 0;
        pthread_sigmask(SIG_SETMASK, &old, core::ptr::null_mut());
        pthread_attr_destroy(&mut attr);
        created
    }
}

/// Names the calling thread (`name` NUL-terminated, at most 15 bytes; as
/// `ps -L` and `/proc/PID/task/TID/comm` show it).
pub fn name_this_thread(name: &[u8]) {
    if name.last() == Some(&0) {
        // SAFETY: the calling thread, a NUL-terminated name.
        unsafe { pthread_setname_np(pthread_self(), name.as_ptr().cast()) };
    }
}
