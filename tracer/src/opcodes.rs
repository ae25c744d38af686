//! `--opcodes`: how many times each instruction of the selected code
//! objects ran, counted in a table in the target ([`abi::COUNT_CAPACITY`]
//! entries keyed by code object and instruction offset) that the agent
//! reads once the hooks are removed. Opcode events never go to the ring:
//! there are tens of millions a second.
//!
//! Where the events come from differs by version (notes/tracing.md says
//! why):
//! - 3.9-3.11 (**frames**): the trace function sets `f_trace_opcodes` on a
//!   frame at its call event unless the agent rejected its code, keeps the
//!   frame (one reference) and clears the flag again at stop; CPython then
//!   calls the trace function with `PyTrace_OPCODE` before each instruction.
//! - 3.12+ (**monitoring**): a `sys.monitoring` tool of its own, whose
//!   INSTRUCTION callback is a C function wrapped as a `PyCFunction`; the
//!   watchdog gives each code object the agent selected local INSTRUCTION
//!   events, and at stop takes them off, unregisters the callback and frees
//!   the tool id.
//!
//! Everything here runs with the GIL held.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_void};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::abi::*;
use crate::{Api, OpcodeApi, PYDEEP_TRACER_V3};

#[repr(C)]
#[derive(Clone, Copy)]
struct Count {
    code: u64,
    offset: u32,
    reserved: u32,
    count: u64,
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Count, code) == count::CODE);
    assert!(offset_of!(Count, offset) == count::OFFSET);
    assert!(offset_of!(Count, count) == count::COUNT);
    assert!(core::mem::size_of::<Count>() == count::SIZE);
};

const EMPTY: Count = Count {
    code: 0,
    offset: 0,
    reserved: 0,
    count: 0,
};

struct Counts(UnsafeCell<[Count; COUNT_CAPACITY]>);
// SAFETY: written with the GIL held only; read by the agent from outside.
unsafe impl Sync for Counts {}
static COUNTS: Counts = Counts(UnsafeCell::new([EMPTY; COUNT_CAPACITY]));

/// True if this interpreter counts through `sys.monitoring` (3.12+).
pub(crate) fn by_monitoring(api: &Api) -> bool {
    api.version >= 0x030C_0000
}

/// Resets the window's opcode state (the start function, before any
/// hook): with `--opcodes`, empties the count table (1.5 MB, touched only
/// by windows that count, so other windows leave it out of the target's
/// resident memory) and says where it is.
pub(crate) fn reset(counting: bool) {
    let table = COUNTS.0.get() as *mut Count;
    if counting {
        for i in 0..COUNT_CAPACITY {
            // SAFETY: within the table; no hook runs yet.
            unsafe { table.add(i).write_volatile(EMPTY) };
        }
    }
    let c = &PYDEEP_TRACER_V3;
    let address = if counting { table as u64 } else { 0 };
    c.counts_address.store(address, Ordering::Relaxed);
    c.counts_lost.store(0, Ordering::Relaxed);
    c.counted_codes.store(0, Ordering::Relaxed);
    c.monitoring_tool.store(0, Ordering::Relaxed);
}

/// Counts one execution of the instruction at `offset` of `code`.
unsafe fn add(code: usize, offset: u32) {
    let table = COUNTS.0.get() as *mut Count;
    let mut i = count_slot(code as u64, offset);
    for _ in 0..SELECT_PROBES {
        let entry = table.add(i & (COUNT_CAPACITY - 1));
        if (*entry).code == code as u64 && (*entry).offset == offset {
            (*entry).count = (*entry).count.wrapping_add(1);
            return;
        }
        if (*entry).code == 0 {
            *entry = Count {
                code: code as u64,
                offset,
                reserved: 0,
                count: 1,
            };
            return;
        }
        i = i.wrapping_add(1);
    }
    lost();
}

fn lost() {
    PYDEEP_TRACER_V3.counts_lost.fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// 3.9-3.11: f_trace_opcodes on the frames of selected code.

/// Frames given `f_trace_opcodes`, each with one reference, until stop.
const FRAME_CAPACITY: usize = 1 << 12;
struct Frames(UnsafeCell<[usize; FRAME_CAPACITY]>);
// SAFETY: touched with the GIL held only.
unsafe impl Sync for Frames {}
static FRAMES: Frames = Frames(UnsafeCell::new([0; FRAME_CAPACITY]));

/// The trace function's call event: unless the agent rejected the frame's
/// code, asks CPython for its opcode events. A frame seen again (a
/// generator resumed) is left as it is; with the frame table full the
/// frame is not counted, and that is counted as lost.
pub(crate) unsafe fn on_call(api: &Api, ops: &OpcodeApi, frame: *mut c_void) {
    let code = (api.frame_get_code)(frame);
    if code.is_null() {
        return;
    }
    let rejected = crate::selection(code as usize) == SELECT_NO;
    crate::give_back_code_reference(code as usize);
    if rejected {
        return;
    }
    let table = FRAMES.0.get() as *mut usize;
    let mut i = ((frame as usize) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
    for _ in 0..SELECT_PROBES {
        let slot = table.add(i & (FRAME_CAPACITY - 1));
        if *slot == frame as usize {
            return;
        }
        if *slot == 0 {
            if (ops.set_attr)(frame, c"f_trace_opcodes".as_ptr(), ops.true_object) < 0 {
                (api.err_clear)();
                lost();
                return;
            }
            (api.inc_ref)(frame);
            *slot = frame as usize;
            PYDEEP_TRACER_V3
                .counted_codes
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        i = i.wrapping_add(1);
    }
    lost();
}

/// The trace function's opcode event: counts the instruction about to run
/// (3.11: `PyFrame_GetLasti`; before, the `f_lasti` attribute, in bytes on
/// 3.9 and 3.10 alike). A frame whose code the agent has rejected since its
/// call event stops asking.
pub(crate) unsafe fn on_opcode(api: &Api, ops: &OpcodeApi, frame: *mut c_void) {
    let code = (api.frame_get_code)(frame);
    if code.is_null() {
        return;
    }
    if crate::selection(code as usize) == SELECT_NO {
        crate::give_back_code_reference(code as usize);
        if (ops.set_attr)(frame, c"f_trace_opcodes".as_ptr(), ops.false_object) < 0 {
            (api.err_clear)();
        }
        return;
    }
    let offset = match api.frame_get_lasti {
        Some(lasti) => lasti(frame) as i64,
        None => {
            let value = (ops.get_attr)(frame, c"f_lasti".as_ptr());
            if value.is_null() {
                (api.err_clear)();
                -1
            } else {
                let offset = (ops.as_long)(value);
                (api.dec_ref)(value);
                offset
            }
        }
    };
    // The count table names the code object: it stays alive (kept) until
    // the agent has read it.
    if offset < 0 || !crate::keep(api, code as usize, true) {
        (api.err_clear)();
        lost();
        return;
    }
    add(code as usize, offset as u32);
}

/// At stop: clears `f_trace_opcodes` on every frame it was set on and
/// gives the frames back.
unsafe fn release_frames(api: &Api, ops: &OpcodeApi) {
    let table = FRAMES.0.get() as *mut usize;
    for i in 0..FRAME_CAPACITY {
        let slot = table.add(i);
        let frame = *slot as *mut c_void;
        if !frame.is_null() {
            if (ops.set_attr)(frame, c"f_trace_opcodes".as_ptr(), ops.false_object) < 0 {
                (api.err_clear)();
            }
            (api.dec_ref)(frame);
            *slot = 0;
        }
    }
}

// ---------------------------------------------------------------------------
// 3.12+: a sys.monitoring tool.

/// `sys.monitoring` (a reference), the callback (a reference), the tool id
/// plus one, the INSTRUCTION event's bit: set by [`start_monitoring`].
static MONITORING: AtomicUsize = AtomicUsize::new(0);
static CALLBACK: AtomicUsize = AtomicUsize::new(0);
static TOOL: AtomicU32 = AtomicU32::new(0);
static INSTRUCTION: AtomicU32 = AtomicU32::new(0);

/// Code objects given local INSTRUCTION events (each kept alive by the
/// window, so an address names one code object throughout).
const INSTRUMENTED_CAPACITY: usize = 1 << 10;
struct Instrumented(UnsafeCell<[usize; INSTRUMENTED_CAPACITY]>);
// SAFETY: touched by the watchdog only.
unsafe impl Sync for Instrumented {}
static INSTRUMENTED: Instrumented = Instrumented(UnsafeCell::new([0; INSTRUMENTED_CAPACITY]));
static INSTRUMENTED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// `PyMethodDef` of the INSTRUCTION callback (METH_FASTCALL).
#[repr(C)]
struct MethodDef {
    name: *const c_char,
    method: unsafe extern "C" fn(*mut c_void, *const *mut c_void, isize) -> *mut c_void,
    flags: i32,
    doc: *const c_char,
}
// SAFETY: immutable, pointers to static strings.
unsafe impl Sync for MethodDef {}
static CALLBACK_DEF: MethodDef = MethodDef {
    name: c"pydeep_instruction".as_ptr(),
    method: instruction,
    flags: 0x0080,
    doc: core::ptr::null(),
};

/// The INSTRUCTION callback: `(code, instruction_offset)`. Returns `None`
/// without a new reference: it is immortal on 3.12+, the only versions that
/// call this.
unsafe extern "C" fn instruction(
    _self: *mut c_void,
    args: *const *mut c_void,
    nargs: isize,
) -> *mut c_void {
    let Some(api) = crate::api() else {
        return core::ptr::null_mut();
    };
    let Some(ops) = &api.opcodes else {
        return core::ptr::null_mut();
    };
    if nargs >= 2 && PYDEEP_TRACER_V3.command.load(Ordering::Relaxed) == COMMAND_RUN {
        let code = *args;
        let offset = (ops.as_long)(*args.add(1));
        if offset < 0 {
            (api.err_clear)();
        } else {
            add(code as usize, offset as u32);
        }
    }
    ops.none_object
}

/// Opens the tool: a free tool id (4, 3, 5, then the rest), the callback
/// registered for INSTRUCTION. Nothing is instrumented yet.
pub(crate) unsafe fn start_monitoring(api: &Api, ops: &OpcodeApi) -> Result<(), &'static str> {
    let sys = (ops.import)(c"sys".as_ptr());
    if sys.is_null() {
        (api.err_clear)();
        return Err("--opcodes: sys cannot be imported");
    }
    let monitoring = (ops.get_attr)(sys, c"monitoring".as_ptr());
    (api.dec_ref)(sys);
    if monitoring.is_null() {
        (api.err_clear)();
        return Err("--opcodes: this interpreter has no sys.monitoring");
    }
    MONITORING.store(monitoring as usize, Ordering::Relaxed);
    let events = (ops.get_attr)(monitoring, c"events".as_ptr());
    let bit = if events.is_null() {
        -1
    } else {
        let value = (ops.get_attr)(events, c"INSTRUCTION".as_ptr());
        (api.dec_ref)(events);
        if value.is_null() {
            -1
        } else {
            let bit = (ops.as_long)(value);
            (api.dec_ref)(value);
            bit
        }
    };
    if bit <= 0 {
        (api.err_clear)();
        drop_monitoring(api);
        return Err("--opcodes: sys.monitoring.events.INSTRUCTION not found");
    }
    INSTRUCTION.store(bit as u32, Ordering::Relaxed);
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
        drop_monitoring(api);
        return Err("--opcodes: every sys.monitoring tool id is in use");
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
        drop_monitoring(api);
        return Err("--opcodes: sys.monitoring.use_tool_id failed");
    }
    (api.dec_ref)(used);
    TOOL.store(tool as u32 + 1, Ordering::Relaxed);
    PYDEEP_TRACER_V3
        .monitoring_tool
        .store(tool as u32 + 1, Ordering::Relaxed);
    let callback = (ops.new_cfunction)(
        &CALLBACK_DEF as *const MethodDef as *const c_void,
        core::ptr::null_mut(),
        core::ptr::null_mut(),
    );
    if callback.is_null() {
        (api.err_clear)();
        stop_monitoring(api, ops);
        return Err("--opcodes: the callback could not be made");
    }
    CALLBACK.store(callback as usize, Ordering::Relaxed);
    let registered = (ops.call_method)(
        monitoring,
        c"register_callback".as_ptr(),
        c"iiO".as_ptr(),
        tool,
        bit as i32,
        callback,
    );
    if registered.is_null() {
        (api.err_clear)();
        stop_monitoring(api, ops);
        return Err("--opcodes: sys.monitoring.register_callback failed");
    }
    (api.dec_ref)(registered);
    Ok(())
}

unsafe fn drop_monitoring(api: &Api) {
    let monitoring = MONITORING.swap(0, Ordering::Relaxed) as *mut c_void;
    if !monitoring.is_null() {
        (api.dec_ref)(monitoring);
    }
}

/// The selected code objects not instrumented yet (a scan of the selection
/// table, without the GIL), at most `out.len()`; how many.
pub(crate) fn newly_selected(out: &mut [usize; 64]) -> usize {
    if TOOL.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let instrumented = INSTRUMENTED.0.get() as *const usize;
    let done = INSTRUMENTED_COUNT.load(Ordering::Relaxed);
    let mut found = 0;
    for entry in crate::SELECT.iter() {
        let entry = entry.load(Ordering::Relaxed);
        if entry & 0xf != SELECT_YES {
            continue;
        }
        let code = (entry & !0xf) as usize;
        // SAFETY: the first `done` slots are written (by the watchdog only).
        let known =
            (0..done.min(INSTRUMENTED_CAPACITY)).any(|i| unsafe { *instrumented.add(i) } == code);
        if !known && found < out.len() {
            if let Some(slot) = out.get_mut(found) {
                *slot = code;
            }
            found += 1;
        }
    }
    found
}

/// Gives `codes` local INSTRUCTION events (with the GIL held).
pub(crate) unsafe fn instrument(api: &Api, ops: &OpcodeApi, codes: &[usize]) {
    let tool = TOOL.load(Ordering::Relaxed);
    if tool == 0 {
        return;
    }
    let bit = INSTRUCTION.load(Ordering::Relaxed) as i32;
    let monitoring = MONITORING.load(Ordering::Relaxed) as *mut c_void;
    let table = INSTRUMENTED.0.get() as *mut usize;
    for &code in codes {
        let done = INSTRUMENTED_COUNT.load(Ordering::Relaxed);
        if done >= INSTRUMENTED_CAPACITY {
            lost();
            return;
        }
        let set = (ops.call_method)(
            monitoring,
            c"set_local_events".as_ptr(),
            c"iOi".as_ptr(),
            tool as i32 - 1,
            code as *mut c_void,
            bit,
        );
        if set.is_null() {
            (api.err_clear)();
            lost();
            continue;
        }
        (api.dec_ref)(set);
        *table.add(done) = code;
        INSTRUMENTED_COUNT.store(done + 1, Ordering::Relaxed);
        PYDEEP_TRACER_V3
            .counted_codes
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Closes the tool: local events off every instrumented code object, the
/// callback unregistered, the tool id freed.
unsafe fn stop_monitoring(api: &Api, ops: &OpcodeApi) {
    let tool = TOOL.swap(0, Ordering::Relaxed);
    let monitoring = MONITORING.load(Ordering::Relaxed) as *mut c_void;
    if tool != 0 && !monitoring.is_null() {
        let id = tool as i32 - 1;
        let table = INSTRUMENTED.0.get() as *mut usize;
        let done = INSTRUMENTED_COUNT.swap(0, Ordering::Relaxed);
        for i in 0..done.min(INSTRUMENTED_CAPACITY) {
            let code = *table.add(i) as *mut c_void;
            let unset = (ops.call_method)(
                monitoring,
                c"set_local_events".as_ptr(),
                c"iOi".as_ptr(),
                id,
                code,
                0i32,
            );
            settle(api, unset);
            *table.add(i) = 0;
        }
        let bit = INSTRUCTION.load(Ordering::Relaxed) as i32;
        let unregistered = (ops.call_method)(
            monitoring,
            c"register_callback".as_ptr(),
            c"iiO".as_ptr(),
            id,
            bit,
            ops.none_object,
        );
        settle(api, unregistered);
        let freed = (ops.call_method)(monitoring, c"free_tool_id".as_ptr(), c"i".as_ptr(), id);
        settle(api, freed);
    }
    let callback = CALLBACK.swap(0, Ordering::Relaxed) as *mut c_void;
    if !callback.is_null() {
        (api.dec_ref)(callback);
    }
    drop_monitoring(api);
}

/// Drops a call's result, or clears its error.
unsafe fn settle(api: &Api, result: *mut c_void) {
    if result.is_null() {
        (api.err_clear)();
    } else {
        (api.dec_ref)(result);
    }
}

/// At stop, with the GIL held: whatever this window set up for opcodes is
/// taken down (frames on 3.9-3.11, the tool on 3.12+).
pub(crate) unsafe fn stop(api: &Api) {
    if let Some(ops) = &api.opcodes {
        release_frames(api, ops);
        stop_monitoring(api, ops);
    }
}
