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
//! - 3.12+ (**monitoring**): pydeep's `sys.monitoring` tool (`monitoring.rs`,
//!   shared with the calls), whose INSTRUCTION callback is a C function
//!   wrapped as a `PyCFunction`; the watchdog gives each code object the
//!   agent selected local INSTRUCTION events, and at stop takes them off
//!   (the tool then unregisters its callbacks and frees its id).
//!
//! Everything here runs with the GIL held.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::abi::*;
use crate::monitoring::{self, MethodDef};
use crate::{Api, OpcodeApi, CONTROL};

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
    let c = &CONTROL;
    let address = if counting { table as u64 } else { 0 };
    c.counts_address.store(address, Ordering::Relaxed);
    c.counts_lost.store(0, Ordering::Relaxed);
    c.counted_codes.store(0, Ordering::Relaxed);
    c.monitoring_tool.store(0, Ordering::Relaxed);
    INSTRUCTION.store(0, Ordering::Relaxed);
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
    CONTROL.counts_lost.fetch_add(1, Ordering::Relaxed);
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
            CONTROL.counted_codes.fetch_add(1, Ordering::Relaxed);
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

/// The INSTRUCTION event's bit, once registered (0: the tool counts no
/// instructions).
static INSTRUCTION: AtomicU32 = AtomicU32::new(0);

/// Code objects given local INSTRUCTION events (each kept alive by the
/// window, so an address names one code object throughout).
const INSTRUMENTED_CAPACITY: usize = 1 << 10;
struct Instrumented(UnsafeCell<[usize; INSTRUMENTED_CAPACITY]>);
// SAFETY: touched by the watchdog only.
unsafe impl Sync for Instrumented {}
static INSTRUMENTED: Instrumented = Instrumented(UnsafeCell::new([0; INSTRUMENTED_CAPACITY]));
static INSTRUMENTED_COUNT: AtomicUsize = AtomicUsize::new(0);

static CALLBACK_DEF: MethodDef = MethodDef::fastcall(c"pydeep_instruction", instruction);

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
    if nargs >= 2 && CONTROL.command.load(Ordering::Relaxed) == COMMAND_RUN {
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

/// Opens the tool (`monitoring.rs`, shared with the calls) and registers
/// the INSTRUCTION callback. Nothing is instrumented yet.
pub(crate) unsafe fn start_monitoring(api: &Api, ops: &OpcodeApi) -> Result<(), &'static str> {
    monitoring::open(api, ops)
        .map_err(|_| "--opcodes: no sys.monitoring tool id could be taken")?;
    let bit = monitoring::register(api, ops, c"INSTRUCTION", &CALLBACK_DEF)
        .map_err(|_| "--opcodes: the INSTRUCTION callback could not be registered")?;
    INSTRUCTION.store(bit, Ordering::Relaxed);
    Ok(())
}

/// The selected code objects not instrumented yet (a scan of the selection
/// table, without the GIL), at most `out.len()`; how many.
pub(crate) fn newly_selected(out: &mut [usize; 64]) -> usize {
    if INSTRUCTION.load(Ordering::Relaxed) == 0 {
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
    let bit = INSTRUCTION.load(Ordering::Relaxed);
    if bit == 0 || monitoring::tool().is_none() {
        return;
    }
    let table = INSTRUMENTED.0.get() as *mut usize;
    for &code in codes {
        let done = INSTRUMENTED_COUNT.load(Ordering::Relaxed);
        if done >= INSTRUMENTED_CAPACITY {
            lost();
            return;
        }
        // Added to the tool's other local events on the code (3.13: the
        // calls' on an `__init__`, monitoring.rs).
        if !monitoring::change_local_events(api, ops, code as *mut c_void, bit, 0) {
            lost();
            continue;
        }
        *table.add(done) = code;
        INSTRUMENTED_COUNT.store(done + 1, Ordering::Relaxed);
        CONTROL.counted_codes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes the local INSTRUCTION events off every instrumented code object
/// (the tool itself is closed by `monitoring::close`).
unsafe fn stop_monitoring(api: &Api, ops: &OpcodeApi) {
    let bit = INSTRUCTION.swap(0, Ordering::Relaxed);
    let done = INSTRUMENTED_COUNT.swap(0, Ordering::Relaxed);
    if monitoring::tool().is_none() {
        return;
    }
    let table = INSTRUMENTED.0.get() as *mut usize;
    for i in 0..done.min(INSTRUMENTED_CAPACITY) {
        let code = *table.add(i) as *mut c_void;
        monitoring::change_local_events(api, ops, code, 0, bit);
        *table.add(i) = 0;
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
