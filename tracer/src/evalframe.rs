//! Calls and returns through PEP 523's eval-frame hook
//! (`_PyInterpreterState_SetEvalFrameFunc`), where [`crate::calls_by`]
//! chooses it (see notes/tracing.md, "Cost").
//!
//! CPython calls the interpreter's eval function for every frame it
//! evaluates from C: a call from C, a generator or coroutine resumed (or
//! thrown into), and, once a non-default function is installed, every
//! Python-to-Python call too: 3.11+ stop inlining such calls when
//! `interp->eval_frame` is set (the generic CALL checks it, the CALL_PY_*,
//! BINARY_SUBSCR_GETITEM, FOR_ITER_GEN, SEND_GEN, LOAD_ATTR_PROPERTY ...
//! specialisations deoptimise on it; BINARY_SUBSCR_GETITEM only since
//! 3.11.4, gh-104405: before, `getitem.rs` makes it deoptimise), and
//! 3.9/3.10 never inline. So [`hook`] sees each
//! frame entry once: it records a call event (the code object read from the
//! frame), calls the eval function that was installed before (CPython's
//! default, or another tool's: chained, never dropped), and records a return
//! event when it comes back, whether the frame returned, yielded or raised:
//! what a profile function and pydeep's `sys.monitoring` tool report.
//!
//! 3.13's CALL_ALLOC_AND_ENTER_INIT (calling a class whose `__new__` is
//! object's and whose `__init__` is a simple Python function) pushes the
//! `__init__` frame without looking at `interp->eval_frame`. There the
//! simple `__init__` code objects get local PY_START, PY_RESUME, PY_RETURN
//! and PY_YIELD events of pydeep's `sys.monitoring` tool (`monitoring.rs`;
//! PY_UNWIND, which cannot be local, is global and filtered to them), which
//! fire however the frame was entered, and the hook leaves those code
//! objects to the tool. They are found by a walk of every class at the
//! window's start (`classes.rs`), at a class body's return through the
//! hook (its namespace's `__init__`), and at an `__init__`'s first call
//! through the hook (any simple code object named `__init__`).
//!
//! Frames entered before the hook went in return without passing through
//! it: no return event (the profile path reports one, which the viewer
//! ignores: a return without its call). Frames still inside the hook when
//! the window ends come back through it later; the library is never
//! unloaded, and such a return writes nothing (the window's command or
//! generation has changed), so it touches neither the ring nor the
//! kept-object table of a later window.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::abi::*;
use crate::{classes, monitoring, Api, CONTROL};

/// `_PyFrameEvalFunction`: `(PyThreadState *, frame, int throwflag)`; the
/// frame is a `PyFrameObject *` before 3.11, a `_PyInterpreterFrame *`
/// since.
pub(crate) type EvalFrame = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> *mut c_void;
/// `_PyInterpreterState_GetEvalFrameFunc(interp)` (never NULL: the default
/// when none is set).
pub(crate) type GetEvalFrame = unsafe extern "C" fn(*mut c_void) -> Option<EvalFrame>;
/// `_PyInterpreterState_SetEvalFrameFunc(interp, function)`.
pub(crate) type SetEvalFrame = unsafe extern "C" fn(*mut c_void, EvalFrame);

/// What the hook needs of the interpreter, resolved with `dlsym`.
pub(crate) struct EvalFrameApi {
    pub(crate) get: GetEvalFrame,
    pub(crate) set: SetEvalFrame,
    /// `_PyEval_EvalFrameDefault`: called if no previous function is known
    /// (never, once installed; a guard only).
    pub(crate) default: EvalFrame,
    /// `&PyCode_Type`: the word read from the frame is used only if it
    /// points at a code object.
    pub(crate) code_type: usize,
    /// Where the hook finds what it reads in the frame.
    pub(crate) layout: Layout,
}

/// Offsets the hook reads (the same as `cpython/src/layouts.rs`).
pub(crate) struct Layout {
    /// The code object in the frame the hook receives: `f_code` of
    /// `PyFrameObject` (3.9, 3.10: 32) and of `_PyInterpreterFrame` (3.11:
    /// 32; 3.12: 0; 3.13: `f_executable`, 0).
    code: usize,
    /// 3.11+: `_PyInterpreterFrame.owner` (one byte: 3.11 69, 3.12+ 70) and
    /// `PyCodeObject.co_flags` (48). A generator's, coroutine's or async
    /// generator's function, when called, is evaluated once up to its
    /// RETURN_GENERATOR instruction (owner: the thread) to make the
    /// generator object: not a call a profile function or `sys.monitoring`
    /// reports (they report each resumption, owner: the generator), so the
    /// hook skips it. 3.9/3.10 make the generator without evaluating.
    owner_and_flags: Option<(usize, usize)>,
    /// 3.12: where `PyThreadState` counts C recursion, see [`CRecursion`].
    c_recursion: Option<CRecursion>,
    /// 3.13: what the `__init__` handling reads (module documentation).
    inits: Option<InitLayout>,
    /// 3.11+: `PyThreadState.native_thread_id` (the kernel's id of the
    /// thread, `PyThread_get_thread_native_id`: 3.11 160, 3.12 144, 3.13
    /// 160), checked by [`check_native_thread_id`] before the hook reads it.
    native_thread_id: Option<usize>,
}

/// 3.13 offsets (`cpython/code.h`, `internal/pycore_frame.h`).
struct InitLayout {
    /// `PyCodeObject.co_name`, `co_kwonlyargcount`.
    name: usize,
    kwonly: usize,
    /// `_PyInterpreterFrame.f_globals`, `f_locals`.
    globals: usize,
    locals: usize,
}

/// `CO_OPTIMIZED`, `CO_VARARGS`, `CO_VARKEYWORDS`.
const CO_OPTIMIZED: u32 = 0x1;
const CO_VARARGS: u32 = 0x4;
const CO_VARKEYWORDS: u32 = 0x8;

/// 3.12's C recursion counters in `PyThreadState` (`struct _ts` in
/// Include/cpython/pystate.h of 3.12: after `prev`, `next`, `interp` and the
/// 4-byte `_status`, four `int`s; one layout for every 3.12.x, checked at
/// each window's start by [`check_c_recursion`] before the hook uses it).
///
/// 3.12's `_PyEval_EvalFrameDefault` charges each activation
/// `PY_EVAL_C_STACK_UNITS` (2) of `c_recursion_remaining` (the C recursion
/// limit, 1,500 on 3.12.0-3.12.2, `Py_C_RECURSION_LIMIT` after), and gives
/// them back when it returns, whichever way it leaves. Untraced, a
/// Python-to-Python call is inlined in the caller's activation and costs no
/// unit; under the hook it is an activation of its own: a recursion within
/// the program's own limit of 1,000 then died of RecursionError at ~750 deep.
/// So the hook gives the activation's units back around the call it makes
/// (only when it chains to CPython's own eval function: another tool's
/// function already stops the inlining, untraced too), and a hooked call
/// costs C recursion what it costs untraced. The C stack it costs is bounded
/// by the Python recursion limit instead: `crate::eval_frame_recursion_limit`.
/// (The hook cannot tell a call CPython would have inlined from one made by
/// a C function, whose activation is counted untraced too: a recursion
/// through C, a Python function that calls itself through `map`, a
/// `functools.lru_cache` or a `__repr__`, may so run deeper traced than
/// untraced before RecursionError, up to the Python limit; measured on
/// 3.12.1, ~790 bytes of C stack per level.)
#[derive(Clone, Copy)]
pub(crate) struct CRecursion {
    /// `py_recursion_remaining`.
    py_remaining: usize,
    /// `py_recursion_limit`.
    py_limit: usize,
    /// `c_recursion_remaining`: what the hook adds to and takes back.
    c_remaining: usize,
    /// `recursion_headroom` (0 unless handling a recursion error).
    headroom: usize,
}

/// `PY_EVAL_C_STACK_UNITS` of 3.12's Python/ceval.c: the C recursion units
/// one `_PyEval_EvalFrameDefault` activation charges.
const EVAL_C_STACK_UNITS: c_int = 2;

/// A fresh thread's `c_recursion_remaining` (its C recursion limit) on the
/// 3.12 builds known: 1,500 (3.12.0-3.12.2), `Py_C_RECURSION_LIMIT` since
/// gh-112215's backport to 3.12 (by platform and build: 500 for debug
/// builds to 10,000 for Linux in 3.13.0's header; no 3.12.3+ measured
/// here), with room.
const C_LIMITS: core::ops::RangeInclusive<c_int> = 200..=100_000;

/// `CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR`.
const GENERATOR_FLAGS: u32 = 0x20 | 0x80 | 0x200;
/// `FRAME_OWNED_BY_THREAD`.
const OWNED_BY_THREAD: u8 = 0;

/// The frame layouts known: 3.9-3.13. `version` is `Py_Version` (3.11+),
/// 0 before (3.9 and 3.10: the only versions without it that export the
/// eval-frame functions).
pub(crate) fn layout(version: u64) -> Option<Layout> {
    let (code, owner_and_flags) = match version >> 16 {
        0 => (32, None),
        0x030B => (32, Some((69, 48))),
        0x030C | 0x030D => (0, Some((70, 48))),
        _ => return None,
    };
    let c_recursion = (version >> 16 == 0x030C).then_some(CRecursion {
        py_remaining: 28,
        py_limit: 32,
        c_remaining: 36,
        headroom: 40,
    });
    let inits = (version >> 16 == 0x030D).then_some(InitLayout {
        name: 120,
        kwonly: 60,
        globals: 24,
        locals: 40,
    });
    let native_thread_id = match version >> 16 {
        0x030B | 0x030D => Some(160),
        0x030C => Some(144),
        _ => None,
    };
    Some(Layout {
        code,
        owner_and_flags,
        c_recursion,
        inits,
        native_thread_id,
    })
}

/// The eval function ours calls: the interpreter's before the window (a
/// function pointer; 0 until a window installs the hook). Never cleared, so
/// a hook still reached after its window (a frame entered during it, or
/// another tool that chained to ours) passes through.
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
/// True while this window's hook is installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Bumped at each window's start: a frame entered in one window writes its
/// return only in the same window.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// 3.12: the offset of `c_recursion_remaining` in `PyThreadState` once this
/// window's [`check_c_recursion`] found the counters where
/// [`CRecursion`] says; 0 otherwise (the hook then gives nothing back).
/// Each activation reads it once, so its add and its take-back match even
/// if it changes meanwhile.
static GIVE_BACK: AtomicUsize = AtomicUsize::new(0);

/// True while the `__init__` handling runs (3.13, this window's hook).
static INITS: AtomicBool = AtomicBool::new(false);
/// The interned `"__init__"` (held for good): a code object's `co_name`
/// is compared with it by address.
static INIT_NAME: AtomicUsize = AtomicUsize::new(0);

/// The offset of `native_thread_id` in `PyThreadState` once this window's
/// [`check_native_thread_id`] found the calling thread's id there; 0
/// otherwise (the events' thread id is then asked of the C library).
static NATIVE_THREAD_ID: AtomicUsize = AtomicUsize::new(0);

/// A new window starts (called by the start function, before any hook).
pub(crate) fn new_window() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    GIVE_BACK.store(0, Ordering::Relaxed);
}

/// True if the hook keeps CPython's C recursion count as it is untraced:
/// no count to give back on this version (3.9-3.11: no inlining to undo
/// there, or one counter with the Python recursion), or 3.12's counters
/// checked by this window's [`check_c_recursion`].
pub(crate) fn c_recursion_kept(api: &Api) -> bool {
    match &api.eval_frame {
        Some(ef) => ef.layout.c_recursion.is_none() || GIVE_BACK.load(Ordering::Relaxed) != 0,
        None => false,
    }
}

/// C stack a thread should have per level of its recursion limit for the
/// hook on 3.11 and 3.12 (where untraced a Python call takes none): 1 KiB,
/// above the most measured (3.11.7 544 bytes per call; 3.12.1 576, and
/// ~790 per level through a C function such as `map`).
const STACK_PER_LEVEL: usize = 1024;

/// True if the program asked for threads too small to recurse to `limit`
/// under the hook: `threading.stack_size()` (the stack of the threads it
/// starts from then on; 0, the default, is the C library's: RLIMIT_STACK,
/// 8 MB by default on Linux) below `limit` x [`STACK_PER_LEVEL`]. Measured
/// on 3.12.1: a thread of 256 KiB (`threading.stack_size(256 * 1024)`)
/// recursing 600 deep, fine untraced, crashed under the hook (3.11.7: 900
/// deep). A thread started before the size was set back to the default,
/// or by C code with a small stack, is not seen. Called with the GIL held;
/// false if the size cannot be read.
pub(crate) unsafe fn thread_stacks_too_small(api: &Api, limit: c_int) -> bool {
    let Some(ops) = &api.opcodes else {
        return false;
    };
    let module = (ops.import)(c"_thread".as_ptr());
    if module.is_null() {
        (api.err_clear)();
        return false;
    }
    let size = (ops.call_method)(
        module,
        c"stack_size".as_ptr(),
        core::ptr::null::<core::ffi::c_char>(),
    );
    (api.dec_ref)(module);
    if size.is_null() {
        (api.err_clear)();
        return false;
    }
    let bytes = (ops.as_long)(size);
    (api.dec_ref)(size);
    if bytes < 0 {
        (api.err_clear)();
        return false;
    }
    let needed = usize::try_from(limit)
        .unwrap_or(0)
        .saturating_mul(STACK_PER_LEVEL);
    bytes > 0 && (bytes as usize) < needed
}

/// Checks, on the calling thread's state (the watchdog's, with the GIL),
/// that `native_thread_id` lies where [`Layout`] says: it holds the id the
/// kernel gives this thread. Then the hook reads each call's thread id
/// from the thread state it is given (one read, no call into the C
/// library).
pub(crate) unsafe fn check_native_thread_id(api: &Api) {
    NATIVE_THREAD_ID.store(0, Ordering::Relaxed);
    let Some(at) = api
        .eval_frame
        .as_ref()
        .and_then(|ef| ef.layout.native_thread_id)
    else {
        return;
    };
    let me = (api.thread_state_get)();
    if me.is_null() {
        return;
    }
    let id = core::ptr::read_volatile((me as *const u8).add(at) as *const u64);
    if id != 0 && id == u64::from(crate::sys::thread_id()) {
        NATIVE_THREAD_ID.store(at, Ordering::Relaxed);
    }
}

/// 3.12: checks, on the calling thread's state (the watchdog's, made fresh
/// by `PyGILState_Ensure`, running no Python frame), that the C and Python
/// recursion counters lie where [`CRecursion`] says before the hook writes
/// one: `py_recursion_limit` and `py_recursion_remaining` both equal
/// `Py_GetRecursionLimit()`, `recursion_headroom` is 0 and
/// `c_recursion_remaining` is a C recursion limit ([`C_LIMITS`]); and on
/// every other thread of the interpreter, `py_recursion_limit` equals the
/// same limit (`sys.setrecursionlimit` sets every thread's) and
/// `c_recursion_remaining` is at most the fresh thread's. Sets what the hook
/// gives back ([`GIVE_BACK`]) if all hold. Called with the GIL held, before
/// the choice of mechanism ([`c_recursion_kept`]).
pub(crate) unsafe fn check_c_recursion(api: &Api) {
    GIVE_BACK.store(0, Ordering::Relaxed);
    let Some(at) = api.eval_frame.as_ref().and_then(|ef| ef.layout.c_recursion) else {
        return;
    };
    let me = (api.thread_state_get)();
    if me.is_null() {
        return;
    }
    let read = |thread: *mut c_void, field: usize| {
        core::ptr::read_volatile((thread as *const u8).add(field) as *const c_int)
    };
    let limit = (api.recursion_limit)();
    let fresh = read(me, at.c_remaining);
    if read(me, at.py_limit) != limit
        || read(me, at.py_remaining) != limit
        || read(me, at.headroom) != 0
        || !C_LIMITS.contains(&fresh)
    {
        return;
    }
    let mut thread = (api.thread_head)((api.interpreter_main)());
    let mut seen = 0;
    while !thread.is_null() && seen < crate::MAX_THREADS {
        seen += 1;
        if read(thread, at.py_limit) != limit || read(thread, at.c_remaining) > fresh {
            return;
        }
        thread = (api.thread_next)(thread);
    }
    GIVE_BACK.store(at.c_remaining, Ordering::Relaxed);
}

/// Installs the hook on the main interpreter (with the GIL held), chained
/// to the eval function it had.
pub(crate) unsafe fn start(api: &Api) -> Result<(), &'static str> {
    let Some(ef) = &api.eval_frame else {
        return Err("this interpreter does not export _PyInterpreterState_SetEvalFrameFunc");
    };
    let interp = (api.interpreter_main)();
    let ours = hook as EvalFrame as usize;
    let current = (ef.get)(interp).map_or(ef.default as usize, |f| f as usize);
    // Ours may still be installed if another tool put its own over it and
    // took it back after the last window: PREVIOUS still says what to call.
    if current != ours {
        PREVIOUS.store(current, Ordering::Relaxed);
    }
    (ef.set)(interp, hook);
    if (ef.get)(interp).map(|f| f as usize) != Some(ours) {
        return Err("_PyInterpreterState_SetEvalFrameFunc did not install the hook");
    }
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// 3.13, before the hook goes in (with the GIL held): pydeep's
/// `sys.monitoring` tool gets the calls' callbacks, and the simple
/// `__init__` of every class the local call events (module documentation).
/// Elsewhere nothing. An `__init__` the walk did not reach (more classes
/// than it looks at) is still seen by the hook when it is entered through
/// it.
pub(crate) unsafe fn start_inits(api: &Api) -> Result<(), &'static str> {
    let Some(ef) = &api.eval_frame else {
        return Ok(());
    };
    let Some(layout) = &ef.layout.inits else {
        return Ok(());
    };
    let (Some(ops), Some(found)) = (&api.opcodes, &api.classes) else {
        return Err("this interpreter does not export what the __init__ handling of 3.13 needs");
    };
    classes::intern_once(
        api,
        found,
        c"__init__",
        &INIT_NAME,
        "\"__init__\" could not be interned",
    )?;
    monitoring::start_local_calls(api, ops)?;
    classes::for_each_class_function(api, found, c"__init__", |function| {
        let code = classes::function_code(found, function);
        if !code.is_null() && is_simple(layout, code) {
            monitoring::add_local_calls(api, ops, code);
        }
    });
    INITS.store(true, Ordering::Relaxed);
    Ok(())
}

/// True if `code` (a code object) is what CALL_ALLOC_AND_ENTER_INIT
/// inlines: a "simple" function (`function_kind` in 3.13's specialize.c:
/// optimised, no `*args`, `**kwargs` or keyword-only arguments).
unsafe fn is_simple(layout: &InitLayout, code: *mut c_void) -> bool {
    let flags = core::ptr::read((code as *const u8).add(48) as *const u32);
    let kwonly = core::ptr::read((code as *const u8).add(layout.kwonly) as *const i32);
    flags & (CO_OPTIMIZED | CO_VARARGS | CO_VARKEYWORDS) == CO_OPTIMIZED && kwonly == 0
}

/// The class body whose namespace is `namespace` returned: its `__init__`,
/// if a simple function, gets the local call events.
unsafe fn class_body_returned(api: &Api, layout: &InitLayout, namespace: *mut c_void) {
    let (Some(ops), Some(found)) = (&api.opcodes, &api.classes) else {
        return;
    };
    if let Some(function) = classes::namespace_function(api, found, namespace, c"__init__") {
        let code = classes::function_code(found, function);
        if !code.is_null() && is_simple(layout, code) {
            monitoring::add_local_calls(api, ops, code);
        }
        (api.dec_ref)(function);
    }
}

/// 3.13, as the window ends (with the GIL held, the local call events still
/// on): the classes whose own simple `__init__` has no local call events.
/// CALL_ALLOC_AND_ENTER_INIT may have run such an `__init__` past the hook,
/// unrecorded: it was set outside a class body during the window, not
/// named `__init__` (`type("T", (), {"__init__": make})`, `cls.__init__ =
/// make`), or named so but never called through the hook, or its code
/// object was one `set_local_events` refused or past the cap. Each is
/// counted and named in the control block (`crate::note_unwatched`);
/// classes past the walk's cap are not looked at.
unsafe fn unwatched_inits(api: &Api) {
    let (Some(ef), Some(found)) = (&api.eval_frame, &api.classes) else {
        return;
    };
    let Some(layout) = &ef.layout.inits else {
        return;
    };
    classes::for_each_class_function(api, found, c"__init__", |function| {
        let code = classes::function_code(found, function);
        if !code.is_null() && is_simple(layout, code) && !monitoring::has_local_calls(code) {
            crate::note_unwatched(api, code);
        }
    });
}

/// Takes the hook out (with the GIL held), giving the interpreter back the
/// eval function it had. If another tool installed its own over ours during
/// the window, that one stays (and may keep calling ours, which then only
/// passes through). Then (or if the hook never went in) the
/// `__getitem__` functions tagged for the window get their versions back.
pub(crate) unsafe fn stop(api: &Api) {
    // What the window may have missed (3.13's `__init__`s, 3.11.0-3.11.3's
    // `__getitem__`s), counted before the local call events come off with
    // the hook (the tool is closed after, monitoring::close) and the
    // versions are given back (into the control block's `unwatched`
    // count and code objects, cleared at the window's start).
    if INITS.load(Ordering::Relaxed) {
        unwatched_inits(api);
    }
    if crate::getitem::active() {
        crate::getitem::unwatched(api);
    }
    INITS.store(false, Ordering::Relaxed);
    monitoring::stop_local_calls(api);
    take_out(api);
    crate::getitem::restore(api);
}

unsafe fn take_out(api: &Api) {
    let Some(ef) = &api.eval_frame else { return };
    if !INSTALLED.swap(false, Ordering::Relaxed) {
        return;
    }
    let interp = (api.interpreter_main)();
    let ours = hook as EvalFrame as usize;
    if (ef.get)(interp).map(|f| f as usize) == Some(ours) {
        (ef.set)(interp, previous(ef));
    }
}

/// The eval function to chain to.
fn previous(ef: &EvalFrameApi) -> EvalFrame {
    // SAFETY: PREVIOUS holds 0 or a value read from an EvalFrame.
    unsafe {
        core::mem::transmute::<usize, Option<EvalFrame>>(PREVIOUS.load(Ordering::Relaxed))
            .unwrap_or(ef.default)
    }
}

/// The eval-frame hook: a call event, the previous eval function, a return
/// event. Runs on the thread evaluating the frame, with the GIL held.
///
/// The common frame (3.13: an optimised function not named `__init__`
/// whose code was given no local call events this window) takes the short
/// way here; 3.13's `__init__` handling is in [`init_frame`], out of line,
/// so that what the common frame keeps across the call stays small.
unsafe extern "C" fn hook(tstate: *mut c_void, frame: *mut c_void, throw: c_int) -> *mut c_void {
    // The API is resolved before any hook is installed.
    let Some(api) = crate::api() else {
        return core::ptr::null_mut();
    };
    let Some(ef) = &api.eval_frame else {
        return core::ptr::null_mut();
    };
    let previous = previous(ef);
    // 3.12: the units this activation costs, given back around it (see
    // `CRecursion`); 0 elsewhere.
    let give_back = if previous as usize == ef.default as usize {
        GIVE_BACK.load(Ordering::Relaxed)
    } else {
        0
    };
    let evaluation = Evaluation {
        previous,
        give_back,
        tstate,
        frame,
        throw,
    };
    let c = &CONTROL;
    if c.command.load(Ordering::Relaxed) != COMMAND_RUN || frame.is_null() {
        return evaluation.chain();
    }
    // The frame holds a strong reference to its code object.
    let code = core::ptr::read((frame as *const u8).add(ef.layout.code) as *const *mut c_void);
    if code.is_null() || core::ptr::read((code as *const usize).add(1)) != ef.code_type {
        return evaluation.chain();
    }
    // A class body's (or module's) frame, while 3.11.0-3.11.3's
    // `__getitem__` functions are tagged (getitem.rs); a `__getitem__`'s
    // function is tagged as it enters.
    let mut getitem_namespace = false;
    let mut flags = 0;
    if let Some((owner, at)) = ef.layout.owner_and_flags {
        flags = core::ptr::read((code as *const u8).add(at) as *const u32);
        if flags & GENERATOR_FLAGS != 0
            && core::ptr::read((frame as *const u8).add(owner)) == OWNED_BY_THREAD
        {
            return evaluation.chain();
        }
        getitem_namespace = crate::getitem::active()
            && crate::getitem::entering(api, frame, code, flags & CO_OPTIMIZED != 0);
    }
    // 3.13: the frames the `__init__` handling looks at.
    let inits = match &ef.layout.inits {
        Some(layout) if INITS.load(Ordering::Relaxed) => Some(layout),
        _ => None,
    };
    if let Some(layout) = inits {
        if flags & CO_OPTIMIZED == 0
            || core::ptr::read((code as *const u8).add(layout.name) as *const usize)
                == INIT_NAME.load(Ordering::Relaxed)
            || monitoring::may_have_local_calls(code)
        {
            return init_frame(api, layout, code, flags, evaluation);
        }
    }
    let grants = monitoring::grants();
    let (result, same_window) = traced(api, code, evaluation, || {
        // (3.13: a code object given local call events while its frame ran
        // reports this return itself.)
        inits.is_none() || monitoring::grants() == grants || !monitoring::has_local_calls(code)
    });
    // The frame is cleared by its caller (`_PyEval_Vector`) after this
    // returns: its namespace is still there.
    if getitem_namespace && same_window && !result.is_null() && crate::getitem::active() {
        crate::getitem::namespace_returned(api, frame);
    }
    result
}

/// A call event for `code`, the previous eval function, and a return event
/// if the call's was written, the window is the same and `write_return`
/// agrees. Returns the result and
/// whether the window is still the one of the call.
#[inline(always)]
unsafe fn traced(
    api: &Api,
    code: *mut c_void,
    evaluation: Evaluation,
    write_return: impl FnOnce() -> bool,
) -> (*mut c_void, bool) {
    let generation = GENERATION.load(Ordering::Relaxed);
    // Kept (one reference in the window's table) if recorded: alive until
    // the window's RELEASE, which comes after STOP.
    // The call's thread id serves its return (the same thread).
    let mut thread = 0;
    let at = NATIVE_THREAD_ID.load(Ordering::Relaxed);
    if at != 0 && !evaluation.tstate.is_null() {
        thread = core::ptr::read((evaluation.tstate as *const u8).add(at) as *const u64) as u32;
    }
    let recorded = crate::record_code(api, KIND_CALL, code, false, &mut thread);
    let result = evaluation.chain();
    let same_window = CONTROL.command.load(Ordering::Relaxed) == COMMAND_RUN
        && GENERATION.load(Ordering::Relaxed) == generation;
    if recorded && same_window && write_return() {
        crate::write_event(
            crate::event_time(),
            code as u64,
            KIND_RETURN,
            0,
            0,
            &mut thread,
        );
    }
    (result, same_window)
}

/// 3.13, the hook's rare frames (module documentation): a code object
/// with local call events (left to pydeep's `sys.monitoring` tool); a
/// simple `__init__` entered without them (given them: its PY_START event
/// fires when the frame starts); a class body, module or `exec()` code,
/// traced, whose namespace's `__init__` gets the events when it returns.
#[inline(never)]
#[cold]
unsafe fn init_frame(
    api: &Api,
    layout: &InitLayout,
    code: *mut c_void,
    flags: u32,
    evaluation: Evaluation,
) -> *mut c_void {
    let Evaluation { frame, throw, .. } = evaluation;
    if monitoring::has_local_calls(code) {
        return evaluation.chain();
    }
    // A class body's namespace, held until it returns.
    let mut namespace = core::ptr::null_mut::<c_void>();
    if flags & CO_OPTIMIZED != 0 {
        let name = core::ptr::read((code as *const u8).add(layout.name) as *const usize);
        if name == INIT_NAME.load(Ordering::Relaxed)
            && throw == 0
            && is_simple(layout, code)
            && api
                .opcodes
                .as_ref()
                .is_some_and(|ops| monitoring::add_local_calls(api, ops, code))
        {
            return evaluation.chain();
        }
    } else if throw == 0 {
        // A class body, module or exec() code: a class body's locals
        // are its namespace, not its globals.
        let locals = core::ptr::read((frame as *const u8).add(layout.locals) as *const usize);
        let globals = core::ptr::read((frame as *const u8).add(layout.globals) as *const usize);
        if locals != 0 && locals != globals {
            namespace = locals as *mut c_void;
            (api.inc_ref)(namespace);
        }
    }
    let (result, same_window) =
        traced(api, code, evaluation, || !monitoring::has_local_calls(code));
    if !namespace.is_null() {
        if !result.is_null() && same_window {
            class_body_returned(api, layout, namespace);
        }
        (api.dec_ref)(namespace);
    }
    result
}

/// One evaluation the hook was asked for: its arguments, the eval
/// function to chain to, and (3.12) where the C recursion units are given
/// back.
#[derive(Clone, Copy)]
struct Evaluation {
    previous: EvalFrame,
    /// The offset of 3.12's `c_recursion_remaining`, else 0.
    give_back: usize,
    tstate: *mut c_void,
    frame: *mut c_void,
    throw: c_int,
}

impl Evaluation {
    /// Calls the eval function `previous`; with `give_back` adds the C
    /// recursion units its activation charges before, and takes them back
    /// after, on every path (the call always returns: a raised exception is
    /// a NULL result).
    #[inline(always)]
    unsafe fn chain(self) -> *mut c_void {
        let Evaluation {
            previous,
            give_back,
            tstate,
            frame,
            throw,
        } = self;
        if give_back == 0 || tstate.is_null() {
            return previous(tstate, frame, throw);
        }
        // The thread state of the thread evaluating the frame: this
        // thread's, with the GIL held; no other thread writes this field.
        let remaining = (tstate as *mut u8).add(give_back) as *mut c_int;
        *remaining = (*remaining).wrapping_add(EVAL_C_STACK_UNITS);
        let result = previous(tstate, frame, throw);
        *remaining = (*remaining).wrapping_sub(EVAL_C_STACK_UNITS);
        result
    }
}
