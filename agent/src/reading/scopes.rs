//! The scopes of a paused thread's frames: every frame with its address,
//! and each frame's fast locals, cell and free variables (the LEGB view's
//! local and enclosing parts) and its module globals.
//!
//! The stack walker reports (code, instruction) pairs only; a snapshot
//! also needs each frame's address to read its `localsplus` array, so the
//! chain is followed here once more, with the walker's rules for skipping
//! shim and not-yet-started frames. Meant for a paused target: no torn-read
//! check.

use std::collections::HashSet;

use crate::process::memory::{field_u64, field_u8, read_u64, read_vec, RemoteMemory};
use crate::reading::cpython::code::CodeObject;
use crate::reading::cpython::objects::ObjectError;
use crate::reading::cpython::{FrameKind, FramePointer, InstructionPointer, Layout};
use crate::reading::objects::Objects;

/// Most variables read from one frame.
const MAX_LOCALS: usize = 65_536;

/// `co_localspluskinds` bits (Include/internal/pycore_code.h, 3.11+).
const CO_FAST_HIDDEN: u8 = 0x10;
const CO_FAST_LOCAL: u8 = 0x20;
const CO_FAST_CELL: u8 = 0x40;
const CO_FAST_FREE: u8 = 0x80;
/// `co_flags` bits for `*args` and `**kwargs` (Include/cpython/code.h).
const CO_VARARGS: u32 = 0x04;
const CO_VARKEYWORDS: u32 = 0x08;

/// One frame of a paused thread, with where its variables are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Address of the frame (`PyFrameObject` or `_PyInterpreterFrame`).
    pub address: u64,
    /// Its code object.
    pub code: u64,
    /// Byte offset of the instruction (as `frame.f_lasti` reports).
    pub instruction_offset: u32,
    /// Its globals dict.
    pub globals: u64,
    /// Address of its `localsplus` array.
    pub localsplus: u64,
    /// The frame belongs to a generator or coroutine.
    pub is_generator: bool,
}

/// How a variable is bound in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A fast local (arguments included).
    Local,
    /// A local captured by an inner function: the frame holds a cell.
    Cell,
    /// A variable of an enclosing function, reached through a cell of the
    /// closure.
    Free,
    /// A module global.
    Global,
}

/// One variable of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// How it is bound.
    pub binding: Binding,
    /// It is a parameter of the function.
    pub is_argument: bool,
    /// The object bound (0 if unbound).
    pub value: u64,
    /// The cell holding it, for cell and free variables (0 otherwise).
    pub cell: u64,
}

/// Address of the pointer to a thread's current frame.
fn current_frame_pointer(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    thread_state: u64,
) -> Option<u64> {
    match layout.frame_pointer {
        FramePointer::InThreadState(at) => Some(thread_state + at),
        FramePointer::ThroughCFrame {
            cframe,
            current_frame,
        } => {
            let cframe = read_u64(memory, thread_state + cframe).ok()?;
            (cframe != 0).then(|| cframe + current_frame)
        }
    }
}

/// The frames of the thread whose `PyThreadState` is at `thread_state`,
/// innermost first, at most `max_depth`; the walk stops at anything
/// implausible.
pub fn thread_frames(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    thread_state: u64,
    max_depth: usize,
) -> Vec<FrameRef> {
    thread_frames_whole(memory, layout, thread_state, max_depth).0
}

/// [`thread_frames`], and whether the walk was cut short (deeper than
/// `max_depth`, or the chain broke off: an unreadable or implausible frame,
/// a cycle) rather than reaching the thread's first frame.
pub fn thread_frames_whole(
    memory: &dyn RemoteMemory,
    layout: &Layout,
    thread_state: u64,
    max_depth: usize,
) -> (Vec<FrameRef>, bool) {
    let mut out = Vec::new();
    let Some(pointer) = current_frame_pointer(memory, layout, thread_state) else {
        // No frame at all (3.11/3.12: no cframe yet).
        return (out, false);
    };
    let Ok(mut address) = read_u64(memory, pointer) else {
        return (out, true);
    };
    let o = &layout.offsets;
    let s = &layout.semantics;
    let mut seen = HashSet::new();
    let mut budget = max_depth.saturating_mul(2) + 16;
    while address != 0 && out.len() < max_depth && budget > 0 {
        budget -= 1;
        if !address.is_multiple_of(8) || !seen.insert(address) {
            break;
        }
        let Ok(header) = read_vec(memory, address, 128, 128) else {
            break;
        };
        match s.frame_kind {
            FrameKind::FrameObject => {
                let Some(frames) = layout.frame_objects else {
                    break;
                };
                let (back, code_at, lasti_at, locals_at) =
                    (frames.back, frames.code, frames.lasti, frames.localsplus);
                let lasti = crate::process::memory::field_u32(&header, lasti_at) as i32;
                let offset = match s.instruction {
                    InstructionPointer::LastiCodeUnits => lasti.saturating_mul(2),
                    _ => lasti,
                };
                out.push(FrameRef {
                    address,
                    code: field_u64(&header, code_at),
                    instruction_offset: offset.max(0) as u32,
                    globals: o
                        .frame_object_f_globals
                        .map_or(0, |at| field_u64(&header, at)),
                    localsplus: address + locals_at,
                    is_generator: field_u64(&header, frames.gen) != 0,
                });
                address = field_u64(&header, back);
            }
            FrameKind::InterpreterFrame => {
                let Some(frames) = layout.interpreter_frames else {
                    break;
                };
                let (previous_at, code_at, instr_at, owner_at) = (
                    frames.previous,
                    frames.executable,
                    frames.instruction,
                    frames.owner,
                );
                let owner = field_u8(&header, owner_at);
                let code = field_u64(&header, code_at) & !s.executable_tag_mask;
                let previous = field_u64(&header, previous_at);
                if owner > 4 {
                    break;
                }
                // Shims (3.12+ entry frames) and frames whose first
                // instruction has not run are skipped, as the walker and
                // sys._current_frames do.
                let is_shim = s.shim_owner_from.is_some_and(|from| owner >= from);
                let instr = field_u64(&header, instr_at);
                let offset = instr.wrapping_sub(code.wrapping_add(frames.code_adaptive)) as i64;
                if !is_shim && code != 0 && (0..=i64::from(i32::MAX)).contains(&offset) {
                    out.push(FrameRef {
                        address,
                        code,
                        instruction_offset: offset as u32,
                        globals: o
                            .interpreter_frame_f_globals
                            .map_or(0, |at| field_u64(&header, at)),
                        localsplus: address + frames.localsplus,
                        is_generator: owner == s.owned_by_generator,
                    });
                }
                address = previous;
            }
        }
    }
    let cut = address != 0;
    (out, cut)
}

/// What a frame's `localsplus` array holds, by its code object: each
/// slot's name and kind, and how many leading slots are parameters.
/// Immutable (code objects never change): readers of many frames read it
/// once per code object, from the code object's header and name tuples
/// only (not its bytecode, line table or constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalsLayout {
    /// Name and `co_localspluskinds` bits of each slot, in order.
    pub slots: Vec<(String, u8)>,
    /// Parameters: positional, keyword-only, `*args`, `**kwargs`.
    pub arguments: usize,
}

/// The [`LocalsLayout`] of the code object at `code`.
pub fn locals_layout(objects: &Objects<'_>, code: u64) -> Result<LocalsLayout, ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let header_len = c.code_size.clamp(64, 1024) as usize;
    let header = read_vec(objects.memory(), code, header_len, 1024)?;
    let pointer = |field: Option<u64>| field.map_or(0, |at| field_u64(&header, at));
    let int =
        |field: Option<u64>| field.map_or(0, |at| crate::process::memory::field_u32(&header, at));
    let names = |field: Option<u64>| -> Result<Vec<String>, ObjectError> {
        match pointer(field) {
            0 => Ok(Vec::new()),
            tuple => objects.reader.string_tuple(tuple),
        }
    };
    let slots: Vec<(String, u8)> = match o.code_co_localsplusnames {
        Some(_) => {
            let kinds = match pointer(o.code_co_localspluskinds) {
                0 => Vec::new(),
                bytes => objects.reader.bytes(bytes, MAX_LOCALS)?,
            };
            names(o.code_co_localsplusnames)?
                .into_iter()
                .zip(kinds)
                .collect()
        }
        // 3.9/3.10: f_localsplus holds co_varnames, then co_cellvars,
        // then co_freevars (Objects/frameobject.c).
        None => names(o.code_co_varnames)?
            .into_iter()
            .map(|n| (n, CO_FAST_LOCAL))
            .chain(
                names(o.code_co_cellvars)?
                    .into_iter()
                    .map(|n| (n, CO_FAST_CELL)),
            )
            .chain(
                names(o.code_co_freevars)?
                    .into_iter()
                    .map(|n| (n, CO_FAST_FREE)),
            )
            .collect(),
    };
    if slots.len() > MAX_LOCALS {
        return Err(ObjectError::Invalid {
            address: code,
            expected: "code object",
            detail: format!("{} locals", slots.len()),
        });
    }
    let flags = int(o.code_co_flags);
    let arguments = int(o.code_co_argcount) as usize
        + int(o.code_co_kwonlyargcount) as usize
        + usize::from(flags & CO_VARARGS != 0)
        + usize::from(flags & CO_VARKEYWORDS != 0);
    Ok(LocalsLayout { slots, arguments })
}

/// The [`LocalsLayout`] of an already read code object.
fn code_locals_layout(
    objects: &Objects<'_>,
    code: &CodeObject,
) -> Result<LocalsLayout, ObjectError> {
    let o = &objects.layout().offsets;
    let slots = match o.code_co_localsplusnames {
        Some(at) if !code.localspluskinds.is_empty() => {
            let names = objects
                .reader
                .string_tuple(read_u64(objects.memory(), code.address + at)?)?;
            names
                .into_iter()
                .zip(code.localspluskinds.iter().copied())
                .collect()
        }
        _ => code
            .varnames
            .iter()
            .map(|n| (n.clone(), CO_FAST_LOCAL))
            .chain(code.cellvars.iter().map(|n| (n.clone(), CO_FAST_CELL)))
            .chain(code.freevars.iter().map(|n| (n.clone(), CO_FAST_FREE)))
            .collect(),
    };
    let arguments = code.argcount as usize
        + code.kwonlyargcount as usize
        + usize::from(code.flags & CO_VARARGS != 0)
        + usize::from(code.flags & CO_VARKEYWORDS != 0);
    Ok(LocalsLayout { slots, arguments })
}

/// The fast locals, cell and free variables of `frame` (whose code object
/// is `code`), in `localsplus` order. Unbound variables have value 0.
pub fn frame_variables(
    objects: &Objects<'_>,
    frame: &FrameRef,
    code: &CodeObject,
) -> Result<Vec<Variable>, ObjectError> {
    frame_variables_in(objects, frame, &code_locals_layout(objects, code)?)
}

/// [`frame_variables`] with the code object's [`LocalsLayout`] already
/// read: reads the frame's slots and the cells among them.
pub fn frame_variables_in(
    objects: &Objects<'_>,
    frame: &FrameRef,
    layout: &LocalsLayout,
) -> Result<Vec<Variable>, ObjectError> {
    let slots = &layout.slots;
    if slots.len() > MAX_LOCALS {
        return Err(ObjectError::Invalid {
            address: frame.code,
            expected: "code object",
            detail: format!("{} locals", slots.len()),
        });
    }
    let bytes = read_vec(
        objects.memory(),
        frame.localsplus,
        slots.len() * 8,
        MAX_LOCALS * 8,
    )?;
    let tag_mask = !objects.layout().semantics.executable_tag_mask;
    let arguments = layout.arguments;
    let mut out = Vec::new();
    for (index, (name, kind)) in slots.iter().enumerate() {
        let kind = *kind;
        if kind & CO_FAST_HIDDEN != 0 {
            continue;
        }
        // 3.14 stores _PyStackRefs whose low bits are tags.
        let slot = field_u64(&bytes, index as u64 * 8) & tag_mask;
        let binding = if kind & CO_FAST_FREE != 0 {
            Binding::Free
        } else if kind & CO_FAST_CELL != 0 {
            Binding::Cell
        } else {
            Binding::Local
        };
        let (value, cell) = if binding != Binding::Local && slot != 0 && is_cell(objects, slot) {
            (objects.cell_contents(slot).unwrap_or(0), slot)
        } else {
            // 3.11+: before MAKE_CELL runs, a cell slot holds the
            // argument itself.
            (slot, 0)
        };
        let is_argument = if objects.layout().semantics.frame_kind == FrameKind::FrameObject {
            binding == Binding::Local && index < arguments
        } else {
            index < arguments
        };
        out.push(Variable {
            name: name.clone(),
            binding,
            is_argument,
            value,
            cell,
        });
    }
    Ok(out)
}

fn is_cell(objects: &Objects<'_>, address: u64) -> bool {
    objects
        .info(address)
        .is_ok_and(|info| info.type_info.kind == crate::reading::objects::Kind::Cell)
}

/// The module globals of a frame (its `f_globals`), `__builtins__` left
/// out, at most `limit`.
pub fn frame_globals(
    objects: &Objects<'_>,
    globals: u64,
    limit: usize,
) -> Result<Vec<Variable>, ObjectError> {
    if globals == 0 {
        return Ok(Vec::new());
    }
    let (items, _) = objects.dict_items(globals, limit.saturating_add(1))?;
    let mut out = Vec::new();
    for (key, value) in items {
        let Ok(name) = objects.reader.unicode(key) else {
            continue;
        };
        if name == "__builtins__" {
            continue;
        }
        out.push(Variable {
            name,
            binding: Binding::Global,
            is_argument: false,
            value,
            cell: 0,
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
