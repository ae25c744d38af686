//! How pydeep reads each CPython minor version: [`semantics_for`] is the
//! only table from a version to its frame family, what its instruction
//! pointer means, its generator states, and where its offsets come from (a
//! table generated from its headers for 3.9–3.12, the target's own
//! `_Py_DebugOffsets` for 3.13+). The agent builds its `Layout` from this
//! and never matches on the version.

use crate::debug_offsets::TableFormat;
use crate::layouts::{self, Offsets};

/// A CPython version with its build flavour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PythonVersion {
    /// 3.
    pub major: u32,
    /// The minor version: 9 for 3.9.
    pub minor: u32,
    /// The patch (micro) version.
    pub patch: u32,
    /// Release level and serial: "" for a final release, "rc1", "a3", ...
    pub release: String,
    /// Built with `--disable-gil` (3.13t and later).
    pub free_threaded: bool,
    /// Built with `--with-pydebug`.
    pub debug_build: bool,
}

impl std::fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.major, self.minor, self.patch, self.release
        )?;
        if self.free_threaded {
            write!(f, " (free-threaded, no GIL)")?;
        }
        if self.debug_build {
            write!(f, " (debug build)")?;
        }
        Ok(())
    }
}

/// Which kind of frame a version keeps on its call stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// 3.9/3.10: heap `PyFrameObject`s chained by `f_back`.
    FrameObject,
    /// 3.11+: `_PyInterpreterFrame`s in per-thread data-stack chunks (or
    /// inside generator objects), chained by `previous`.
    InterpreterFrame,
}

/// What a frame's instruction field means, and how it becomes the byte
/// offset `frame.f_lasti` reports in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionPointer {
    /// 3.9: `f_lasti` is already a byte offset.
    LastiBytes,
    /// 3.10: `f_lasti` counts 2-byte code units (Objects/frameobject.c
    /// `frame_getlasti` multiplies by `sizeof(_Py_CODEUNIT)`).
    LastiCodeUnits,
    /// 3.11/3.12: `prev_instr` points at the code unit before the next
    /// instruction; `f_lasti` is `prev_instr - _PyCode_CODE(code)` in bytes.
    PrevInstr,
    /// 3.13+: `instr_ptr` points at the instruction executing (or about to
    /// begin); `f_lasti` is `instr_ptr - _PyCode_CODE(code)` in bytes.
    InstrPtr,
}

/// Where a version's offsets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetsSource {
    /// A table generated from the version's headers (cpython/tools).
    Generated(&'static Offsets),
    /// The target's own `_Py_DebugOffsets`, parsed with this format.
    DebugOffsets(TableFormat),
}

/// How pydeep reads one CPython minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Semantics {
    /// The frame family.
    pub frame_kind: FrameKind,
    /// What the frame's instruction field means.
    pub instruction: InstructionPointer,
    /// Low bits to clear from `f_executable` (3.14 made it a tagged
    /// `_PyStackRef`, pycore_stackref.h).
    pub executable_tag_mask: u64,
    /// Frames whose `owner` is at least this are interpreter shims (3.12's
    /// entry trampoline `FRAME_OWNED_BY_CSTACK`, 3.14's
    /// `FRAME_OWNED_BY_INTERPRETER`), not Python code.
    pub shim_owner_from: Option<u8>,
    /// `FRAME_OWNED_BY_GENERATOR`.
    pub owned_by_generator: u8,
    /// Values of a 3.11+ generator's `gi_frame_state` (None before 3.11,
    /// where the state comes from `gi_frame`).
    pub generator_states: Option<GeneratorStates>,
    /// Where the offsets come from.
    pub offsets: OffsetsSource,
    /// What the version's objects mean beyond their offsets.
    pub objects: ObjectRules,
    /// False for versions written from headers but never run here.
    pub tested: bool,
}

/// Rules of a version's objects that are not offsets: how `Py_REFCNT`
/// and `sys.getsizeof()` read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRules {
    /// PEP 683 immortal objects (3.12+): on a default build a refcount
    /// whose low 32 bits are at or above 2**31 marks an immortal object.
    pub immortal_objects: bool,
    /// `int.__sizeof__` counts at least one digit, zero keeping one
    /// (3.11+, Objects/longobject.c `int___sizeof__`); `|ob_size|` digits
    /// before.
    pub int_sizeof_counts_a_digit_for_zero: bool,
    /// `sys.getsizeof()` of a static type adds its metatype's GC
    /// pre-header: 3.11 and 3.12's `_PySys_GetSizeOf` does without asking
    /// `tp_is_gc` (3.9/3.10 ask it, which says no for static types; 3.13
    /// skips static types explicitly).
    pub static_type_sizeof_adds_preheader: bool,
    /// A code object holds its bytecode inline, a variable-size object
    /// whose `__sizeof__` is `tp_basicsize + ob_size * tp_itemsize`
    /// (3.11+); before, `co_code` is a separate bytes object and
    /// `__sizeof__` adds `co_cell2arg` and the opcache.
    pub code_holds_bytecode: bool,
}

/// The `PyFrameState` values a generator's `gi_frame_state` takes
/// (Include/internal/pycore_frame.h). They were renumbered twice: 3.13
/// added `FRAME_SUSPENDED_YIELD_FROM` below `FRAME_SUSPENDED`, 3.15 made
/// them all non-negative and dropped `FRAME_COMPLETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorStates {
    /// `FRAME_CREATED`.
    pub created: i8,
    /// `FRAME_SUSPENDED`.
    pub suspended: i8,
    /// `FRAME_SUSPENDED_YIELD_FROM` (3.13+): suspended inside `yield from`
    /// or `await`. Before 3.13 the resume instruction's oparg says so.
    pub suspended_yield_from: Option<i8>,
    /// `FRAME_EXECUTING`.
    pub executing: i8,
    /// Smallest finished value (`FRAME_COMPLETED`, 3.15 `FRAME_CLEARED`):
    /// at or above it `gi_frame` is None.
    pub finished_from: i8,
    /// 3.15: the awaited object is `stackpointer[-2]`
    /// (`_PyFrame_StackPeek(frame, 2)`; `_SEND_GEN_FRAME` leaves a NULL on
    /// top); 1 before.
    pub yield_from_depth: u8,
}

/// The one table from CPython minor version to how it is read.
pub fn semantics_for(major: u32, minor: u32) -> Option<Semantics> {
    use InstructionPointer::*;
    let rules = |immortal_objects, after_3_10, static_type_sizeof_adds_preheader| ObjectRules {
        immortal_objects,
        int_sizeof_counts_a_digit_for_zero: after_3_10,
        static_type_sizeof_adds_preheader,
        code_holds_bytecode: after_3_10,
    };
    let frame_object = |instruction, table| Semantics {
        frame_kind: FrameKind::FrameObject,
        instruction,
        executable_tag_mask: 0,
        shim_owner_from: None,
        owned_by_generator: 1,
        generator_states: None,
        offsets: OffsetsSource::Generated(table),
        objects: rules(false, false, false),
        tested: true,
    };
    // 3.11-3.14 share the negative numbering; 3.13 inserted
    // FRAME_SUSPENDED_YIELD_FROM (-1) below FRAME_EXECUTING.
    let states_3_11 = GeneratorStates {
        created: -2,
        suspended: -1,
        suspended_yield_from: None,
        executing: 0,
        finished_from: 1,
        yield_from_depth: 1,
    };
    let states_3_13 = GeneratorStates {
        created: -3,
        suspended: -2,
        suspended_yield_from: Some(-1),
        executing: 0,
        finished_from: 1,
        yield_from_depth: 1,
    };
    // 3.15: 0 created, 1 suspended, 2 suspended in yield from, 3 the same
    // locked by a free-threaded send, 4 executing, 5 cleared.
    let states_3_15 = GeneratorStates {
        created: 0,
        suspended: 1,
        suspended_yield_from: Some(2),
        executing: 4,
        finished_from: 5,
        yield_from_depth: 2,
    };
    let interpreter_frame = |instruction, shim, tag, states, offsets, objects, tested| Semantics {
        frame_kind: FrameKind::InterpreterFrame,
        instruction,
        executable_tag_mask: tag,
        shim_owner_from: shim,
        owned_by_generator: 1,
        generator_states: Some(states),
        offsets,
        objects,
        tested,
    };
    if major != 3 {
        return None;
    }
    Some(match minor {
        9 => frame_object(LastiBytes, &layouts::CPYTHON_3_9),
        10 => frame_object(LastiCodeUnits, &layouts::CPYTHON_3_10),
        11 => interpreter_frame(
            PrevInstr,
            None,
            0,
            states_3_11,
            OffsetsSource::Generated(&layouts::CPYTHON_3_11),
            rules(false, true, true),
            true,
        ),
        12 => interpreter_frame(
            PrevInstr,
            Some(3),
            0,
            states_3_11,
            OffsetsSource::Generated(&layouts::CPYTHON_3_12),
            rules(true, true, true),
            true,
        ),
        13 => interpreter_frame(
            InstrPtr,
            Some(3),
            0,
            states_3_13,
            OffsetsSource::DebugOffsets(TableFormat::V3_13),
            rules(true, true, false),
            true,
        ),
        14 => interpreter_frame(
            InstrPtr,
            Some(3),
            3,
            states_3_13,
            OffsetsSource::DebugOffsets(TableFormat::V3_14),
            rules(true, true, false),
            false,
        ),
        15 => interpreter_frame(
            InstrPtr,
            Some(3),
            3,
            states_3_15,
            OffsetsSource::DebugOffsets(TableFormat::V3_15),
            rules(true, true, false),
            false,
        ),
        _ => return None,
    })
}
