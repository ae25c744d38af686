//! pydeep's own `sys.monitoring` tool (3.12+), shared by the two uses that
//! need one: `--opcodes` (local INSTRUCTION events, `opcodes.rs`) and the
//! calls of a window (global PY_START / PY_RESUME / PY_THROW and PY_RETURN
//! / PY_YIELD / PY_UNWIND events, [`start_calls`]: on 3.12, and on 3.13
//! where the eval-frame hook is not used, see `crate::calls_by`), instead
//! of the legacy profile function (`_PyEval_SetProfile`), which CPython 3.12+ emulates on
//! top of `sys.monitoring` at the price of a frame object and a shim per
//! call.
//!
//! The tool takes one free tool id (4, 3, 5, then the rest) named "pydeep"
//! for the window; its callbacks are C functions wrapped as `PyCFunction`s
//! (METH_FASTCALL: CPython calls them by vectorcall with the code object and
//! the instruction offset as arguments). At stop every event is switched
//! off, every callback unregistered and the tool id freed, so the target's
//! `sys.monitoring.get_tool(id)` is what it was. Other tools, and the
//! target's `sys.setprofile` / `sys.settrace` functions (CPython's own
//! tool ids 6 and 7), are left alone.
//!
//! On 3.13, where the eval-frame hook records calls, the tool also gets the
//! same call events as *local* events on the code objects the hook cannot
//! see entered ([`add_local_calls`]: the `__init__` functions that
//! CALL_ALLOC_AND_ENTER_INIT inlines, see `evalframe.rs`); the hook leaves
//! those code objects to the tool ([`has_local_calls`]).
//!
//! Everything here runs with the GIL held, except the callbacks' hot path,
//! which CPython also calls with the GIL held.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::abi::*;
use crate::{Api, OpcodeApi, CONTROL};

/// `sys.monitoring` (a reference) and the tool id plus one (0: no tool).
static MONITORING: AtomicUsize = AtomicUsize::new(0);
static TOOL: AtomicU32 = AtomicU32::new(0);
/// Global events switched on for the tool ([`start_calls`]).
static GLOBAL_EVENTS: AtomicU32 = AtomicU32::new(0);

/// Callbacks registered: (event bit, the callback object, one reference).
const MAX_CALLBACKS: usize = 8;
static CALLBACK_BITS: [AtomicU32; MAX_CALLBACKS] = [const { AtomicU32::new(0) }; MAX_CALLBACKS];
static CALLBACKS: [AtomicUsize; MAX_CALLBACKS] = [const { AtomicUsize::new(0) }; MAX_CALLBACKS];

/// A vectorcall-style C callback: `(self, args, nargs) -> PyObject *`.
pub(crate) type Callback =
    unsafe extern "C" fn(*mut c_void, *const *mut c_void, isize) -> *mut c_void;

/// `PyMethodDef` of a callback (METH_FASTCALL).
#[repr(C)]
pub(crate) struct MethodDef {
    name: *const c_char,
    method: Callback,
    flags: i32,
    doc: *const c_char,
}
// SAFETY: immutable, pointers to static strings.
unsafe impl Sync for MethodDef {}

impl MethodDef {
    /// The definition of a METH_FASTCALL function `name` calling `method`.
    pub(crate) const fn fastcall(name: &'static CStr, method: Callback) -> MethodDef {
        MethodDef {
            name: name.as_ptr(),
            method,
            flags: 0x0080,
            doc: core::ptr::null(),
        }
    }
}

/// The tool id, if the tool is open.
pub(crate) fn tool() -> Option<i32> {
    match TOOL.load(Ordering::Relaxed) {
        0 => None,
        id => Some(id as i32 - 1),
    }
}

/// `sys.monitoring` (borrowed), while the tool is open.
pub(crate) fn module() -> *mut c_void {
    MONITORING.load(Ordering::Relaxed) as *mut c_void
}

/// Opens the tool (once per window: a second call finds it open).
pub(crate) unsafe fn open(api: &Api, ops: &OpcodeApi) -> Result<(), &'static str> {
    if TOOL.load(Ordering::Relaxed) != 0 {
        return Ok(());
    }
    let sys = (ops.import)(c"sys".as_ptr());
    if sys.is_null() {
        (api.err_clear)();
        return Err("sys.monitoring: sys cannot be imported");
    }
    let monitoring = (ops.get_attr)(sys, c"monitoring".as_ptr());
    (api.dec_ref)(sys);
    if monitoring.is_null() {
        (api.err_clear)();
        return Err("this interpreter has no sys.monitoring");
    }
    MONITORING.store(monitoring as usize, Ordering::Relaxed);
    let mut tool = None;
    for id in [4, 3, 5, 1, 0, 2] {
        let owner = (ops.call_method)(monitoring, c"get_tool".as_ptr(), c"i".as_ptr(), id);
        if owner.is_null() {
            (api.err_clear)();
            continue;
        }
        let free = owner == ops.none_object;
        (api.dec_ref)(owner);
        if free {
            tool = Some(id);
            break;
        }
    }
    let Some(tool) = tool else {
        drop_module(api);
        return Err("every sys.monitoring tool id is in use (pydeep needs one of 0-5)");
    };
    let used = (ops.call_method)(
        monitoring,
        c"use_tool_id".as_ptr(),
        c"is".as_ptr(),
        tool,
        c"pydeep".as_ptr(),
    );
    if used.is_null() {
        (api.err_clear)();
        drop_module(api);
        return Err("sys.monitoring.use_tool_id failed");
    }
    (api.dec_ref)(used);
    TOOL.store(tool as u32 + 1, Ordering::Relaxed);
    CONTROL
        .monitoring_tool
        .store(tool as u32 + 1, Ordering::Relaxed);
    Ok(())
}

/// The bit of `sys.monitoring.events.NAME`.
pub(crate) unsafe fn event_bit(
    api: &Api,
    ops: &OpcodeApi,
    name: &CStr,
) -> Result<u32, &'static str> {
    let events = (ops.get_attr)(module(), c"events".as_ptr());
    let bit = if events.is_null() {
        -1
    } else {
        let value = (ops.get_attr)(events, name.as_ptr());
        (api.dec_ref)(events);
        if value.is_null() {
            -1
        } else {
            let bit = (ops.as_long)(value);
            (api.dec_ref)(value);
            bit
        }
    };
    if bit <= 0 || bit > u32::MAX as core::ffi::c_long {
        (api.err_clear)();
        return Err("a sys.monitoring event was not found");
    }
    Ok(bit as u32)
}

/// Registers `def` as the tool's callback for the event `name`; its bit.
pub(crate) unsafe fn register(
    api: &Api,
    ops: &OpcodeApi,
    name: &CStr,
    def: &'static MethodDef,
) -> Result<u32, &'static str> {
    let Some(tool) = tool() else {
        return Err("sys.monitoring: the tool is not open");
    };
    let bit = event_bit(api, ops, name)?;
    let Some(slot) = CALLBACKS
        .iter()
        .position(|c| c.load(Ordering::Relaxed) == 0)
    else {
        return Err("sys.monitoring: too many callbacks");
    };
    let callback = (ops.new_cfunction)(
        def as *const MethodDef as *const c_void,
        core::ptr::null_mut(),
        core::ptr::null_mut(),
    );
    if callback.is_null() {
        (api.err_clear)();
        return Err("sys.monitoring: a callback could not be made");
    }
    if let (Some(c), Some(b)) = (CALLBACKS.get(slot), CALLBACK_BITS.get(slot)) {
        c.store(callback as usize, Ordering::Relaxed);
        b.store(bit, Ordering::Relaxed);
    }
    let registered = (ops.call_method)(
        module(),
        c"register_callback".as_ptr(),
        c"iiO".as_ptr(),
        tool,
        bit as i32,
        callback,
    );
    if registered.is_null() {
        (api.err_clear)();
        return Err("sys.monitoring.register_callback failed");
    }
    (api.dec_ref)(registered);
    Ok(bit)
}

static ENTER_DEF: MethodDef = MethodDef::fastcall(c"pydeep_enter", enter);
static LEAVE_DEF: MethodDef = MethodDef::fastcall(c"pydeep_leave", leave);

/// PY_START, PY_RESUME, PY_THROW: `(code, offset, ...)`: a call event, as
/// CPython's legacy profile function reports them (`legacy_tracing.c`).
unsafe extern "C" fn enter(
    _self: *mut c_void,
    args: *const *mut c_void,
    nargs: isize,
) -> *mut c_void {
    callback(args, nargs, KIND_CALL)
}

/// PY_RETURN, PY_YIELD, PY_UNWIND: a return event.
unsafe extern "C" fn leave(
    _self: *mut c_void,
    args: *const *mut c_void,
    nargs: isize,
) -> *mut c_void {
    callback(args, nargs, KIND_RETURN)
}

#[inline(always)]
unsafe fn callback(args: *const *mut c_void, nargs: isize, kind: u32) -> *mut c_void {
    let Some(api) = crate::api() else {
        return core::ptr::null_mut();
    };
    let Some(ops) = &api.opcodes else {
        return core::ptr::null_mut();
    };
    if nargs >= 1 && CONTROL.command.load(Ordering::Relaxed) == COMMAND_RUN {
        crate::record_code(api, kind, *args, false, &mut 0);
    }
    // None is immortal on 3.12+, the only versions that call this.
    ops.none_object
}

/// Registers the calls' callbacks (PY_START, PY_RESUME, PY_THROW: a call;
/// PY_RETURN, PY_YIELD, PY_UNWIND: a return); their event bits.
unsafe fn register_calls(api: &Api, ops: &OpcodeApi) -> Result<u32, &'static str> {
    open(api, ops)?;
    let mut events = 0;
    for name in [c"PY_START", c"PY_RESUME", c"PY_THROW"] {
        events |= register(api, ops, name, &ENTER_DEF)?;
    }
    for name in [c"PY_RETURN", c"PY_YIELD", c"PY_UNWIND"] {
        events |= register(api, ops, name, &LEAVE_DEF)?;
    }
    Ok(events)
}

/// Switches the calls' events on for every thread of the interpreter
/// (threads started later included: global events need no rescan).
pub(crate) unsafe fn start_calls(api: &Api, ops: &OpcodeApi) -> Result<(), &'static str> {
    let events = register_calls(api, ops)?;
    let tool = tool().unwrap_or(0);
    let set = (ops.call_method)(
        module(),
        c"set_events".as_ptr(),
        c"ii".as_ptr(),
        tool,
        events as i32,
    );
    if set.is_null() {
        (api.err_clear)();
        return Err("sys.monitoring.set_events failed");
    }
    (api.dec_ref)(set);
    GLOBAL_EVENTS.store(events, Ordering::Relaxed);
    Ok(())
}

/// Closes the tool, if open: global events off, every callback
/// unregistered, the tool id freed, the references given back. Local
/// events (`--opcodes`) are taken off by `opcodes.rs` before.
pub(crate) unsafe fn close(api: &Api) {
    let Some(ops) = &api.opcodes else { return };
    let tool = TOOL.swap(0, Ordering::Relaxed);
    let monitoring = module();
    if tool != 0 && !monitoring.is_null() {
        let id = tool as i32 - 1;
        if GLOBAL_EVENTS.swap(0, Ordering::Relaxed) != 0 {
            let off =
                (ops.call_method)(monitoring, c"set_events".as_ptr(), c"ii".as_ptr(), id, 0i32);
            settle(api, off);
        }
        for bit in CALLBACK_BITS.iter() {
            let bit = bit.swap(0, Ordering::Relaxed);
            if bit != 0 {
                let unregistered = (ops.call_method)(
                    monitoring,
                    c"register_callback".as_ptr(),
                    c"iiO".as_ptr(),
                    id,
                    bit as i32,
                    ops.none_object,
                );
                settle(api, unregistered);
            }
        }
        let freed = (ops.call_method)(monitoring, c"free_tool_id".as_ptr(), c"i".as_ptr(), id);
        settle(api, freed);
    }
    for callback in CALLBACKS.iter() {
        let callback = callback.swap(0, Ordering::Relaxed) as *mut c_void;
        if !callback.is_null() {
            (api.dec_ref)(callback);
        }
    }
    drop_module(api);
}

unsafe fn drop_module(api: &Api) {
    let monitoring = MONITORING.swap(0, Ordering::Relaxed) as *mut c_void;
    if !monitoring.is_null() {
        (api.dec_ref)(monitoring);
    }
}

/// Drops a call's result, or clears its error.
pub(crate) unsafe fn settle(api: &Api, result: *mut c_void) {
    if result.is_null() {
        (api.err_clear)();
    } else {
        (api.dec_ref)(result);
    }
}

// ---------------------------------------------------------------------------
// 3.13: the calls' events as local events of chosen code objects.

/// The calls' event bits while local call events may be given (0: not
/// this window), and the tool's bit in a `_Py_LocalMonitors` byte.
static LOCAL_CALLS: AtomicU32 = AtomicU32::new(0);
static TOOL_BIT: AtomicU32 = AtomicU32::new(0);

/// Code objects given local call events, each held by one reference until
/// stop (an open-addressed set of addresses, filled to 3/4 at most).
const LOCAL_CAPACITY: usize = 1 << 14;
struct LocalCodes(UnsafeCell<[usize; LOCAL_CAPACITY]>);
// SAFETY: touched with the GIL held only.
unsafe impl Sync for LocalCodes {}
static LOCAL_CODES: LocalCodes = LocalCodes(UnsafeCell::new([0; LOCAL_CAPACITY]));
static LOCAL_COUNT: AtomicUsize = AtomicUsize::new(0);
/// The code objects this window may have given local call events, as a
/// 4,096-bit filter of their addresses ([`may_have_local_calls`]): set
/// before each grant, cleared at the window's start. Read by the hook at
/// every call instead of the code's `_co_monitoring` (two dependent reads,
/// the second outside the code object).
static GRANTED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// Bumped at each grant: a frame whose code gained the events while it ran
/// (its return then comes from the tool) is told by this counter moving
/// during its call ([`grants`]).
static GRANTS: AtomicU32 = AtomicU32::new(0);
/// Low bit of an entry: `set_local_events` refused that code object.
const FAILED: usize = 1;

/// `PyCodeObject._co_monitoring` on 3.13 (`cpython/code.h`); its first
/// member, `local_monitors.tools[PY_MONITORING_EVENT_PY_START]` (event 0),
/// is the byte of the tools that have local PY_START events on the code.
const CO_MONITORING: usize = 176;

static UNWIND_DEF: MethodDef = MethodDef::fastcall(c"pydeep_unwind", unwind);

/// PY_UNWIND (global, in the local calls' mode): a return event of a code
/// object that has the local call events; the hook reports the others'.
unsafe extern "C" fn unwind(
    _self: *mut c_void,
    args: *const *mut c_void,
    nargs: isize,
) -> *mut c_void {
    if nargs >= 1 && has_local_calls(*args) {
        return callback(args, nargs, KIND_RETURN);
    }
    match crate::api().and_then(|api| api.opcodes.as_ref()) {
        Some(ops) => ops.none_object,
        None => core::ptr::null_mut(),
    }
}

/// Registers the calls' callbacks for local events on chosen code objects
/// ([`add_local_calls`]): PY_START and PY_RESUME (a call), PY_RETURN and
/// PY_YIELD (a return), the events 3.13 lets a tool set locally. An
/// exception leaving such a code object is a global event only
/// (PY_UNWIND): switched on for every code object, its callback ignores
/// those without the local events (3.13 runs it only while an exception
/// unwinds a frame). PY_THROW, global only too, is not asked for: the
/// functions given local events are `__init__`s, not generators. 3.13 only
/// (the code object's layout, [`has_local_calls`]).
pub(crate) unsafe fn start_local_calls(api: &Api, ops: &OpcodeApi) -> Result<(), &'static str> {
    open(api, ops)?;
    let Some(tool) = tool() else {
        return Err("sys.monitoring: the tool is not open");
    };
    TOOL_BIT.store(1 << tool, Ordering::Relaxed);
    for word in &GRANTED {
        word.store(0, Ordering::Relaxed);
    }
    let mut events = 0;
    for name in [c"PY_START", c"PY_RESUME"] {
        events |= register(api, ops, name, &ENTER_DEF)?;
    }
    for name in [c"PY_RETURN", c"PY_YIELD"] {
        events |= register(api, ops, name, &LEAVE_DEF)?;
    }
    let unwinds = register(api, ops, c"PY_UNWIND", &UNWIND_DEF)?;
    let set = (ops.call_method)(
        module(),
        c"set_events".as_ptr(),
        c"ii".as_ptr(),
        tool,
        unwinds as i32,
    );
    if set.is_null() {
        (api.err_clear)();
        return Err("sys.monitoring.set_events failed");
    }
    (api.dec_ref)(set);
    GLOBAL_EVENTS.store(unwinds, Ordering::Relaxed);
    LOCAL_CALLS.store(events, Ordering::Relaxed);
    Ok(())
}

/// True if pydeep's tool has local PY_START events on `code` (a code
/// object): the tool reports its calls. Two reads; 3.13 only.
#[inline(always)]
pub(crate) unsafe fn has_local_calls(code: *mut c_void) -> bool {
    let data = core::ptr::read((code as *const u8).add(CO_MONITORING) as *const *const u8);
    !data.is_null() && u32::from(core::ptr::read(data)) & TOOL_BIT.load(Ordering::Relaxed) != 0
}

/// The word of [`GRANTED`] and the bit in it for `code`.
#[inline(always)]
fn granted_bit(code: *mut c_void) -> (usize, u64) {
    let h = ((code as usize) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
    (h >> 6, 1 << (h & 63))
}

/// False if `code` has had no local call events given this window (then
/// [`has_local_calls`] is false too); true if it may have. One read of the
/// tracer's own memory. 3.13 only.
#[inline(always)]
pub(crate) fn may_have_local_calls(code: *mut c_void) -> bool {
    let (word, bit) = granted_bit(code);
    GRANTED[word].load(Ordering::Relaxed) & bit != 0
}

/// How many local call event grants this window made so far: unchanged
/// across a call, its code gained no events during it.
#[inline(always)]
pub(crate) fn grants() -> u32 {
    GRANTS.load(Ordering::Relaxed)
}

/// Gives `code` (a code object) the calls' local events, keeping it (one
/// reference) until stop; true if it has them. With the GIL held and no
/// exception set.
pub(crate) unsafe fn add_local_calls(api: &Api, ops: &OpcodeApi, code: *mut c_void) -> bool {
    let bits = LOCAL_CALLS.load(Ordering::Relaxed);
    if bits == 0 || code.is_null() {
        return false;
    }
    let table = LOCAL_CODES.0.get() as *mut usize;
    let mut i = ((code as usize) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    let mut slot = None;
    for _ in 0..SELECT_PROBES {
        let entry = table.add(i & (LOCAL_CAPACITY - 1));
        if *entry == code as usize {
            return true;
        }
        if *entry == code as usize | FAILED {
            return false;
        }
        if *entry == 0 {
            slot = Some(entry);
            break;
        }
        i = i.wrapping_add(1);
    }
    let Some(slot) = slot else { return false };
    if LOCAL_COUNT.load(Ordering::Relaxed) >= LOCAL_CAPACITY / 4 * 3 {
        return false;
    }
    let (word, bit) = granted_bit(code);
    GRANTED[word].fetch_or(bit, Ordering::Relaxed);
    GRANTS.fetch_add(1, Ordering::Relaxed);
    if !change_local_events(api, ops, code, bits, 0) {
        // Not asked again (the hook would at each call): remembered, with
        // no reference (the address is only compared).
        *slot = code as usize | FAILED;
        LOCAL_COUNT.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if LOCAL_CALLS.load(Ordering::Relaxed) == 0 {
        // The window stopped meanwhile (a finalizer run by the calls above
        // let the watchdog take the GIL): taken off again.
        change_local_events(api, ops, code, 0, bits);
        return false;
    }
    (api.inc_ref)(code);
    *slot = code as usize;
    LOCAL_COUNT.fetch_add(1, Ordering::Relaxed);
    true
}

/// At stop (with the GIL held, before [`close`]): takes the calls' local
/// events off every code object that got them, and gives the code objects
/// back.
pub(crate) unsafe fn stop_local_calls(api: &Api) {
    let bits = LOCAL_CALLS.swap(0, Ordering::Relaxed);
    if LOCAL_COUNT.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    let table = LOCAL_CODES.0.get() as *mut usize;
    for i in 0..LOCAL_CAPACITY {
        let entry = table.add(i);
        let code = *entry as *mut c_void;
        if code.is_null() || *entry & FAILED != 0 {
            *entry = 0;
            continue;
        }
        if let Some(ops) = &api.opcodes {
            change_local_events(api, ops, code, 0, bits);
        }
        (api.dec_ref)(code);
        *entry = 0;
    }
}

/// Sets the tool's local events on `code` to what they are, plus `add`,
/// minus `remove` (`--opcodes`' INSTRUCTION events and the calls' share a
/// code object's events); true if done.
pub(crate) unsafe fn change_local_events(
    api: &Api,
    ops: &OpcodeApi,
    code: *mut c_void,
    add: u32,
    remove: u32,
) -> bool {
    let Some(tool) = tool() else { return false };
    let monitoring = module();
    let current = (ops.call_method)(
        monitoring,
        c"get_local_events".as_ptr(),
        c"iO".as_ptr(),
        tool,
        code,
    );
    if current.is_null() {
        (api.err_clear)();
        return false;
    }
    let events = (ops.as_long)(current);
    (api.dec_ref)(current);
    if events < 0 {
        (api.err_clear)();
        return false;
    }
    let events = (events as u32 | add) & !remove;
    let set = (ops.call_method)(
        monitoring,
        c"set_local_events".as_ptr(),
        c"iOi".as_ptr(),
        tool,
        code,
        events as i32,
    );
    if set.is_null() {
        (api.err_clear)();
        return false;
    }
    (api.dec_ref)(set);
    true
}
