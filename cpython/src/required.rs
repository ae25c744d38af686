//! The offsets and constants every version pydeep reads has, validated
//! once into non-optional fields ([`CoreOffsets`]): a target missing one
//! is refused at attach, rather than read with a guessed value.
//!
//! Versions read only through `_Py_DebugOffsets` with no generated table
//! (3.14, 3.15) lack what that table does not list: the ABI constants
//! (type flags, the int digit format, set and dict entry sizes, the `str`
//! state bits, the pre-header's flags and size), where the reference count
//! is, and the head of `PyTypeObject` past `tp_flags`. [`carry_constants`]
//! takes them from the newest generated table of the same build flavour,
//! and a test checks that every generated table of a flavour (3.9 to 3.13)
//! agrees on each of them (on the flags from the version that added them,
//! on the `PyDictValues` prefix from 3.13, which added it).
//! Those versions are marked untested (`Semantics::tested`); a header
//! change there would show as a refused or misread object, never as a
//! crash (every read is bounded).

use crate::layouts::{self, Offsets};

/// Offsets and constants every CPython version pydeep reads has (3.9+,
/// default and free-threaded builds). Version-dependent fields stay
/// optional in [`Offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreOffsets {
    /// `offsetof(PyObject, ob_type)`.
    pub object_ob_type: u64,
    /// `sizeof(PyTypeObject)`.
    pub type_size: u64,
    /// `offsetof(PyTypeObject, tp_flags)`.
    pub type_tp_flags: u64,
    /// `Py_TPFLAGS_HEAPTYPE`.
    pub tpflags_heaptype: u64,
    /// `Py_TPFLAGS_HAVE_GC`.
    pub tpflags_have_gc: u64,
    /// `Py_TPFLAGS_MANAGED_DICT` (3.11+), 0 where the version has none.
    pub tpflags_managed_dict: u64,
    /// The type flags whose instances carry two more words before the
    /// object (`_PyType_PreHeaderSize`): `Py_TPFLAGS_PREHEADER` (3.12+),
    /// 3.11's `Py_TPFLAGS_MANAGED_DICT`, 0 before 3.11.
    pub tpflags_preheader: u64,
    /// The GC part of the pre-header: `sizeof(PyGC_Head)`, 0 on
    /// free-threaded builds (which have none).
    pub object_gc_preheader_size: u64,
    /// Where an object's reference count is.
    pub refcount: RefcountFields,
    /// `offsetof(PyLongObject, ob_digit)`.
    pub long_ob_digit: u64,
    /// `sizeof(digit)`.
    pub long_digit_size: u64,
    /// `PyLong_SHIFT`.
    pub long_digit_bits: u64,
    /// `sizeof(setentry)`.
    pub set_entry_size: u64,
    /// `offsetof(setentry, key)`.
    pub set_entry_key: u64,
    /// `sizeof(PyCodeObject)`.
    pub code_size: u64,
    /// `sizeof(PyGC_Head)`.
    pub gc_head_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`.
    pub unicode_compact_size: u64,
    /// Bit of `PyASCIIObject.state` where `kind` starts.
    pub unicode_state_kind_shift: u64,
    /// Bit of `PyASCIIObject.state` holding `compact`.
    pub unicode_state_compact_shift: u64,
    /// Bit of `PyASCIIObject.state` holding `ascii`.
    pub unicode_state_ascii_shift: u64,
    /// `offsetof(PyDictKeysObject, dk_refcnt)`.
    pub dict_keys_dk_refcnt: u64,
    /// `sizeof(PyDictKeyEntry)`.
    pub dict_key_entry_size: u64,
    /// `T_OBJECT_EX` (`Py_T_OBJECT_EX`), the member type of `__slots__`.
    pub member_type_object_ex: u64,
    /// `offsetof(PyTypeObject, tp_basicsize)`.
    pub type_tp_basicsize: u64,
    /// `offsetof(PyTypeObject, tp_itemsize)`.
    pub type_tp_itemsize: u64,
    /// `offsetof(PyTypeObject, tp_dictoffset)`.
    pub type_tp_dictoffset: u64,
    /// `offsetof(PyTypeObject, tp_base)`.
    pub type_tp_base: u64,
    /// `offsetof(PyTypeObject, tp_members)`.
    pub type_tp_members: u64,
    /// `offsetof(_PyRuntimeState, interpreters.head)`.
    pub runtime_interpreters_head: u64,
    /// `offsetof(PyInterpreterState, threads.head)`.
    pub interpreter_threads_head: u64,
    /// `offsetof(PyThreadState, next)`.
    pub thread_next: u64,
    /// `offsetof(PyThreadState, thread_id)`.
    pub thread_thread_id: u64,
    /// `offsetof(PyCodeObject, co_filename)`.
    pub code_co_filename: u64,
    /// `offsetof(PyCodeObject, co_name)`.
    pub code_co_name: u64,
    /// `offsetof(PyCodeObject, co_firstlineno)`.
    pub code_co_firstlineno: u64,
    /// `offsetof(struct _gc_runtime_state, collecting)`.
    pub gc_state_collecting: u64,
    /// `offsetof(PyInterpreterState, next)`.
    pub interpreter_next: u64,
}

impl CoreOffsets {
    /// The core of `o`, or the name of the first field it lacks.
    pub fn from_offsets(o: &Offsets) -> Result<CoreOffsets, &'static str> {
        macro_rules! need {
            ($field:ident) => {
                o.$field.ok_or(stringify!($field))?
            };
        }
        Ok(CoreOffsets {
            object_ob_type: need!(object_ob_type),
            type_size: need!(type_size),
            type_tp_flags: need!(type_tp_flags),
            tpflags_heaptype: need!(tpflags_heaptype),
            tpflags_have_gc: need!(tpflags_have_gc),
            tpflags_managed_dict: need!(tpflags_managed_dict),
            tpflags_preheader: o
                .tpflags_preheader
                .or(o.tpflags_managed_dict)
                .ok_or("tpflags_preheader")?,
            object_gc_preheader_size: need!(object_gc_preheader_size),
            refcount: RefcountFields::from_offsets(o)?,
            long_ob_digit: need!(long_ob_digit),
            long_digit_size: need!(long_digit_size),
            long_digit_bits: need!(long_digit_bits),
            set_entry_size: need!(set_entry_size),
            set_entry_key: need!(set_entry_key),
            code_size: need!(code_size),
            gc_head_size: need!(gc_head_size),
            unicode_compact_size: need!(unicode_compact_size),
            unicode_state_kind_shift: need!(unicode_state_kind_shift),
            unicode_state_compact_shift: need!(unicode_state_compact_shift),
            unicode_state_ascii_shift: need!(unicode_state_ascii_shift),
            dict_keys_dk_refcnt: need!(dict_keys_dk_refcnt),
            dict_key_entry_size: need!(dict_key_entry_size),
            member_type_object_ex: need!(member_type_object_ex),
            type_tp_basicsize: need!(type_tp_basicsize),
            type_tp_itemsize: need!(type_tp_itemsize),
            type_tp_dictoffset: need!(type_tp_dictoffset),
            type_tp_base: need!(type_tp_base),
            type_tp_members: need!(type_tp_members),
            runtime_interpreters_head: need!(runtime_interpreters_head),
            interpreter_threads_head: need!(interpreter_threads_head),
            thread_next: need!(thread_next),
            thread_thread_id: need!(thread_thread_id),
            code_co_filename: need!(code_co_filename),
            code_co_name: need!(code_co_name),
            code_co_firstlineno: need!(code_co_firstlineno),
            gc_state_collecting: need!(gc_state_collecting),
            interpreter_next: need!(interpreter_next),
        })
    }
}

/// Where an object's reference count is (Include/object.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefcountFields {
    /// Default builds: the word `ob_refcnt`.
    Word {
        /// `offsetof(PyObject, ob_refcnt)`.
        ob_refcnt: u64,
    },
    /// Free-threaded builds: the owning thread's 32-bit `ob_ref_local`
    /// and the shared `ob_ref_shared`.
    Split {
        /// `offsetof(PyObject, ob_ref_local)`.
        ob_ref_local: u64,
        /// `offsetof(PyObject, ob_ref_shared)`.
        ob_ref_shared: u64,
    },
}

impl RefcountFields {
    /// Where `o` keeps it, or the name of the field missing.
    pub fn from_offsets(o: &Offsets) -> Result<RefcountFields, &'static str> {
        match (
            o.object_ob_ref_local,
            o.object_ob_ref_shared,
            o.object_ob_refcnt,
        ) {
            (Some(ob_ref_local), Some(ob_ref_shared), _) => Ok(RefcountFields::Split {
                ob_ref_local,
                ob_ref_shared,
            }),
            (_, _, Some(ob_refcnt)) => Ok(RefcountFields::Word { ob_refcnt }),
            _ => Err("object_ob_refcnt"),
        }
    }
}

/// Where a thread's innermost frame pointer is found from its
/// `PyThreadState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePointer {
    /// At this offset in the thread state: `frame` (3.9/3.10) or
    /// `current_frame` (3.13+).
    InThreadState(u64),
    /// 3.11/3.12: the thread state's `cframe` (at `cframe`) points at a
    /// `_PyCFrame` whose `current_frame` is at `current_frame`.
    ThroughCFrame {
        /// `offsetof(PyThreadState, cframe)`.
        cframe: u64,
        /// `offsetof(_PyCFrame, current_frame)`.
        current_frame: u64,
    },
}

impl FramePointer {
    /// Where `o` keeps it, or the name of the first field missing.
    pub fn from_offsets(o: &Offsets) -> Result<FramePointer, &'static str> {
        if let Some(at) = o.thread_current_frame.or(o.thread_frame) {
            return Ok(FramePointer::InThreadState(at));
        }
        let cframe = o.thread_cframe.ok_or("thread_current_frame")?;
        let current_frame = o.cframe_current_frame.ok_or("cframe_current_frame")?;
        Ok(FramePointer::ThroughCFrame {
            cframe,
            current_frame,
        })
    }
}

/// The `_PyInterpreterFrame` fields of the versions that have one (3.11+),
/// all present where any is. Where versions name a field differently, it
/// is chosen here, once: every reader of frames (the stack walker, scopes,
/// generators, sizes) takes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterFrameOffsets {
    /// `sizeof(_PyInterpreterFrame)`.
    pub size: u64,
    /// `offsetof(_PyInterpreterFrame, localsplus)`.
    pub localsplus: u64,
    /// `offsetof(PyCodeObject, co_code_adaptive)`: the inline bytecode
    /// the frame's instruction pointer points into.
    pub code_adaptive: u64,
    /// `offsetof(_PyInterpreterFrame, previous)`: the caller.
    pub previous: u64,
    /// The code object: `f_executable` (3.13+; a tagged reference from
    /// 3.14, `Semantics::executable_tag_mask`) or `f_code` (3.11/3.12).
    pub executable: u64,
    /// The instruction pointer: `instr_ptr` (3.13+) or `prev_instr`
    /// (3.11/3.12).
    pub instruction: u64,
    /// `offsetof(_PyInterpreterFrame, owner)` (one byte).
    pub owner: u64,
}

impl InterpreterFrameOffsets {
    /// The fields of `o`, or the name of the first missing.
    pub fn from_offsets(o: &Offsets) -> Result<InterpreterFrameOffsets, &'static str> {
        Ok(InterpreterFrameOffsets {
            size: o.interpreter_frame_size.ok_or("interpreter_frame_size")?,
            localsplus: o
                .interpreter_frame_localsplus
                .ok_or("interpreter_frame_localsplus")?,
            code_adaptive: o.code_co_code_adaptive.ok_or("code_co_code_adaptive")?,
            previous: o
                .interpreter_frame_previous
                .ok_or("interpreter_frame.previous")?,
            executable: o
                .interpreter_frame_f_executable
                .or(o.interpreter_frame_f_code)
                .ok_or("interpreter_frame.f_executable")?,
            instruction: o
                .interpreter_frame_instr_ptr
                .or(o.interpreter_frame_prev_instr)
                .ok_or("interpreter_frame.instr_ptr")?,
            owner: o.interpreter_frame_owner.ok_or("interpreter_frame.owner")?,
        })
    }

    /// Bytes of a frame's header that hold every field a walk reads
    /// (`previous`, the code, the instruction pointer, `owner`), not its
    /// locals and stack.
    pub fn header_len(&self) -> u64 {
        let len = self.previous.max(self.executable).max(self.instruction) + 8;
        len.max(self.owner + 1).min(self.size.max(self.owner + 1))
    }
}

/// The `PyFrameObject` fields of the versions whose frames are objects
/// (3.9, 3.10), all present where any is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameObjectOffsets {
    /// `offsetof(PyFrameObject, f_back)`: the caller.
    pub back: u64,
    /// `offsetof(PyFrameObject, f_code)`.
    pub code: u64,
    /// `offsetof(PyFrameObject, f_lasti)` (an `int`).
    pub lasti: u64,
    /// `offsetof(PyFrameObject, f_gen)`: the generator, if any.
    pub gen: u64,
    /// `offsetof(PyFrameObject, f_localsplus)`.
    pub localsplus: u64,
    /// The byte telling whether the frame runs.
    pub running: FrameRunning,
}

/// Where a frame object says it runs (it or a callee), one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRunning {
    /// 3.10's `f_state`: `FRAME_EXECUTING` (0) while it runs.
    StateExecutingIsZero(u64),
    /// 3.9's `f_executing`: non-zero while it runs.
    Executing(u64),
}

impl FrameRunning {
    /// The byte's offset.
    pub fn offset(self) -> u64 {
        match self {
            FrameRunning::StateExecutingIsZero(at) | FrameRunning::Executing(at) => at,
        }
    }

    /// Whether a frame whose byte at [`FrameRunning::offset`] is `byte`
    /// runs.
    pub fn runs(self, byte: u8) -> bool {
        match self {
            FrameRunning::StateExecutingIsZero(_) => byte == 0,
            FrameRunning::Executing(_) => byte != 0,
        }
    }
}

impl FrameObjectOffsets {
    /// The fields of `o`, or the name of the first missing.
    pub fn from_offsets(o: &Offsets) -> Result<FrameObjectOffsets, &'static str> {
        let running = match (o.frame_object_f_state, o.frame_object_f_executing) {
            (Some(at), _) => FrameRunning::StateExecutingIsZero(at),
            (None, Some(at)) => FrameRunning::Executing(at),
            (None, None) => return Err("frame.f_state"),
        };
        Ok(FrameObjectOffsets {
            back: o.frame_object_f_back.ok_or("frame.f_back")?,
            code: o.frame_object_f_code.ok_or("frame.f_code")?,
            lasti: o.frame_object_f_lasti.ok_or("frame.f_lasti")?,
            gen: o.frame_object_f_gen.ok_or("frame.f_gen")?,
            localsplus: o.frame_object_f_localsplus.ok_or("frame.f_localsplus")?,
            running,
        })
    }

    /// Bytes of a frame object that hold every field a walk reads.
    pub fn header_len(&self) -> u64 {
        self.back
            .max(self.code)
            .max(self.lasti)
            .max(self.gen)
            .max(self.running.offset())
            + 8
    }
}

/// The ABI constants and `PyTypeObject` fields `_Py_DebugOffsets` does
/// not list, as the newest
/// generated table of `free_threaded`'s flavour declares them (every
/// generated table of a flavour agrees on each: tested).
fn constants(free_threaded: bool) -> Offsets {
    let newest = layouts::ALL
        .iter()
        .rev()
        .find(|t| t.free_threaded == free_threaded)
        .unwrap_or(&layouts::CPYTHON_3_13);
    let mut c = layouts::EMPTY;
    c.tpflags_heaptype = newest.tpflags_heaptype;
    c.tpflags_have_gc = newest.tpflags_have_gc;
    c.tpflags_managed_dict = newest.tpflags_managed_dict;
    c.long_digit_size = newest.long_digit_size;
    c.long_digit_bits = newest.long_digit_bits;
    c.set_entry_size = newest.set_entry_size;
    c.set_entry_key = newest.set_entry_key;
    c.gc_head_size = newest.gc_head_size;
    c.unicode_state_kind_shift = newest.unicode_state_kind_shift;
    c.unicode_state_compact_shift = newest.unicode_state_compact_shift;
    c.unicode_state_ascii_shift = newest.unicode_state_ascii_shift;
    c.dict_keys_dk_refcnt = newest.dict_keys_dk_refcnt;
    c.dict_key_entry_size = newest.dict_key_entry_size;
    c.member_type_object_ex = newest.member_type_object_ex;
    c.tpflags_preheader = newest.tpflags_preheader;
    c.tpflags_inline_values = newest.tpflags_inline_values;
    c.object_gc_preheader_size = newest.object_gc_preheader_size;
    c.object_managed_dict_before = newest.object_managed_dict_before;
    c.dict_values_values = newest.dict_values_values;
    c.object_ob_refcnt = newest.object_ob_refcnt;
    c.object_ob_ref_local = newest.object_ob_ref_local;
    c.object_ob_ref_shared = newest.object_ob_ref_shared;
    c.type_tp_basicsize = newest.type_tp_basicsize;
    c.type_tp_itemsize = newest.type_tp_itemsize;
    c.type_tp_dictoffset = newest.type_tp_dictoffset;
    c.type_tp_base = newest.type_tp_base;
    c.type_tp_members = newest.type_tp_members;
    c
}

/// Completes the offsets of a target read through its `_Py_DebugOffsets`
/// (after [`crate::debug_offsets::supplement`], which leaves versions
/// without a generated table short): the ABI constants of its flavour,
/// and `sizeof(PyCompactUnicodeObject)`, which is `PyASCIIObject` plus
/// `utf8_length` and `utf8` in every version with that table (3.12+).
pub fn carry_constants(offsets: &mut Offsets) {
    offsets.fill_missing_from(&constants(offsets.free_threaded));
    if offsets.unicode_compact_size.is_none() {
        offsets.unicode_compact_size = offsets.unicode_ascii_size.map(|size| size + 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_table_has_the_core() {
        for table in layouts::ALL {
            CoreOffsets::from_offsets(table).unwrap_or_else(|field| {
                panic!("{:?}: no {field}", table.version);
            });
        }
    }

    #[test]
    fn every_generated_table_has_its_frame_pointer_and_frame_fields() {
        for table in layouts::ALL {
            let pointer = FramePointer::from_offsets(table).unwrap();
            assert_eq!(
                matches!(pointer, FramePointer::ThroughCFrame { .. }),
                matches!(table.version.1, 11 | 12),
                "{:?}",
                table.version
            );
            assert_eq!(
                InterpreterFrameOffsets::from_offsets(table).is_ok(),
                table.version.1 >= 11,
                "{:?}",
                table.version
            );
            assert_eq!(
                FrameObjectOffsets::from_offsets(table).is_ok(),
                table.version.1 < 11,
                "{:?}",
                table.version
            );
        }
    }

    #[test]
    fn the_carried_constants_are_those_of_every_table_of_the_flavour() {
        for free_threaded in [false, true] {
            let carried = constants(free_threaded);
            for table in layouts::ALL
                .iter()
                .filter(|t| t.free_threaded == free_threaded)
            {
                for ((name, ours), (_, theirs)) in carried.fields().into_iter().zip(table.fields())
                {
                    // Py_TPFLAGS_MANAGED_DICT came with 3.11 (0 before:
                    // no such flag); flags a table lacks came later.
                    // PyDictValues gained its 8-byte prefix in 3.13.
                    if name == "tpflags_managed_dict" && table.version.1 < 11 {
                        assert_eq!(theirs, Some(0));
                    } else if name == "dict_values_values" && table.version.1 < 13 {
                        assert!(matches!(theirs, None | Some(0)));
                    } else if ours.is_some() && theirs.is_some() {
                        assert_eq!(ours, theirs, "{name} in {:?}", table.version);
                    }
                }
            }
        }
    }

    #[test]
    fn a_debug_table_alone_is_completed_into_the_core() {
        // What to_offsets gives of a 3.13 table: the fields the table
        // names, none of the constants.
        for generated in [layouts::CPYTHON_3_13, layouts::CPYTHON_3_13T] {
            let mut o = layouts::EMPTY;
            o.version = (3, 14, 0);
            o.free_threaded = generated.free_threaded;
            o.object_ob_type = generated.object_ob_type;
            o.type_size = generated.type_size;
            o.type_tp_flags = generated.type_tp_flags;
            o.long_ob_digit = generated.long_ob_digit;
            o.code_size = generated.code_size;
            o.unicode_ascii_size = generated.unicode_ascii_size;
            o.gc_state_collecting = generated.gc_state_collecting;
            o.interpreter_next = generated.interpreter_next;
            o.runtime_interpreters_head = generated.runtime_interpreters_head;
            o.interpreter_threads_head = generated.interpreter_threads_head;
            o.thread_next = generated.thread_next;
            o.thread_thread_id = generated.thread_thread_id;
            o.code_co_filename = generated.code_co_filename;
            o.code_co_name = generated.code_co_name;
            o.code_co_firstlineno = generated.code_co_firstlineno;
            assert_eq!(CoreOffsets::from_offsets(&o), Err("tpflags_heaptype"));
            carry_constants(&mut o);
            assert_eq!(
                CoreOffsets::from_offsets(&o).unwrap(),
                CoreOffsets::from_offsets(&generated).unwrap()
            );
        }
    }
}
