//! pydeep's in-target tracer.
//!
//! `pydeep trace` loads this library into a running CPython (see
//! notes/tracing.md for how and when) and calls [`pydeep_tracer_v2_start`].
//! The library then:
//!
//! * starts one thread of its own, the watchdog, which takes the GIL
//!   (`PyGILState_Ensure`) and installs a C-level profile function
//!   (`_PyEval_SetProfile`) on every thread of the main interpreter, after
//!   checking that none already has one (`sys.setprofile`, cProfile before
//!   3.12, a tracer): those are refused, never replaced;
//! * writes one fixed-size record per call and return into a ring in its own
//!   memory ([`abi`]), which the agent drains with `process_vm_readv`. No
//!   file, socket or pipe is opened in the target. When the ring is full the
//!   event is dropped and counted: the target never waits for the agent;
//! * keeps every code object it reported alive (one reference each) until
//!   the agent says it has read them, so an address in the ring always names
//!   the object it named when it was written;
//! * removes every hook when the agent says stop, or when the agent's
//!   heartbeat stops ([`abi::HEARTBEAT_TIMEOUT_MS`]: killed, crashed), then
//!   releases the objects and ends its thread. The library stays mapped (a
//!   Rust library is never unloaded); the next window reuses it.
//!
//! Nothing here links against libpython: the C API is found with
//! `dlsym(RTLD_DEFAULT, ...)`, which sees a shared libpython (pyenv) and an
//! executable that exports the API (Debian's static `python3.11`) alike.
//! Every entry point is `extern "C"` and never unwinds.

#![deny(missing_docs)]

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub mod abi;

use abi::*;

/// The control block the agent reads and writes (layout: [`abi::offset`]).
#[repr(C)]
pub struct Control {
    magic: AtomicU64,
    version: AtomicU32,
    state: AtomicU32,
    command: AtomicU32,
    flags: AtomicU32,
    agent_pid: AtomicU32,
    threads_hooked: AtomicU32,
    heartbeat: AtomicU64,
    write_pos: AtomicU64,
    read_pos: AtomicU64,
    dropped: AtomicU64,
    first_drop_ns: AtomicU64,
    last_drop_ns: AtomicU64,
    kept_objects: AtomicU64,
    ring_address: AtomicU64,
    start_ns: AtomicU64,
    stop_ns: AtomicU64,
    select_address: AtomicU64,
    threads_line_hooked: AtomicU32,
    reserved: AtomicU32,
    message: UnsafeCell<[u8; MESSAGE_SIZE]>,
}

// SAFETY: the message is written only by the watchdog before it publishes
// a state that tells the agent to read it; everything else is atomic.
unsafe impl Sync for Control {}

const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Control, magic) as u64 == offset::MAGIC);
    assert!(offset_of!(Control, version) as u64 == offset::VERSION);
    assert!(offset_of!(Control, state) as u64 == offset::STATE);
    assert!(offset_of!(Control, command) as u64 == offset::COMMAND);
    assert!(offset_of!(Control, flags) as u64 == offset::FLAGS);
    assert!(offset_of!(Control, agent_pid) as u64 == offset::AGENT_PID);
    assert!(offset_of!(Control, threads_hooked) as u64 == offset::THREADS_HOOKED);
    assert!(offset_of!(Control, heartbeat) as u64 == offset::HEARTBEAT);
    assert!(offset_of!(Control, write_pos) as u64 == offset::WRITE_POS);
    assert!(offset_of!(Control, read_pos) as u64 == offset::READ_POS);
    assert!(offset_of!(Control, dropped) as u64 == offset::DROPPED);
    assert!(offset_of!(Control, first_drop_ns) as u64 == offset::FIRST_DROP_NS);
    assert!(offset_of!(Control, last_drop_ns) as u64 == offset::LAST_DROP_NS);
    assert!(offset_of!(Control, kept_objects) as u64 == offset::KEPT_OBJECTS);
    assert!(offset_of!(Control, ring_address) as u64 == offset::RING_ADDRESS);
    assert!(offset_of!(Control, start_ns) as u64 == offset::START_NS);
    assert!(offset_of!(Control, stop_ns) as u64 == offset::STOP_NS);
    assert!(offset_of!(Control, select_address) as u64 == offset::SELECT_ADDRESS);
    assert!(offset_of!(Control, threads_line_hooked) as u64 == offset::THREADS_LINE_HOOKED);
    assert!(offset_of!(Control, reserved) as u64 == offset::RESERVED);
    assert!(offset_of!(Control, message) as u64 == offset::MESSAGE);
    assert!(std::mem::size_of::<Control>() as u64 == offset::SIZE);
    assert!(std::mem::size_of::<Event>() as u64 == EVENT_SIZE);
    assert!(offset_of!(Event, time_ns) == event::TIME_NS);
    assert!(offset_of!(Event, object) == event::OBJECT);
    assert!(offset_of!(Event, thread) == event::THREAD);
    assert!(offset_of!(Event, kind) == event::KIND);
    assert!(offset_of!(Event, offset) == event::OFFSET);
    assert!(offset_of!(Event, line) == event::LINE);
};

/// The control block, found by the agent through the library's dynamic
/// symbol table.
#[no_mangle]
pub static PYDEEP_TRACER_V2: Control = Control {
    magic: AtomicU64::new(MAGIC),
    version: AtomicU32::new(LAYOUT_VERSION),
    state: AtomicU32::new(STATE_IDLE),
    command: AtomicU32::new(0),
    flags: AtomicU32::new(0),
    agent_pid: AtomicU32::new(0),
    threads_hooked: AtomicU32::new(0),
    heartbeat: AtomicU64::new(0),
    write_pos: AtomicU64::new(0),
    read_pos: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    first_drop_ns: AtomicU64::new(0),
    last_drop_ns: AtomicU64::new(0),
    kept_objects: AtomicU64::new(0),
    ring_address: AtomicU64::new(0),
    start_ns: AtomicU64::new(0),
    stop_ns: AtomicU64::new(0),
    select_address: AtomicU64::new(0),
    threads_line_hooked: AtomicU32::new(0),
    reserved: AtomicU32::new(0),
    message: UnsafeCell::new([0; MESSAGE_SIZE]),
};

/// One event record (layout: [`abi::event`]).
#[repr(C)]
#[derive(Clone, Copy)]
struct Event {
    time_ns: u64,
    object: u64,
    thread: u32,
    kind: u32,
    offset: u32,
    line: u32,
}

struct Ring(UnsafeCell<[Event; CAPACITY as usize]>);
// SAFETY: written by the profile function, which runs with the GIL held
// (one writer at a time), read only by the agent from outside.
unsafe impl Sync for Ring {}

static RING: Ring = Ring(UnsafeCell::new(
    [Event {
        time_ns: 0,
        object: 0,
        thread: 0,
        kind: 0,
        offset: 0,
        line: 0,
    }; CAPACITY as usize],
));

/// Open-addressed set of the objects this window holds a reference to.
/// Touched only with the GIL held (the profile function, the watchdog).
struct Kept(UnsafeCell<[usize; KEPT_CAPACITY]>);
// SAFETY: see above: the GIL serialises every access.
unsafe impl Sync for Kept {}
static KEPT: Kept = Kept(UnsafeCell::new([0; KEPT_CAPACITY]));

/// The selection table of `--functions` (layout: [`abi::SELECT_CAPACITY`]):
/// written only by the agent, from outside; cleared at each start.
static SELECT: [AtomicU64; SELECT_CAPACITY] = [const { AtomicU64::new(0) }; SELECT_CAPACITY];

/// The agent's decision on `code`: [`SELECT_YES`], [`SELECT_NO`], or 0 if
/// it has not decided yet (the event is written; the agent filters it).
fn selection(code: usize) -> u64 {
    let code = code as u64;
    let mut i = select_slot(code);
    for _ in 0..SELECT_PROBES {
        let entry = SELECT[i].load(Ordering::Relaxed);
        if entry == 0 {
            return 0;
        }
        if entry & !0xf == code {
            return entry & 0xf;
        }
        i = (i + 1) & (SELECT_CAPACITY - 1);
    }
    0
}

/// True from a start until the watchdog has released everything.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Offset of `c_profilefunc` in `PyThreadState`, found by calibration.
static PROFILE_FIELD: AtomicUsize = AtomicUsize::new(0);
/// Offset of `c_tracefunc` in `PyThreadState`, found by calibration.
static TRACE_FIELD: AtomicUsize = AtomicUsize::new(0);

type TraceFunc = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int, *mut c_void) -> c_int;

type SetProfile = unsafe extern "C" fn(*mut c_void, Option<TraceFunc>, *mut c_void) -> c_int;
type PointerToPointer = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type GetPointer = unsafe extern "C" fn() -> *mut c_void;
type TakePointer = unsafe extern "C" fn(*mut c_void);
type GetInt = unsafe extern "C" fn() -> c_int;
type SetCurrent = unsafe extern "C" fn(Option<TraceFunc>, *mut c_void);
type FrameToInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type TakeInt = unsafe extern "C" fn(c_int);
type NoArguments = unsafe extern "C" fn();

/// The C API functions the tracer calls, found with `dlsym`.
struct Api {
    set_profile: SetProfile,
    /// `_PyEval_SetTrace` (any thread), not exported by 3.13.
    set_trace: Option<SetProfile>,
    /// `PyEval_SetTrace` (the current thread).
    set_trace_current: SetCurrent,
    /// `PyEval_SetTraceAllThreads` (3.12+): how 3.13 gets a trace function
    /// onto other threads.
    set_trace_all: Option<SetCurrent>,
    frame_get_line: FrameToInt,
    /// `PyFrame_GetLasti` (3.11+).
    frame_get_lasti: Option<FrameToInt>,
    frame_get_code: PointerToPointer,
    thread_state_get: GetPointer,
    inc_ref: TakePointer,
    dec_ref: TakePointer,
    gil_ensure: GetInt,
    gil_release: TakeInt,
    interpreter_main: GetPointer,
    thread_head: PointerToPointer,
    thread_next: PointerToPointer,
    is_finalizing: GetInt,
    err_clear: NoArguments,
}

static API: OnceLock<Api> = OnceLock::new();

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn clock_gettime(clock: c_int, time: *mut Timespec) -> c_int;
    fn syscall(number: i64, ...) -> i64;
    fn pthread_sigmask(how: c_int, set: *const u64, old: *mut u64) -> c_int;
}

const CLOCK_MONOTONIC: c_int = 1;
const SYS_GETTID: i64 = 186;
const SIG_BLOCK: c_int = 0;

fn now_ns() -> u64 {
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

thread_local! {
    static THREAD_ID: Cell<u32> = const { Cell::new(0) };
}

fn thread_id() -> u32 {
    THREAD_ID.with(|id| {
        if id.get() == 0 {
            // SAFETY: gettid takes no argument.
            id.set(unsafe { syscall(SYS_GETTID) } as u32);
        }
        id.get()
    })
}

/// Looks `name` (NUL-terminated) up in the process's global scope.
fn symbol(name: &[u8]) -> Option<*mut c_void> {
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT is the null handle.
    let address = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr().cast()) };
    (!address.is_null()).then_some(address)
}

fn resolve() -> Result<Api, &'static str> {
    macro_rules! function {
        ($type:ty; $($name:literal),+) => {{
            let found = None$(.or_else(|| symbol(concat!($name, "\0").as_bytes())))+;
            match found {
                // SAFETY: the symbol is the C API function of that name,
                // whose signature the field's type spells.
                Some(address) => unsafe { std::mem::transmute::<*mut c_void, $type>(address) },
                None => return Err(concat!("the interpreter exports no ", $($name, " "),+)),
            }
        }};
    }
    Ok(Api {
        set_profile: function!(SetProfile; "_PyEval_SetProfile"),
        // SAFETY: _PyEval_SetTrace(PyThreadState *, Py_tracefunc, PyObject *)
        // -> int and PyEval_SetTraceAllThreads(Py_tracefunc, PyObject *),
        // where exported.
        set_trace: symbol(b"_PyEval_SetTrace\0")
            .map(|address| unsafe { std::mem::transmute::<*mut c_void, SetProfile>(address) }),
        set_trace_current: function!(SetCurrent; "PyEval_SetTrace"),
        set_trace_all: symbol(b"PyEval_SetTraceAllThreads\0")
            .map(|address| unsafe { std::mem::transmute::<*mut c_void, SetCurrent>(address) }),
        frame_get_line: function!(FrameToInt; "PyFrame_GetLineNumber"),
        // SAFETY: PyFrame_GetLasti(PyFrameObject *) -> int, where exported.
        frame_get_lasti: symbol(b"PyFrame_GetLasti\0")
            .map(|address| unsafe { std::mem::transmute::<*mut c_void, FrameToInt>(address) }),
        frame_get_code: function!(PointerToPointer; "PyFrame_GetCode"),
        thread_state_get: function!(GetPointer; "PyThreadState_Get"),
        inc_ref: function!(TakePointer; "Py_IncRef"),
        dec_ref: function!(TakePointer; "Py_DecRef"),
        gil_ensure: function!(GetInt; "PyGILState_Ensure"),
        gil_release: function!(TakeInt; "PyGILState_Release"),
        interpreter_main: function!(GetPointer; "PyInterpreterState_Main"),
        thread_head: function!(PointerToPointer; "PyInterpreterState_ThreadHead"),
        thread_next: function!(PointerToPointer; "PyThreadState_Next"),
        is_finalizing: function!(GetInt; "Py_IsFinalizing", "_Py_IsFinalizing"),
        err_clear: function!(NoArguments; "PyErr_Clear"),
    })
}

/// Starts a trace window: resets the ring, resolves the C API and starts
/// the watchdog, which installs the hooks once it holds the GIL. Called by
/// the agent in an injected call, so it only starts a thread and returns.
///
/// Returns 0, -1 if a window is already open, -2 if the C API was not
/// found (the message says which function), -3 if no thread could start.
///
/// # Safety
/// Call from a thread where calling malloc and pthread_create is safe.
#[no_mangle]
pub unsafe extern "C" fn pydeep_tracer_v2_start(agent_pid: u32, flags: u32) -> c_int {
    if RUNNING.swap(true, Ordering::AcqRel) {
        return -1;
    }
    let c = &PYDEEP_TRACER_V2;
    c.command.store(COMMAND_RUN, Ordering::Relaxed);
    c.flags.store(flags, Ordering::Relaxed);
    c.agent_pid.store(agent_pid, Ordering::Relaxed);
    c.threads_hooked.store(0, Ordering::Relaxed);
    c.heartbeat.store(0, Ordering::Relaxed);
    c.write_pos.store(0, Ordering::Relaxed);
    c.read_pos.store(0, Ordering::Relaxed);
    c.dropped.store(0, Ordering::Relaxed);
    c.first_drop_ns.store(0, Ordering::Relaxed);
    c.last_drop_ns.store(0, Ordering::Relaxed);
    c.kept_objects.store(0, Ordering::Relaxed);
    c.ring_address.store(RING.0.get() as u64, Ordering::Relaxed);
    c.start_ns.store(0, Ordering::Relaxed);
    c.stop_ns.store(0, Ordering::Relaxed);
    c.threads_line_hooked.store(0, Ordering::Relaxed);
    for entry in SELECT.iter() {
        entry.store(0, Ordering::Relaxed);
    }
    c.select_address
        .store(SELECT.as_ptr() as u64, Ordering::Relaxed);
    set_message("");
    if API.get().is_none() {
        match resolve() {
            Ok(api) => {
                let _ = API.set(api);
            }
            Err(why) => {
                set_message(why);
                c.state.store(STATE_FAILED, Ordering::Release);
                RUNNING.store(false, Ordering::Release);
                return -2;
            }
        }
    }
    c.state.store(STATE_STARTING, Ordering::Release);
    let spawned = std::thread::Builder::new()
        .name("pydeep-tracer".into())
        .stack_size(256 * 1024)
        .spawn(watchdog);
    if spawned.is_err() {
        set_message("the tracer's watchdog thread could not start");
        c.state.store(STATE_FAILED, Ordering::Release);
        RUNNING.store(false, Ordering::Release);
        return -3;
    }
    0
}

fn set_message(text: &str) {
    // SAFETY: only the starter and the watchdog write it, one after the
    // other, before publishing a state.
    let message = unsafe { &mut *PYDEEP_TRACER_V2.message.get() };
    message.fill(0);
    let n = text.len().min(MESSAGE_SIZE - 1);
    message[..n].copy_from_slice(&text.as_bytes()[..n]);
}

/// The profile function: one event per Python call and return (and C call
/// with `--c-calls`). Runs with the GIL held, on the thread that calls.
unsafe extern "C" fn profile(
    _object: *mut c_void,
    frame: *mut c_void,
    what: c_int,
    arg: *mut c_void,
) -> c_int {
    // PyTrace_CALL 0, RETURN 3, C_CALL 4, C_EXCEPTION 5, C_RETURN 6.
    let kind = match what {
        0 => KIND_CALL,
        3 => KIND_RETURN,
        4 => KIND_C_CALL,
        5 | 6 => KIND_C_RETURN,
        _ => return 0,
    };
    let Some(api) = API.get() else { return 0 };
    let c = &PYDEEP_TRACER_V2;
    if c.command.load(Ordering::Relaxed) != COMMAND_RUN {
        // The window is over: this thread removes its own hook at once
        // (the watchdog removes the others' when it holds the GIL).
        if (api.set_profile)((api.thread_state_get)(), None, std::ptr::null_mut()) < 0 {
            (api.err_clear)();
        }
        return 0;
    }
    let c_function = kind >= KIND_C_CALL;
    if c_function && c.flags.load(Ordering::Relaxed) & FLAG_C_CALLS == 0 {
        return 0;
    }
    let time_ns = now_ns();
    let object = if c_function {
        arg
    } else {
        // A new reference.
        (api.frame_get_code)(frame)
    };
    if object.is_null() {
        return 0;
    }
    if !c_function && skipped(object) {
        return 0;
    }
    let kept = keep(api, object as usize, !c_function);
    if !kept {
        drop_event(time_ns);
        return 0;
    }
    let w = c.write_pos.load(Ordering::Relaxed);
    let r = c.read_pos.load(Ordering::Acquire);
    if w.wrapping_sub(r) >= CAPACITY {
        drop_event(time_ns);
        return 0;
    }
    let slot = (RING.0.get() as *mut Event).add((w & (CAPACITY - 1)) as usize);
    std::ptr::write_volatile(
        slot,
        Event {
            time_ns,
            object: object as u64,
            thread: thread_id(),
            kind,
            offset: 0,
            line: 0,
        },
    );
    c.write_pos.store(w + 1, Ordering::Release);
    0
}

/// With `--functions`: true if the agent said `code` (a new reference from
/// `PyFrame_GetCode`) is not selected; the reference is then given back.
unsafe fn skipped(code: *mut c_void) -> bool {
    if PYDEEP_TRACER_V2.flags.load(Ordering::Relaxed) & FLAG_SELECT == 0
        || selection(code as usize) != SELECT_NO
    {
        return false;
    }
    give_back_code_reference(code as usize);
    true
}

/// The trace function of `--lines`: one event per line event (a new
/// source line starts, or a loop jumps back to one). Calls, returns and
/// exceptions are the profile function's business; opcode events are not
/// asked for. Runs with the GIL held, on the thread that runs the line.
unsafe extern "C" fn trace(
    _object: *mut c_void,
    frame: *mut c_void,
    what: c_int,
    _arg: *mut c_void,
) -> c_int {
    // PyTrace_LINE 2.
    if what != 2 {
        return 0;
    }
    let Some(api) = API.get() else { return 0 };
    let c = &PYDEEP_TRACER_V2;
    if c.command.load(Ordering::Relaxed) != COMMAND_RUN {
        set_own_trace(api, None);
        return 0;
    }
    let time_ns = now_ns();
    let object = (api.frame_get_code)(frame);
    if object.is_null() {
        return 0;
    }
    if skipped(object) {
        return 0;
    }
    if !keep(api, object as usize, true) {
        drop_event(time_ns);
        return 0;
    }
    let line = (api.frame_get_line)(frame).max(0) as u32;
    let offset = match api.frame_get_lasti {
        Some(lasti) => lasti(frame).max(0) as u32,
        None => 0,
    };
    let w = c.write_pos.load(Ordering::Relaxed);
    let r = c.read_pos.load(Ordering::Acquire);
    if w.wrapping_sub(r) >= CAPACITY {
        drop_event(time_ns);
        return 0;
    }
    let slot = (RING.0.get() as *mut Event).add((w & (CAPACITY - 1)) as usize);
    std::ptr::write_volatile(
        slot,
        Event {
            time_ns,
            object: object as u64,
            thread: thread_id(),
            kind: KIND_LINE,
            offset,
            line,
        },
    );
    c.write_pos.store(w + 1, Ordering::Release);
    0
}

/// Sets (or removes) the calling thread's C trace function.
unsafe fn set_own_trace(api: &Api, function: Option<TraceFunc>) {
    match api.set_trace {
        Some(set) => {
            if set((api.thread_state_get)(), function, std::ptr::null_mut()) < 0 {
                (api.err_clear)();
            }
        }
        None => (api.set_trace_current)(function, std::ptr::null_mut()),
    }
}

fn trace_address() -> usize {
    trace as *const () as usize
}

fn profile_address() -> usize {
    profile as *const () as usize
}

fn drop_event(time_ns: u64) {
    let c = &PYDEEP_TRACER_V2;
    if c.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
        c.first_drop_ns.store(time_ns, Ordering::Relaxed);
    }
    c.last_drop_ns.store(time_ns, Ordering::Relaxed);
}

/// Gives back the new reference to a code object that `PyFrame_GetCode`
/// returned, without `Py_DecRef`'s call (4.5% of a traced target's time on
/// 3.12, measured with perf): the frame being reported holds its own strong
/// reference to its code object, so the count stays at 1 or more and nothing
/// is freed here. An immortal object (3.12+: the low 32 bits of `ob_refcnt`
/// negative, CPython's `_Py_IsImmortal` on 64-bit builds) is left alone, as
/// `Py_DECREF` does; before 3.12 no count comes near 2^31. Free-threaded
/// builds, whose counts are split, are refused before any hook is installed.
unsafe fn give_back_code_reference(object: usize) {
    let count = object as *mut i64;
    let value = std::ptr::read_volatile(count);
    if value as i32 >= 0 && value > 1 {
        std::ptr::write_volatile(count, value - 1);
    }
}

/// Records that the window holds a reference to `object`. `owned` says the
/// caller holds a new reference to a code object of a running frame (kept
/// the first time, given back after); otherwise the object is borrowed and
/// the first sighting takes one. False if the table is full: the event must
/// be dropped.
unsafe fn keep(api: &Api, object: usize, owned: bool) -> bool {
    let table = &mut *KEPT.0.get();
    let mask = KEPT_CAPACITY - 1;
    let mut i = (object >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48 & mask;
    for _ in 0..64 {
        let entry = table[i];
        if entry == object {
            if owned {
                give_back_code_reference(object);
            }
            return true;
        }
        if entry == 0 {
            table[i] = object;
            if !owned {
                (api.inc_ref)(object as *mut c_void);
            }
            PYDEEP_TRACER_V2
                .kept_objects
                .fetch_add(1, Ordering::Relaxed);
            return true;
        }
        i = (i + 1) & mask;
    }
    if owned {
        (api.dec_ref)(object as *mut c_void);
    }
    false
}

/// Releases every kept reference (with the GIL held).
unsafe fn release_kept(api: &Api) {
    let table = &mut *KEPT.0.get();
    for entry in table.iter_mut() {
        if *entry != 0 {
            (api.dec_ref)(*entry as *mut c_void);
            *entry = 0;
        }
    }
}

/// Runs `f` holding the GIL, unless the interpreter is finalizing (a
/// thread that asks for the GIL then is ended by CPython).
unsafe fn with_gil<T>(api: &Api, f: impl FnOnce() -> T) -> Option<T> {
    if (api.is_finalizing)() != 0 {
        return None;
    }
    let state = (api.gil_ensure)();
    let value = f();
    (api.gil_release)(state);
    Some(value)
}

/// Finds where `PyThreadState` keeps `c_profilefunc` by setting our own
/// thread's profile function and looking for it: the one field the tracer
/// must read in other threads (to refuse rather than replace another
/// profiler), without a table per CPython version.
unsafe fn calibrate(api: &Api) -> Result<usize, &'static str> {
    calibrate_field(api.set_profile, profile, api)
        .ok_or("c_profilefunc was not found in PyThreadState")
}

/// The same for `c_tracefunc` (`--lines`), with `_PyEval_SetTrace`.
unsafe fn calibrate_trace(api: &Api) -> Result<usize, &'static str> {
    if api.set_trace.is_none() && api.set_trace_all.is_none() {
        return Err("this interpreter exports neither _PyEval_SetTrace nor \
                    PyEval_SetTraceAllThreads: pydeep trace --lines cannot hook its threads");
    }
    let me = (api.thread_state_get)();
    set_own_trace(api, Some(trace));
    let words = me as *const usize;
    let found = (2..40).find(|&i| std::ptr::read_volatile(words.add(i)) == trace_address());
    set_own_trace(api, None);
    found
        .map(|i| i * 8)
        .ok_or("c_tracefunc was not found in PyThreadState")
}

unsafe fn calibrate_field(set: SetProfile, function: TraceFunc, api: &Api) -> Option<usize> {
    let me = (api.thread_state_get)();
    if set(me, Some(function), std::ptr::null_mut()) < 0 {
        (api.err_clear)();
        return None;
    }
    let words = me as *const usize;
    // c_profilefunc and c_tracefunc lie in the first 40 words of
    // PyThreadState on 3.9-3.13.
    let found = (2..40).find(|&i| std::ptr::read_volatile(words.add(i)) == function as usize);
    if set(me, None, std::ptr::null_mut()) < 0 {
        (api.err_clear)();
    }
    found.map(|i| i * 8)
}

/// Installs the hook on every thread of the main interpreter that has no
/// profile function. With `refuse_others`, a thread that has another
/// profile function makes the whole install fail (nothing is installed);
/// later rescans leave such a thread alone.
unsafe fn install(api: &Api, refuse_others: bool) -> Result<(u32, u32), String> {
    let field = PROFILE_FIELD.load(Ordering::Relaxed);
    let lines = PYDEEP_TRACER_V2.flags.load(Ordering::Relaxed) & FLAG_LINES != 0;
    let trace_field = TRACE_FIELD.load(Ordering::Relaxed);
    let me = (api.thread_state_get)();
    let head = (api.thread_head)((api.interpreter_main)());
    let mut targets = Vec::new();
    let mut line_targets = Vec::new();
    let mut foreign_trace = false;
    let mut thread = head;
    let mut seen = 0;
    let read = |thread: *mut c_void, field: usize| {
        std::ptr::read_volatile((thread as *const u8).add(field) as *const usize)
    };
    while !thread.is_null() && seen < 100_000 {
        seen += 1;
        if thread != me {
            let current = read(thread, field);
            if current == 0 {
                targets.push(thread);
            } else if current != profile_address() && refuse_others {
                return Err(
                    "a thread of the target already has a profile function (sys.setprofile, cProfile, \
                     yappi or another tracer); pydeep trace never replaces one: stop it first"
                        .into(),
                );
            }
            if lines {
                let current = read(thread, trace_field);
                if current == 0 {
                    line_targets.push(thread);
                } else if current != trace_address() {
                    foreign_trace = true;
                }
                if current != 0 && current != trace_address() && refuse_others {
                    return Err(
                        "a thread of the target already has a trace function (sys.settrace: a debugger, \
                         coverage, pdb); pydeep trace --lines never replaces one: stop it first, or \
                         trace without --lines"
                            .into(),
                    );
                }
            }
        }
        thread = (api.thread_next)(thread);
    }
    let mut hooked = 0;
    for thread in targets {
        if (api.set_profile)(thread, Some(profile), std::ptr::null_mut()) < 0 {
            (api.err_clear)();
            return Err("an audit hook refused sys.setprofile".into());
        }
        hooked += 1;
    }
    let mut line_hooked = 0;
    match (api.set_trace, api.set_trace_all) {
        (Some(set), _) => {
            for thread in line_targets {
                if set(thread, Some(trace), std::ptr::null_mut()) < 0 {
                    (api.err_clear)();
                    return Err("an audit hook refused sys.settrace".into());
                }
                line_hooked += 1;
            }
        }
        // 3.13: only "every thread" or "this thread". Every thread, when
        // no thread has a trace function of its own (which it would
        // replace: a thread that set one during the window keeps it, and
        // threads started after that get no line hook); then ours off the
        // watchdog's own thread.
        (None, Some(set_all)) if !line_targets.is_empty() && !foreign_trace => {
            set_all(Some(trace), std::ptr::null_mut());
            set_own_trace(api, None);
            line_hooked = line_targets.len() as u32;
        }
        _ => {}
    }
    Ok((hooked, line_hooked))
}

/// Removes our hook from every thread that has it.
unsafe fn uninstall(api: &Api) {
    let mut ours_left = false;
    let mut foreign_left = false;
    let field = PROFILE_FIELD.load(Ordering::Relaxed);
    let trace_field = TRACE_FIELD.load(Ordering::Relaxed);
    let mut thread = (api.thread_head)((api.interpreter_main)());
    let mut seen = 0;
    let read = |thread: *mut c_void, field: usize| {
        std::ptr::read_volatile((thread as *const u8).add(field) as *const usize)
    };
    while !thread.is_null() && seen < 100_000 {
        seen += 1;
        if read(thread, field) == profile_address()
            && (api.set_profile)(thread, None, std::ptr::null_mut()) < 0
        {
            (api.err_clear)();
        }
        if trace_field != 0 && read(thread, trace_field) == trace_address() {
            match api.set_trace {
                Some(set) => {
                    if set(thread, None, std::ptr::null_mut()) < 0 {
                        (api.err_clear)();
                    }
                }
                None => ours_left = true,
            }
        }
        if trace_field != 0 && !matches!(read(thread, trace_field), 0) {
            foreign_left |= read(thread, trace_field) != trace_address();
        }
        thread = (api.thread_next)(thread);
    }
    // 3.13: "every thread" again, unless a thread has a trace function of
    // its own, which that would remove: then each thread still holding
    // ours removes it at its next line event.
    if ours_left && !foreign_left {
        if let Some(set_all) = api.set_trace_all {
            set_all(None, std::ptr::null_mut());
        }
    }
}

fn agent_alive(last_beat: &mut (u64, u64)) -> bool {
    let beat = PYDEEP_TRACER_V2.heartbeat.load(Ordering::Relaxed);
    let now = now_ns();
    if beat != last_beat.0 {
        *last_beat = (beat, now);
    }
    now.saturating_sub(last_beat.1) < HEARTBEAT_TIMEOUT_MS * 1_000_000
}

fn watchdog() {
    // Signals are the target's business: they go to its other threads.
    let all = [u64::MAX; 16];
    // SAFETY: valid sigset buffers (glibc's sigset_t is 128 bytes).
    unsafe { pthread_sigmask(SIG_BLOCK, all.as_ptr(), std::ptr::null_mut()) };
    let c = &PYDEEP_TRACER_V2;
    let Some(api) = API.get() else { return };
    let mut last_beat = (0, now_ns());
    // SAFETY: every C API call below is made holding the GIL.
    let installed = unsafe {
        with_gil(api, || {
            if PROFILE_FIELD.load(Ordering::Relaxed) == 0 {
                match calibrate(api) {
                    Ok(field) => PROFILE_FIELD.store(field, Ordering::Relaxed),
                    Err(why) => return Err(why.to_string()),
                }
            }
            if TRACE_FIELD.load(Ordering::Relaxed) == 0
                && c.flags.load(Ordering::Relaxed) & FLAG_LINES != 0
            {
                match calibrate_trace(api) {
                    Ok(field) => TRACE_FIELD.store(field, Ordering::Relaxed),
                    Err(why) => return Err(why.to_string()),
                }
            }
            install(api, true)
        })
    };
    match installed {
        Some(Ok((hooked, line_hooked))) => {
            c.threads_hooked.store(hooked, Ordering::Relaxed);
            c.threads_line_hooked.store(line_hooked, Ordering::Relaxed);
            c.start_ns.store(now_ns(), Ordering::Relaxed);
            c.state.store(STATE_TRACING, Ordering::Release);
        }
        Some(Err(why)) => {
            set_message(&why);
            c.state.store(STATE_REFUSED, Ordering::Release);
            RUNNING.store(false, Ordering::Release);
            return;
        }
        None => {
            set_message("the interpreter is finalizing");
            c.state.store(STATE_FAILED, Ordering::Release);
            RUNNING.store(false, Ordering::Release);
            return;
        }
    }
    // Trace until told to stop or the agent is gone; threads started
    // meanwhile get the hook at the next rescan.
    let mut ticks = 0u32;
    while c.command.load(Ordering::Acquire) == COMMAND_RUN && agent_alive(&mut last_beat) {
        std::thread::sleep(Duration::from_millis(10));
        ticks += 1;
        if ticks.is_multiple_of(10) {
            // SAFETY: with the GIL held.
            let hooked = unsafe { with_gil(api, || install(api, false)) };
            if let Some(Ok((more, more_lines))) = hooked {
                c.threads_hooked.fetch_add(more, Ordering::Relaxed);
                c.threads_line_hooked
                    .fetch_add(more_lines, Ordering::Relaxed);
            }
        }
    }
    // Stop: threads that run remove their own hook at their next event; the
    // rest lose it here.
    c.command.store(COMMAND_STOP, Ordering::Release);
    // SAFETY: with the GIL held.
    unsafe { with_gil(api, || uninstall(api)) };
    c.stop_ns.store(now_ns(), Ordering::Relaxed);
    c.state.store(STATE_STOPPED, Ordering::Release);
    // The agent reads the code objects the ring names, then says release.
    while c.command.load(Ordering::Acquire) != COMMAND_RELEASE && agent_alive(&mut last_beat) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: with the GIL held.
    unsafe { with_gil(api, || release_kept(api)) };
    c.kept_objects.store(0, Ordering::Relaxed);
    c.state.store(STATE_RELEASED, Ordering::Release);
    RUNNING.store(false, Ordering::Release);
}
