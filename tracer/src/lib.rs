//! pydeep's in-target tracer.
//!
//! `pydeep trace` loads this library into a running CPython (see
//! notes/tracing.md for how and when) and calls [`start`] (exported as `pydeep_tracer_v5_start`).
//! The library then:
//!
//! * starts one thread of its own, the watchdog, which takes the GIL
//!   (`PyGILState_Ensure`) and hooks calls and returns (without
//!   `--c-calls`; [`calls_by`] decides): on 3.9, 3.10, 3.11, 3.12 and
//!   3.13 with PEP 523's eval-frame hook in front of the interpreter's eval
//!   function (`evalframe.rs`; on 3.11.0-3.11.3 with every `__getitem__`
//!   function given a version that keeps CPython from inlining its calls
//!   past the hook, `getitem.rs`; on 3.13 with local events of a
//!   `sys.monitoring` tool of its own for the `__init__` functions CPython
//!   enters past the hook; both over the class walk of `classes.rs`);
//!   where the hook cannot be used, on 3.12+ with global events of that
//!   tool (`monitoring.rs`: C callbacks, no frame object per call, other
//!   profilers left alone); where neither can be used, and for
//!   `--c-calls`, with a C-level profile function
//!   (`_PyEval_SetProfile`) on every thread of the
//!   main interpreter, after checking that none already has one
//!   (`sys.setprofile`, cProfile before 3.12, a tracer): those are refused,
//!   never replaced;
//! * with `--lines` (and `--opcodes` before 3.12) also a C trace function
//!   (`_PyEval_SetTrace`), refused the same way on a thread that has one;
//!   with `--opcodes` counts instructions in a table (`opcodes.rs`);
//! * writes one fixed-size record per call and return into a ring in its own
//!   memory ([`abi`]), stamped with the TSC when the agent asks for it
//!   (`rdtsc`; the agent converts), which the agent drains with `process_vm_readv`. No
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
//!
//! **No panic path, by construction.** The library runs inside someone
//! else's process, where a panic could only abort it. So it is `no_std`
//! (libc through [`sys`], no allocation, no formatting) and its panic
//! handler calls a function that does not exist: the library built by
//! `agent/build.rs` (optimised, `panic=abort`, linked with `-z defs`) links
//! only if the optimiser removed every panicking branch (each index bounded,
//! no overflow check, no `unwrap`). A change that leaves one fails the
//! agent's build with "undefined symbol: pydeep_tracer_has_a_panic_path".
//! (Cargo builds the crate as an rlib for its unit tests and clippy only.)
//! Failures are values: the watchdog turns each into a message in the
//! control block, removes what it installed and ends.

#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

pub mod abi;
mod classes;
mod evalframe;
mod getitem;
mod monitoring;
mod opcodes;
pub mod sys;

use abi::*;
use sys::{event_time, now_ns, thread_id};

/// Reached only through a panicking branch, and none may survive the
/// optimiser: the symbol below is defined nowhere, so the library does not
/// link if one does (see the crate's documentation).
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    extern "C" {
        fn pydeep_tracer_has_a_panic_path() -> !;
    }
    // SAFETY: never linked; the build fails first.
    unsafe { pydeep_tracer_has_a_panic_path() }
}

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
    clock: AtomicU32,
    counts_address: AtomicU64,
    counts_lost: AtomicU64,
    counted_codes: AtomicU32,
    monitoring_tool: AtomicU32,
    calls_by: AtomicU32,
    unwatched: AtomicU32,
    unwatched_codes: [AtomicU64; UNWATCHED_CODES_CAPACITY],
    message: UnsafeCell<[u8; MESSAGE_SIZE]>,
}

// SAFETY: the message is written only by the watchdog before it publishes
// a state that tells the agent to read it; everything else is atomic.
unsafe impl Sync for Control {}

const _: () = {
    use core::mem::offset_of;
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
    assert!(offset_of!(Control, clock) as u64 == offset::CLOCK);
    assert!(offset_of!(Control, counts_address) as u64 == offset::COUNTS_ADDRESS);
    assert!(offset_of!(Control, counts_lost) as u64 == offset::COUNTS_LOST);
    assert!(offset_of!(Control, counted_codes) as u64 == offset::COUNTED_CODES);
    assert!(offset_of!(Control, monitoring_tool) as u64 == offset::MONITORING_TOOL);
    assert!(offset_of!(Control, calls_by) as u64 == offset::CALLS_BY);
    assert!(offset_of!(Control, unwatched) as u64 == offset::UNWATCHED);
    assert!(offset_of!(Control, unwatched_codes) as u64 == offset::UNWATCHED_CODES);
    assert!(offset_of!(Control, message) as u64 == offset::MESSAGE);
    assert!(core::mem::size_of::<Control>() as u64 == offset::SIZE);
    assert!(core::mem::size_of::<Event>() as u64 == EVENT_SIZE);
    assert!(offset_of!(Event, time_ns) == event::TIME_NS);
    assert!(offset_of!(Event, object) == event::OBJECT);
    assert!(offset_of!(Event, thread) == event::THREAD);
    assert!(offset_of!(Event, kind) == event::KIND);
    assert!(offset_of!(Event, offset) == event::OFFSET);
    assert!(offset_of!(Event, line) == event::LINE);
};

/// The control block, found by the agent through the library's dynamic
/// symbol table (under [`abi::CONTROL_SYMBOL`]).
#[export_name = "PYDEEP_TRACER_V5"]
pub static CONTROL: Control = Control {
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
    clock: AtomicU32::new(0),
    counts_address: AtomicU64::new(0),
    counts_lost: AtomicU64::new(0),
    counted_codes: AtomicU32::new(0),
    monitoring_tool: AtomicU32::new(0),
    calls_by: AtomicU32::new(CALLS_BY_NONE),
    unwatched: AtomicU32::new(0),
    unwatched_codes: [const { AtomicU64::new(0) }; UNWATCHED_CODES_CAPACITY],
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
        let entry = SELECT[i & (SELECT_CAPACITY - 1)].load(Ordering::Relaxed);
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
type SetAttr = unsafe extern "C" fn(*mut c_void, *const core::ffi::c_char, *mut c_void) -> c_int;
type GetAttr = unsafe extern "C" fn(*mut c_void, *const core::ffi::c_char) -> *mut c_void;
type AsLong = unsafe extern "C" fn(*mut c_void) -> core::ffi::c_long;
type Import = unsafe extern "C" fn(*const core::ffi::c_char) -> *mut c_void;
/// `PyObject_CallMethod(object, name, format, ...)`.
type CallMethod = unsafe extern "C" fn(
    *mut c_void,
    *const core::ffi::c_char,
    *const core::ffi::c_char,
    ...
) -> *mut c_void;
/// `PyCFunction_NewEx(PyMethodDef *, self, module)`.
type NewCFunction = unsafe extern "C" fn(*const c_void, *mut c_void, *mut c_void) -> *mut c_void;

/// What `--opcodes` needs besides: attribute access on frames (3.9-3.11)
/// and `sys.monitoring` from C (3.12+). Resolved where exported; a window
/// with `--opcodes` fails with a message if one it needs is missing.
struct OpcodeApi {
    set_attr: SetAttr,
    get_attr: GetAttr,
    as_long: AsLong,
    import: Import,
    call_method: CallMethod,
    new_cfunction: NewCFunction,
    /// `Py_True`, `Py_False`, `Py_None` (`_Py_TrueStruct` ...).
    true_object: *mut c_void,
    false_object: *mut c_void,
    none_object: *mut c_void,
}

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
    /// `Py_GetRecursionLimit`.
    recursion_limit: GetInt,
    /// `Py_Version` (3.11+; 0 before): 3.12+ counts opcodes through
    /// `sys.monitoring`.
    version: u64,
    opcodes: Option<OpcodeApi>,
    /// PEP 523's eval-frame functions, where exported and the frame layout
    /// is known (3.9-3.13).
    eval_frame: Option<evalframe::EvalFrameApi>,
    /// 3.11.0-3.11.3: what the hook needs to see `__getitem__` calls
    /// (`getitem.rs`); None elsewhere or where not exported.
    function_versions: Option<getitem::VersionApi>,
    /// What the walk over classes needs (`classes.rs`).
    classes: Option<classes::ClassApi>,
}

/// How a window records Python calls and returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Calls {
    /// A C profile function on every thread (`_PyEval_SetProfile`).
    Profile,
    /// Global events of pydeep's own `sys.monitoring` tool (3.12+).
    Monitoring,
    /// PEP 523's eval-frame hook on the main interpreter.
    EvalFrame,
}

/// How this window records calls: [`choose_calls`]' answer, made once
/// when the hooks go in and kept in the control block's `calls_by` (which
/// also tells the agent).
pub(crate) fn calls_by(api: &Api) -> Calls {
    match CONTROL.calls_by.load(Ordering::Relaxed) {
        CALLS_BY_PROFILE => Calls::Profile,
        CALLS_BY_MONITORING => Calls::Monitoring,
        CALLS_BY_EVAL_FRAME => Calls::EvalFrame,
        _ => choose_calls(api),
    }
}

/// Makes this window's choice (the watchdog, holding the GIL, before any
/// hook goes in) and prepares it: on 3.11.0-3.11.3 the hook needs every
/// `__getitem__` function tagged (`getitem.rs`); where that fails (a
/// function of another layout, more classes or functions than the tables
/// hold), the window takes the profile function.
fn settle_calls(api: &Api) -> Calls {
    // SAFETY: on the watchdog's own thread state, with the GIL held.
    unsafe { evalframe::check_c_recursion(api) };
    // SAFETY: the same.
    unsafe { evalframe::check_native_thread_id(api) };
    let mut calls = choose_calls(api);
    // SAFETY: with the GIL held (the watchdog's install).
    if calls == Calls::EvalFrame
        && getitem::needed(api.version)
        && unsafe { getitem::start(api) }.is_err()
    {
        calls = Calls::Profile;
    }
    let word = match calls {
        Calls::Profile => CALLS_BY_PROFILE,
        Calls::Monitoring => CALLS_BY_MONITORING,
        Calls::EvalFrame => CALLS_BY_EVAL_FRAME,
    };
    CONTROL.calls_by.store(word, Ordering::Relaxed);
    calls
}

/// The recursion limit above which the eval-frame hook is not used, per
/// version: on 3.11+ CPython runs Python-to-Python calls without the C
/// stack, and the hook makes each one a C recursion again; a program that
/// raised its limit may mean to recurse that deep, and keeps the previous
/// mechanism above:
/// - 3.11: 544 bytes of C stack per call measured on 3.11.7 (as on 3.12
///   below; a 20,000-deep recursion, fine without the hook, crashed the
///   8 MB main thread with it; 15,000, ~8.2 MB, passed): 10,000, ~5.4 MB
///   at most;
/// - 3.12 (where the hook gives back the C recursion count its activation
///   costs, `evalframe::CRecursion`, so the stack is what bounds it): 576
///   bytes per call measured on 3.12.1 (the distance between the
///   activations' `_PyCFrame`s: 14,000 deep passed, 16,000 crashed the
///   8 MB main thread), and up to ~790 bytes per level for a recursion
///   through a C function that CPython counts and the hook gives back (a
///   Python function called by `map`, 3.12.1): 5,000, ~2.9 MB at most
///   (~4 MB through C), about a third of the main thread's stack;
/// - 3.13: each `_PyEval_EvalFrameDefault` activation counts 2 units
///   against the C recursion limit (`Py_C_RECURSION_LIMIT`, 10,000; not
///   given back), so under the hook RecursionError comes at ~5,000 deep
///   whatever the program's limit (3.13.0: 5,000 deep lived, 6,000 raised;
///   ~620 bytes of C stack per call, 3.1 MB at 5,000): 4,000.
///
/// The same holds for the program's threads: one that set
/// `threading.stack_size` below 1 KiB per level of its limit keeps the
/// previous mechanism too (`evalframe::thread_stacks_too_small`).
fn eval_frame_recursion_limit(version: u64) -> Option<c_int> {
    match version >> 16 {
        0x030B => Some(10_000),
        0x030C => Some(5_000),
        0x030D => Some(4_000),
        _ => None,
    }
}

/// The one place that decides how calls are recorded, per version (the
/// measurements behind it: notes/tracing.md, "Cost"). `--c-calls` needs
/// the profile function (C calls come from it) on every version. The
/// agent may force a mechanism for measurements and tests
/// (`PYDEEP_TRACE_CALLS`, the `FLAG_CALLS_BY_*` bits); one that is not
/// available falls back to this choice. Called with the GIL held.
fn choose_calls(api: &Api) -> Calls {
    let flags = CONTROL.flags.load(Ordering::Relaxed);
    let monitoring = api.version >= 0x030C_0000 && api.opcodes.is_some();
    // 3.11.0-3.11.3's hook needs the `__getitem__` versions, 3.13's
    // pydeep's sys.monitoring tool for `__init__`; both the class walk.
    let eval_frame = api.eval_frame.is_some()
        && (!getitem::needed(api.version)
            || (api.function_versions.is_some() && api.classes.is_some()))
        && (api.version >> 16 != 0x030D || (monitoring && api.classes.is_some()));
    if flags & FLAG_C_CALLS != 0 || flags & FLAG_CALLS_BY_PROFILE != 0 {
        return Calls::Profile;
    }
    if flags & FLAG_CALLS_BY_EVAL_FRAME != 0 && eval_frame {
        return Calls::EvalFrame;
    }
    if flags & FLAG_CALLS_BY_MONITORING != 0 && monitoring {
        return Calls::Monitoring;
    }
    // Asked only where the hook would be used (it may import `_thread`).
    // SAFETY: with the GIL held (the watchdog's install).
    let deep = || {
        eval_frame_recursion_limit(api.version).is_some_and(|most| unsafe {
            let limit = (api.recursion_limit)();
            limit > most || evalframe::thread_stacks_too_small(api, limit)
        })
    };
    if eval_frame
        && eval_frame_by_default(api.version)
        && evalframe::c_recursion_kept(api)
        && !deep()
    {
        Calls::EvalFrame
    } else if monitoring {
        Calls::Monitoring
    } else {
        Calls::Profile
    }
}

/// The versions whose calls go through the eval-frame hook by default
/// (`version`: `Py_Version`, 0 before 3.11: 3.9 and 3.10, the only ones
/// without it that have the hook). Measured cheaper than the profile
/// function (3.9-3.11) and `sys.monitoring` (3.12, 3.13) in
/// notes/tracing.md, "Cost". Where CPython enters some Python frames past
/// the hook, so that calls would be missed, pydeep closes the gap:
/// - 3.11.0-3.11.3: `BINARY_SUBSCR_GETITEM` (a `__getitem__` in Python)
///   inlines its call whatever the eval function (gh-104405, fixed in
///   3.11.4): every `__getitem__` function is given a version that keeps
///   that instruction from running (`getitem.rs`; [`settle_calls`] falls
///   back to the profile function if that cannot be done);
/// - 3.13: `CALL_ALLOC_AND_ENTER_INIT` (a class with a simple `__init__` in
///   Python) pushes the `__init__` frame without checking for one: pydeep's
///   `sys.monitoring` tool reports those functions' calls with local events
///   instead (`evalframe.rs`).
///
/// 3.12 uses it (1.7x against `sys.monitoring`'s 2.0-2.2x) only where the
/// hook can give CPython back the C recursion count each call through it
/// costs (`evalframe::check_c_recursion` found 3.12's counters at the
/// window's start; else `sys.monitoring`): without that, every call through
/// the hook counted twice against 3.12's C recursion limit (1,500 on
/// 3.12.1), and a program within its default limit of 1,000 raised
/// RecursionError at ~750 frames deep under the hook.
/// Forcing it (`PYDEEP_TRACE_CALLS=eval-frame`) is for measurements.
///
/// 3.14+ frames hold tagged references: untested, not used.
fn eval_frame_by_default(version: u64) -> bool {
    matches!(version >> 16, 0 | 0x030B | 0x030C | 0x030D)
}

/// The resolved C API: written once, by the first start that resolves
/// it, before [`API_READY`] is published (and before any hook exists);
/// read-only after.
struct ApiCell(UnsafeCell<MaybeUninit<Api>>);
// SAFETY: written once before API_READY (Release), read only after it
// (Acquire).
unsafe impl Sync for ApiCell {}
static API: ApiCell = ApiCell(UnsafeCell::new(MaybeUninit::uninit()));
static API_READY: AtomicBool = AtomicBool::new(false);

/// The resolved C API, once a start has resolved it.
fn api() -> Option<&'static Api> {
    if API_READY.load(Ordering::Acquire) {
        // SAFETY: initialised before API_READY was set, never written again.
        Some(unsafe { (*API.0.get()).assume_init_ref() })
    } else {
        None
    }
}

use sys::symbol;

fn resolve() -> Result<Api, &'static str> {
    macro_rules! function {
        ($type:ty; $($name:literal),+) => {{
            let found = None$(.or_else(|| symbol(concat!($name, "\0").as_bytes())))+;
            match found {
                // SAFETY: the symbol is the C API function of that name,
                // whose signature the field's type spells.
                Some(address) => unsafe { core::mem::transmute::<*mut c_void, $type>(address) },
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
            .map(|address| unsafe { core::mem::transmute::<*mut c_void, SetProfile>(address) }),
        set_trace_current: function!(SetCurrent; "PyEval_SetTrace"),
        set_trace_all: symbol(b"PyEval_SetTraceAllThreads\0")
            .map(|address| unsafe { core::mem::transmute::<*mut c_void, SetCurrent>(address) }),
        frame_get_line: function!(FrameToInt; "PyFrame_GetLineNumber"),
        // SAFETY: PyFrame_GetLasti(PyFrameObject *) -> int, where exported.
        frame_get_lasti: symbol(b"PyFrame_GetLasti\0")
            .map(|address| unsafe { core::mem::transmute::<*mut c_void, FrameToInt>(address) }),
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
        recursion_limit: function!(GetInt; "Py_GetRecursionLimit"),
        version: version_of(),
        opcodes: resolve_opcodes(),
        eval_frame: resolve_eval_frame(version_of()),
        function_versions: if getitem::needed(version_of()) {
            getitem::resolve()
        } else {
            None
        },
        classes: classes::resolve(),
    })
}

/// `Py_Version` (3.11+), 0 where not exported.
fn version_of() -> u64 {
    // SAFETY: `const unsigned long Py_Version`, where exported.
    symbol(b"Py_Version\0").map_or(0, |address| unsafe {
        core::ptr::read(address as *const u64)
    })
}

fn resolve_eval_frame(version: u64) -> Option<evalframe::EvalFrameApi> {
    // SAFETY: each symbol is the C API function (or object) of that name,
    // whose signature the field's type spells.
    unsafe {
        Some(evalframe::EvalFrameApi {
            get: core::mem::transmute::<*mut c_void, evalframe::GetEvalFrame>(symbol(
                b"_PyInterpreterState_GetEvalFrameFunc\0",
            )?),
            set: core::mem::transmute::<*mut c_void, evalframe::SetEvalFrame>(symbol(
                b"_PyInterpreterState_SetEvalFrameFunc\0",
            )?),
            default: core::mem::transmute::<*mut c_void, evalframe::EvalFrame>(symbol(
                b"_PyEval_EvalFrameDefault\0",
            )?),
            code_type: symbol(b"PyCode_Type\0")? as usize,
            layout: evalframe::layout(version)?,
        })
    }
}

fn resolve_opcodes() -> Option<OpcodeApi> {
    // SAFETY: each symbol is the C API function of that name, whose
    // signature the field's type spells (or the object of that name).
    unsafe {
        Some(OpcodeApi {
            set_attr: core::mem::transmute::<*mut c_void, SetAttr>(symbol(
                b"PyObject_SetAttrString\0",
            )?),
            get_attr: core::mem::transmute::<*mut c_void, GetAttr>(symbol(
                b"PyObject_GetAttrString\0",
            )?),
            as_long: core::mem::transmute::<*mut c_void, AsLong>(symbol(b"PyLong_AsLong\0")?),
            import: core::mem::transmute::<*mut c_void, Import>(symbol(
                b"PyImport_ImportModule\0",
            )?),
            call_method: core::mem::transmute::<*mut c_void, CallMethod>(symbol(
                b"PyObject_CallMethod\0",
            )?),
            new_cfunction: core::mem::transmute::<*mut c_void, NewCFunction>(symbol(
                b"PyCFunction_NewEx\0",
            )?),
            true_object: symbol(b"_Py_TrueStruct\0")?,
            false_object: symbol(b"_Py_FalseStruct\0")?,
            none_object: symbol(b"_Py_NoneStruct\0")?,
        })
    }
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
#[export_name = "pydeep_tracer_v5_start"]
pub unsafe extern "C" fn start(agent_pid: u32, flags: u32) -> c_int {
    if RUNNING.swap(true, Ordering::AcqRel) {
        return -1;
    }
    let c = &CONTROL;
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
    opcodes::reset(flags & FLAG_OPCODES != 0);
    evalframe::new_window();
    c.calls_by.store(CALLS_BY_NONE, Ordering::Relaxed);
    c.unwatched.store(0, Ordering::Relaxed);
    for slot in c.unwatched_codes.iter() {
        slot.store(0, Ordering::Relaxed);
    }
    sys::create_thread_id_key();
    let tsc = flags & FLAG_TSC != 0 && sys::tsc_enabled();
    sys::use_tsc(tsc);
    c.clock.store(
        if tsc { CLOCK_TSC } else { CLOCK_MONOTONIC_NS },
        Ordering::Relaxed,
    );
    if !API_READY.load(Ordering::Acquire) {
        match resolve() {
            Ok(api) => {
                // SAFETY: no reader before API_READY; RUNNING makes this
                // the only start.
                (*API.0.get()).write(api);
                API_READY.store(true, Ordering::Release);
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
    if !sys::spawn_detached(watchdog_main) {
        set_message("the tracer's watchdog thread could not start");
        c.state.store(STATE_FAILED, Ordering::Release);
        RUNNING.store(false, Ordering::Release);
        return -3;
    }
    0
}

/// Writes the control block's message: `text`, cut to fit, NUL-padded
/// (always at least one NUL at the end).
fn set_message(text: &str) {
    // SAFETY: only the starter and the watchdog write it, one after the
    // other, before publishing a state.
    let message = unsafe { &mut *CONTROL.message.get() };
    fill_message(message, text);
}

fn fill_message(message: &mut [u8; MESSAGE_SIZE], text: &str) {
    let mut bytes = text.bytes();
    for (i, byte) in message.iter_mut().enumerate() {
        *byte = if i + 1 < MESSAGE_SIZE {
            bytes.next().unwrap_or(0)
        } else {
            0
        };
    }
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
    let Some(api) = api() else { return 0 };
    let c = &CONTROL;
    if c.command.load(Ordering::Relaxed) != COMMAND_RUN {
        // The window is over: this thread removes its own hook at once
        // (the watchdog removes the others' when it holds the GIL).
        if (api.set_profile)((api.thread_state_get)(), None, core::ptr::null_mut()) < 0 {
            (api.err_clear)();
        }
        return 0;
    }
    let c_function = kind >= KIND_C_CALL;
    if c_function && c.flags.load(Ordering::Relaxed) & FLAG_C_CALLS == 0 {
        return 0;
    }
    if !c_function {
        // A new reference.
        let code = (api.frame_get_code)(frame);
        record_code(api, kind, code, true, &mut 0);
        return 0;
    }
    let time_ns = event_time();
    if arg.is_null() {
        return 0;
    }
    if !keep(api, arg as usize, false) {
        drop_event(time_ns);
        return 0;
    }
    write_event(time_ns, arg as u64, kind, 0, 0, &mut 0);
    0
}

/// Writes one call or return event of the Python code object `code` (from
/// the profile function, or the `sys.monitoring` callbacks on 3.12+).
/// `owned`: the caller holds a new reference to `code` (given back here);
/// otherwise it is borrowed.
///
/// True if the code object is kept (the event written or dropped for a
/// full ring); false if skipped (`--functions`) or the kept-object table is
/// full. `thread`: see [`write_event`].
#[inline(always)]
unsafe fn record_code(
    api: &Api,
    kind: u32,
    code: *mut c_void,
    owned: bool,
    thread: &mut u32,
) -> bool {
    let time_ns = event_time();
    if code.is_null() || skipped(code, owned) {
        return false;
    }
    if !keep(api, code as usize, owned) {
        drop_event(time_ns);
        return false;
    }
    write_event(time_ns, code as u64, kind, 0, 0, thread);
    true
}

/// Appends one event to the ring, or counts it dropped if the ring is full.
/// `thread`: the calling thread's id if the caller knows it, else 0 (then
/// read with [`thread_id`] if the event is written, and left there): the
/// eval-frame hook passes the same one to a call's event and its return's,
/// which run on one thread, and so reads it once per call.
#[inline(always)]
unsafe fn write_event(
    time_ns: u64,
    object: u64,
    kind: u32,
    offset: u32,
    line: u32,
    thread: &mut u32,
) {
    let c = &CONTROL;
    let w = c.write_pos.load(Ordering::Relaxed);
    let r = c.read_pos.load(Ordering::Acquire);
    if w.wrapping_sub(r) >= CAPACITY {
        drop_event(time_ns);
        return;
    }
    if *thread == 0 {
        *thread = thread_id();
    }
    let slot = (RING.0.get() as *mut Event).add((w & (CAPACITY - 1)) as usize);
    core::ptr::write_volatile(
        slot,
        Event {
            time_ns,
            object,
            thread: *thread,
            kind,
            offset,
            line,
        },
    );
    c.write_pos.store(w + 1, Ordering::Release);
}

/// With `--functions`: true if the agent said `code` is not selected; a
/// new reference (`owned`, from `PyFrame_GetCode`) is then given back.
unsafe fn skipped(code: *mut c_void, owned: bool) -> bool {
    if CONTROL.flags.load(Ordering::Relaxed) & FLAG_SELECT == 0
        || selection(code as usize) != SELECT_NO
    {
        return false;
    }
    if owned {
        give_back_code_reference(code as usize);
    }
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
    // PyTrace_CALL 0, PyTrace_LINE 2, PyTrace_OPCODE 7.
    if what != 0 && what != 2 && what != 7 {
        return 0;
    }
    let Some(api) = api() else { return 0 };
    let c = &CONTROL;
    if c.command.load(Ordering::Relaxed) != COMMAND_RUN {
        set_own_trace(api, None);
        return 0;
    }
    let flags = c.flags.load(Ordering::Relaxed);
    if what != 2 {
        // Opcodes on 3.9-3.11 (the trace function is installed for them
        // only there).
        let by_frames = flags & FLAG_OPCODES != 0 && !opcodes::by_monitoring(api);
        if let (true, Some(ops)) = (by_frames, &api.opcodes) {
            if what == 0 {
                opcodes::on_call(api, ops, frame);
            } else {
                opcodes::on_opcode(api, ops, frame);
            }
        }
        return 0;
    }
    if flags & FLAG_LINES == 0 {
        return 0;
    }
    let time_ns = event_time();
    let object = (api.frame_get_code)(frame);
    if object.is_null() {
        return 0;
    }
    if skipped(object, true) {
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
    write_event(time_ns, object as u64, KIND_LINE, offset, line, &mut 0);
    0
}

/// Sets (or removes) the calling thread's C trace function.
unsafe fn set_own_trace(api: &Api, function: Option<TraceFunc>) {
    match api.set_trace {
        Some(set) => {
            if set((api.thread_state_get)(), function, core::ptr::null_mut()) < 0 {
                (api.err_clear)();
            }
        }
        None => (api.set_trace_current)(function, core::ptr::null_mut()),
    }
}

fn trace_address() -> usize {
    trace as *const () as usize
}

fn profile_address() -> usize {
    profile as *const () as usize
}

/// Counts one dropped event, at its time in the events' clock (the agent
/// converts the first and last drop's like the events').
fn drop_event(time_ns: u64) {
    let c = &CONTROL;
    // Every caller holds the GIL (one writer at a time; free-threaded
    // builds are refused): a load and a store, not a locked add, which
    // cost the target ~20 cycles per dropped event.
    let dropped = c.dropped.load(Ordering::Relaxed);
    c.dropped.store(dropped.wrapping_add(1), Ordering::Relaxed);
    if dropped == 0 {
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
    let value = core::ptr::read_volatile(count);
    if value as i32 >= 0 && value > 1 {
        core::ptr::write_volatile(count, value - 1);
    }
}

/// Records that the window holds a reference to `object`. `owned` says the
/// caller holds a new reference to a code object of a running frame (kept
/// the first time, given back after); otherwise the object is borrowed and
/// the first sighting takes one. False if the table is full: the event must
/// be dropped.
#[inline(always)]
unsafe fn keep(api: &Api, object: usize, owned: bool) -> bool {
    // The common case inline: the object is already kept, in its first
    // slot (the table holds at most a few thousand of its 65,536 entries).
    let table = &*KEPT.0.get();
    let i = kept_slot(object);
    if table[i] == object {
        if owned {
            give_back_code_reference(object);
        }
        return true;
    }
    keep_probe(api, object, owned, i)
}

/// The first slot of `object` in the kept-object table.
#[inline(always)]
fn kept_slot(object: usize) -> usize {
    (object >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48 & (KEPT_CAPACITY - 1)
}

/// [`keep`] past the first slot: probes from slot `i` on.
#[inline(never)]
unsafe fn keep_probe(api: &Api, object: usize, owned: bool, first: usize) -> bool {
    let table = &mut *KEPT.0.get();
    let mask = KEPT_CAPACITY - 1;
    let mut i = first & mask;
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
            CONTROL.kept_objects.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        i = (i + 1) & mask;
    }
    if owned {
        (api.dec_ref)(object as *mut c_void);
    }
    false
}

/// Counts one function the window's end found unwatched (its code object
/// `code`; null if it has none) in the control block, and names it there
/// (`offset::UNWATCHED_CODES`) if there is room, kept alive until the
/// release like the code objects events name. A code object already named
/// is not counted again: two classes holding one function are one. With
/// the GIL held (the watchdog, as the window ends: `evalframe::stop`).
pub(crate) unsafe fn note_unwatched(api: &Api, code: *mut c_void) {
    let counted = name_unwatched(&CONTROL.unwatched_codes, code as u64, || {
        // SAFETY: with the GIL held; `code` is a live code object its
        // function holds.
        unsafe { keep(api, code as usize, false) }
    });
    if counted {
        let c = &CONTROL.unwatched;
        c.store(
            c.load(Ordering::Relaxed).saturating_add(1),
            Ordering::Relaxed,
        );
    }
}

/// [`note_unwatched`]'s table: puts `code` in the first free slot of
/// `slots` if it is in none and `keep` keeps it. False if `code` was there
/// already (not to be counted again); true otherwise, named or not (a null
/// `code`, a full table, a refused `keep`).
fn name_unwatched(slots: &[AtomicU64], code: u64, keep: impl FnOnce() -> bool) -> bool {
    if code == 0 {
        return true;
    }
    for slot in slots {
        let entry = slot.load(Ordering::Relaxed);
        if entry == code {
            return false;
        }
        if entry == 0 {
            if keep() {
                slot.store(code, Ordering::Relaxed);
            }
            return true;
        }
    }
    true
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
    let found = (2..40).find(|&i| core::ptr::read_volatile(words.add(i)) == trace_address());
    set_own_trace(api, None);
    found
        .map(|i| i * 8)
        .ok_or("c_tracefunc was not found in PyThreadState")
}

unsafe fn calibrate_field(set: SetProfile, function: TraceFunc, api: &Api) -> Option<usize> {
    let me = (api.thread_state_get)();
    if set(me, Some(function), core::ptr::null_mut()) < 0 {
        (api.err_clear)();
        return None;
    }
    let words = me as *const usize;
    // c_profilefunc and c_tracefunc lie in the first 40 words of
    // PyThreadState on 3.9-3.13.
    let found = (2..40).find(|&i| core::ptr::read_volatile(words.add(i)) == function as usize);
    if set(me, None, core::ptr::null_mut()) < 0 {
        (api.err_clear)();
    }
    found.map(|i| i * 8)
}

/// True if the window needs the C trace function on every thread: for
/// `--lines`, and for `--opcodes` before 3.12 (3.12+ counts opcodes with
/// `sys.monitoring`).
fn wants_trace_function(api: &Api) -> bool {
    let flags = CONTROL.flags.load(Ordering::Relaxed);
    flags & FLAG_LINES != 0 || (flags & FLAG_OPCODES != 0 && !opcodes::by_monitoring(api))
}

/// Most thread states walked in one pass (a guard against a corrupt list).
const MAX_THREADS: u32 = 100_000;

/// Reads the word at `field` bytes into the thread state `thread`.
unsafe fn field_of(thread: *mut c_void, field: usize) -> usize {
    core::ptr::read_volatile((thread as *const u8).add(field) as *const usize)
}

/// Installs the hook on every thread of the main interpreter that has no
/// profile function. With `refuse_others`, a thread that has another
/// profile function makes the whole install fail (nothing is installed);
/// later rescans leave such a thread alone. An error after some threads
/// got the hook leaves them with it: the caller removes it ([`uninstall`]).
unsafe fn install(api: &Api, refuse_others: bool) -> Result<(u32, u32), &'static str> {
    // The eval-frame hook and sys.monitoring (3.12+): calls come from a
    // hook global to the interpreter; no profile function is read, refused
    // or installed.
    let by_monitoring = calls_by(api) != Calls::Profile;
    let field = PROFILE_FIELD.load(Ordering::Relaxed);
    let lines = wants_trace_function(api);
    let trace_field = TRACE_FIELD.load(Ordering::Relaxed);
    let me = (api.thread_state_get)();
    let head = (api.thread_head)((api.interpreter_main)());
    // First pass: refuse before touching anything; count the threads
    // without a trace function (3.13 hooks them all at once).
    let mut line_targets = 0u32;
    let mut foreign_trace = false;
    let mut thread = head;
    let mut seen = 0;
    while !thread.is_null() && seen < MAX_THREADS {
        seen += 1;
        if thread != me {
            let current = if by_monitoring {
                0
            } else {
                field_of(thread, field)
            };
            if current != 0 && current != profile_address() && refuse_others {
                return Err(
                    "a thread of the target already has a profile function (sys.setprofile, cProfile, \
                     yappi or another tracer); pydeep trace never replaces one: stop it first",
                );
            }
            if lines {
                let current = field_of(thread, trace_field);
                if current == 0 {
                    line_targets += 1;
                } else if current != trace_address() {
                    foreign_trace = true;
                    if refuse_others {
                        return Err(
                            "a thread of the target already has a trace function (sys.settrace: a debugger, \
                             coverage, pdb); pydeep trace --lines (and --opcodes before 3.12) never replaces \
                             one: stop it first, or trace without them",
                        );
                    }
                }
            }
        }
        thread = (api.thread_next)(thread);
    }
    // Second pass: hook every thread still without a hook (the list may
    // have gained a thread meanwhile: a new one has none).
    let mut hooked = 0u32;
    let mut line_hooked = 0u32;
    let mut thread = head;
    let mut seen = 0;
    while !thread.is_null() && seen < MAX_THREADS {
        seen += 1;
        if thread != me {
            if by_monitoring {
                // Every thread has the events: all are counted, at the
                // window's start and at each rescan (whose count replaces
                // the last: the agent says when a new thread is covered).
                hooked += 1;
            } else if field_of(thread, field) == 0 {
                if (api.set_profile)(thread, Some(profile), core::ptr::null_mut()) < 0 {
                    (api.err_clear)();
                    return Err("an audit hook refused sys.setprofile");
                }
                hooked += 1;
            }
            if let (true, Some(set)) = (lines, api.set_trace) {
                if field_of(thread, trace_field) == 0 {
                    if set(thread, Some(trace), core::ptr::null_mut()) < 0 {
                        (api.err_clear)();
                        return Err("an audit hook refused sys.settrace");
                    }
                    line_hooked += 1;
                }
            }
        }
        thread = (api.thread_next)(thread);
    }
    // 3.13: only "every thread" or "this thread". Every thread, when no
    // thread has a trace function of its own (which it would replace: a
    // thread that set one during the window keeps it, and threads started
    // after that get no line hook); then ours off the watchdog's own thread.
    if let (true, None, Some(set_all)) = (lines, api.set_trace, api.set_trace_all) {
        if line_targets > 0 && !foreign_trace {
            set_all(Some(trace), core::ptr::null_mut());
            set_own_trace(api, None);
            line_hooked = line_targets;
        }
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
    let read = |thread, field| field_of(thread, field);
    while !thread.is_null() && seen < MAX_THREADS {
        seen += 1;
        if field != 0
            && read(thread, field) == profile_address()
            && (api.set_profile)(thread, None, core::ptr::null_mut()) < 0
        {
            (api.err_clear)();
        }
        if trace_field != 0 && read(thread, trace_field) == trace_address() {
            match api.set_trace {
                Some(set) => {
                    if set(thread, None, core::ptr::null_mut()) < 0 {
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
            set_all(None, core::ptr::null_mut());
        }
    }
}

fn agent_alive(last_beat: &mut (u64, u64)) -> bool {
    let beat = CONTROL.heartbeat.load(Ordering::Relaxed);
    let now = now_ns();
    if beat != last_beat.0 {
        *last_beat = (beat, now);
    }
    now.saturating_sub(last_beat.1) < HEARTBEAT_TIMEOUT_MS * 1_000_000
}

/// The watchdog thread's entry (see [`sys::spawn_detached`]).
extern "C" fn watchdog_main(_: *mut c_void) -> *mut c_void {
    sys::name_this_thread(b"pydeep-tracer\0");
    watchdog();
    core::ptr::null_mut()
}

/// Ends a window that could not start: the state and message say why.
fn fail(state: u32, why: &str) {
    set_message(why);
    CONTROL.state.store(state, Ordering::Release);
    RUNNING.store(false, Ordering::Release);
}

/// The watchdog: installs the hooks holding the GIL, rescans every 100 ms
/// for new threads, and at the end removes the hooks and releases the kept
/// objects. Every call into the interpreter holds the GIL through
/// [`with_gil`], which gives it back (and the thread state it made) before
/// returning. CPython may still end this thread inside `PyGILState_Ensure`
/// when the interpreter starts finalizing meanwhile (`pthread_exit`): the
/// process is exiting then, and nothing here needs to run.
fn watchdog() {
    let c = &CONTROL;
    let Some(api) = api() else {
        fail(STATE_FAILED, "the tracer's C API is not resolved");
        return;
    };
    let mut last_beat = (0, now_ns());
    // SAFETY: every C API call below is made holding the GIL.
    let installed = unsafe {
        with_gil(api, || {
            let calls = settle_calls(api);
            let by_monitoring = calls == Calls::Monitoring;
            if PROFILE_FIELD.load(Ordering::Relaxed) == 0 && calls == Calls::Profile {
                match calibrate(api) {
                    Ok(field) => PROFILE_FIELD.store(field, Ordering::Relaxed),
                    Err(why) => return Err((STATE_FAILED, why)),
                }
            }
            if TRACE_FIELD.load(Ordering::Relaxed) == 0 && wants_trace_function(api) {
                match calibrate_trace(api) {
                    Ok(field) => TRACE_FIELD.store(field, Ordering::Relaxed),
                    Err(why) => return Err((STATE_FAILED, why)),
                }
            }
            let opcodes_asked = c.flags.load(Ordering::Relaxed) & FLAG_OPCODES != 0;
            if opcodes_asked && api.opcodes.is_none() {
                return Err((
                    STATE_FAILED,
                    "this interpreter does not export what --opcodes needs \
                     (PyObject_SetAttrString, PyCFunction_NewEx, ...)",
                ));
            }
            let hooked = install(api, true).map_err(|why| (STATE_REFUSED, why));
            let hooked = match (hooked, &api.opcodes) {
                (Ok(hooked), Some(ops)) if by_monitoring => monitoring::start_calls(api, ops)
                    .map(|()| hooked)
                    .map_err(|why| (STATE_FAILED, why)),
                (hooked, _) => hooked,
            };
            let hooked = match hooked {
                Ok(hooked) if calls == Calls::EvalFrame => evalframe::start_inits(api)
                    .and_then(|()| evalframe::start(api))
                    .map(|()| hooked)
                    .map_err(|why| (STATE_FAILED, why)),
                hooked => hooked,
            };
            let hooked = match (hooked, &api.opcodes) {
                (Ok(hooked), Some(ops)) if opcodes_asked && opcodes::by_monitoring(api) => {
                    opcodes::start_monitoring(api, ops)
                        .map(|()| hooked)
                        .map_err(|why| (STATE_FAILED, why))
                }
                (hooked, _) => hooked,
            };
            hooked.inspect_err(|_| {
                // Whatever went in before the failure comes out again.
                uninstall(api);
                evalframe::stop(api);
                opcodes::stop(api);
                monitoring::close(api);
                release_kept(api);
            })
        })
    };
    match installed {
        Some(Ok((hooked, line_hooked))) => {
            c.threads_hooked.store(hooked, Ordering::Relaxed);
            c.threads_line_hooked.store(line_hooked, Ordering::Relaxed);
            c.start_ns.store(now_ns(), Ordering::Relaxed);
            c.state.store(STATE_TRACING, Ordering::Release);
        }
        Some(Err((state, why))) => return fail(state, why),
        None => return fail(STATE_FAILED, "the interpreter is finalizing"),
    }
    // Trace until told to stop or the agent is gone; threads started
    // meanwhile get the hook at the next rescan.
    let mut ticks = 0u32;
    while c.command.load(Ordering::Acquire) == COMMAND_RUN && agent_alive(&mut last_beat) {
        sys::sleep_ms(10);
        ticks = ticks.wrapping_add(1);
        // 3.12+ --opcodes: local INSTRUCTION events for each code object
        // the agent selected since the last tick.
        let mut selected = [0usize; 64];
        let found = opcodes::newly_selected(&mut selected);
        if let (true, Some(ops), Some(codes)) = (found > 0, &api.opcodes, selected.get(..found)) {
            // SAFETY: with the GIL held.
            unsafe { with_gil(api, || opcodes::instrument(api, ops, codes)) };
        }
        if ticks.is_multiple_of(10) {
            // SAFETY: with the GIL held.
            let hooked = unsafe { with_gil(api, || install(api, false)) };
            if let Some(Ok((more, more_lines))) = hooked {
                if calls_by(api) != Calls::Profile {
                    // A count of every thread (install): it replaces.
                    c.threads_hooked.store(more, Ordering::Relaxed);
                } else {
                    c.threads_hooked.fetch_add(more, Ordering::Relaxed);
                }
                c.threads_line_hooked
                    .fetch_add(more_lines, Ordering::Relaxed);
            }
        }
    }
    // Stop: threads that run remove their own hook at their next event; the
    // rest lose it here.
    c.command.store(COMMAND_STOP, Ordering::Release);
    // SAFETY: with the GIL held.
    unsafe {
        with_gil(api, || {
            uninstall(api);
            evalframe::stop(api);
            opcodes::stop(api);
            monitoring::close(api);
        })
    };
    c.stop_ns.store(now_ns(), Ordering::Relaxed);
    c.state.store(STATE_STOPPED, Ordering::Release);
    // The agent reads the code objects the ring names, then says release.
    while c.command.load(Ordering::Acquire) != COMMAND_RELEASE && agent_alive(&mut last_beat) {
        sys::sleep_ms(5);
    }
    // SAFETY: with the GIL held.
    unsafe { with_gil(api, || release_kept(api)) };
    c.kept_objects.store(0, Ordering::Relaxed);
    c.state.store(STATE_RELEASED, Ordering::Release);
    RUNNING.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_cut_to_fit_and_always_ends_with_a_nul() {
        let mut message = [b'x'; MESSAGE_SIZE];
        fill_message(&mut message, "short");
        assert_eq!(&message[..5], b"short");
        assert!(message[5..].iter().all(|&b| b == 0));
        let long = "y".repeat(2 * MESSAGE_SIZE);
        fill_message(&mut message, &long);
        assert!(message[..MESSAGE_SIZE - 1].iter().all(|&b| b == b'y'));
        assert_eq!(message[MESSAGE_SIZE - 1], 0);
    }

    #[test]
    fn unwatched_functions_are_named_once_each_up_to_the_tables_size() {
        let slots = [const { AtomicU64::new(0) }; 3];
        let mut kept = 0;
        let mut note = |code: u64, keeps: bool| {
            name_unwatched(&slots, code, || {
                kept += usize::from(keeps);
                keeps
            })
        };
        assert!(note(0x1000, true));
        assert!(
            !note(0x1000, true),
            "a function seen again is not counted again"
        );
        assert!(
            note(0, true),
            "a function without a code object is counted, not named"
        );
        assert!(
            note(0x2000, false),
            "one the window could not keep is counted"
        );
        assert!(note(0x3000, true));
        assert!(note(0x4000, true));
        assert!(note(0x5000, true), "past the table: counted, not named");
        assert!(
            note(0x5000, true),
            "and counted each time, no longer told apart"
        );
        let named: Vec<u64> = slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        assert_eq!(named, [0x1000, 0x3000, 0x4000]);
        assert_eq!(kept, 3);
    }

    #[test]
    fn the_selection_table_probes_past_its_end_without_leaving_it() {
        // An address whose first slot is the last one: the probe wraps.
        let code = (0..1u64 << 20)
            .map(|i| i << 4)
            .find(|&a| select_slot(a) == SELECT_CAPACITY - 1)
            .expect("an address for the last slot");
        let other = (0..1u64 << 20)
            .map(|i| (i << 4) + (1 << 40))
            .find(|&a| select_slot(a) == SELECT_CAPACITY - 1)
            .expect("another one");
        SELECT[SELECT_CAPACITY - 1].store(other | SELECT_NO, Ordering::Relaxed);
        SELECT[0].store(code | SELECT_YES, Ordering::Relaxed);
        assert_eq!(selection(code as usize), SELECT_YES);
        assert_eq!(selection(other as usize), SELECT_NO);
        SELECT[SELECT_CAPACITY - 1].store(0, Ordering::Relaxed);
        SELECT[0].store(0, Ordering::Relaxed);
    }
}
