//! CPython versions and their memory layouts, in one place.
//!
//! [`semantics_for`] is the only table from a CPython minor version to how
//! pydeep reads it: which frame family, what the instruction pointer means,
//! and where the offsets come from (a generated table for 3.9–3.12, the
//! target's own `_Py_DebugOffsets` for 3.13+). Everything downstream (the
//! walker, the object and code readers) works from the resulting [`Layout`]
//! and never matches on the version.

pub mod builtins;
pub mod code;
pub mod debug_offsets;
#[rustfmt::skip]
#[allow(clippy::all)]
pub mod generated;
pub mod objects;
pub mod tasks;

pub use generated::Offsets;

use crate::memory::RemoteMemory;

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
    /// A table generated from the version's headers (agent/tools).
    Generated(&'static Offsets),
    /// The target's own `_Py_DebugOffsets`, parsed with this format.
    DebugOffsets(debug_offsets::TableFormat),
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
    /// False for versions written from headers but never run here.
    pub tested: bool,
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
    use debug_offsets::TableFormat;
    use InstructionPointer::*;
    let frame_object = |instruction, table| Semantics {
        frame_kind: FrameKind::FrameObject,
        instruction,
        executable_tag_mask: 0,
        shim_owner_from: None,
        owned_by_generator: 1,
        generator_states: None,
        offsets: OffsetsSource::Generated(table),
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
    let interpreter_frame = |instruction, shim, tag, states, offsets, tested| Semantics {
        frame_kind: FrameKind::InterpreterFrame,
        instruction,
        executable_tag_mask: tag,
        shim_owner_from: shim,
        owned_by_generator: 1,
        generator_states: Some(states),
        offsets,
        tested,
    };
    if major != 3 {
        return None;
    }
    Some(match minor {
        9 => frame_object(LastiBytes, &generated::CPYTHON_3_9),
        10 => frame_object(LastiCodeUnits, &generated::CPYTHON_3_10),
        11 => interpreter_frame(
            PrevInstr,
            None,
            0,
            states_3_11,
            OffsetsSource::Generated(&generated::CPYTHON_3_11),
            true,
        ),
        12 => interpreter_frame(
            PrevInstr,
            Some(3),
            0,
            states_3_11,
            OffsetsSource::Generated(&generated::CPYTHON_3_12),
            true,
        ),
        13 => interpreter_frame(
            InstrPtr,
            Some(3),
            0,
            states_3_13,
            OffsetsSource::DebugOffsets(TableFormat::V3_13),
            true,
        ),
        14 => interpreter_frame(
            InstrPtr,
            Some(3),
            3,
            states_3_13,
            OffsetsSource::DebugOffsets(TableFormat::V3_14),
            false,
        ),
        15 => interpreter_frame(
            InstrPtr,
            Some(3),
            3,
            states_3_15,
            OffsetsSource::DebugOffsets(TableFormat::V3_15),
            false,
        ),
        _ => return None,
    })
}

/// Everything needed to read one target: its version, how that version is
/// read, and the offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The target's version.
    pub version: PythonVersion,
    /// How the version is read.
    pub semantics: Semantics,
    /// Offsets and sizes (`None` where the field does not exist or is not
    /// known for this target).
    pub offsets: Offsets,
}

/// Why no layout could be built for a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No table or debug-offsets format for this version.
    #[error("CPython {0} is not supported (pydeep reads 3.9 to 3.15)")]
    Unsupported(PythonVersion),
    /// A free-threaded build of a version without `_Py_DebugOffsets`
    /// (there is none before 3.13).
    #[error("free-threaded CPython {0} is not supported")]
    FreeThreaded(PythonVersion),
    /// `_Py_DebugOffsets` in the target is missing or fails validation.
    #[error("CPython {version}: the target's _Py_DebugOffsets table is unusable: {reason}")]
    BadDebugOffsets {
        /// The version detected.
        version: PythonVersion,
        /// What was wrong.
        reason: String,
    },
    /// A field the walker needs is absent from the offsets.
    #[error("CPython {version}: offset of {field} unknown")]
    MissingField {
        /// The version.
        version: PythonVersion,
        /// The field.
        field: &'static str,
    },
}

impl Layout {
    /// Builds the layout of a target of `version` whose `_PyRuntime` is at
    /// `runtime_address` (read for 3.13+, where the offsets live there).
    pub fn load(
        version: &PythonVersion,
        memory: &dyn RemoteMemory,
        runtime_address: u64,
    ) -> Result<Layout, LayoutError> {
        let semantics = semantics_for(version.major, version.minor)
            .ok_or_else(|| LayoutError::Unsupported(version.clone()))?;
        // A free-threaded build is only read through its own debug table
        // (3.13t+): the generated tables describe default builds.
        if version.free_threaded && !matches!(semantics.offsets, OffsetsSource::DebugOffsets(_)) {
            return Err(LayoutError::FreeThreaded(version.clone()));
        }
        let offsets = match semantics.offsets {
            OffsetsSource::Generated(table) => *table,
            OffsetsSource::DebugOffsets(format) => {
                debug_offsets::read(memory, runtime_address, format, version)?
            }
        };
        let layout = Layout {
            version: version.clone(),
            semantics,
            offsets,
        };
        layout.check_required()?;
        Ok(layout)
    }

    /// `Py_REFCNT` of an object from a copy of its header (`header` starts
    /// at the object and reaches at least `ob_type`), and whether the
    /// object is immortal (PEP 683, 3.12+). Include/object.h `_Py_REFCNT`:
    ///
    /// * default builds: `ob_refcnt`; immortal when its low 32 bits are at
    ///   or above 2**31 (`_Py_IMMORTAL_REFCNT` is UINT_MAX in 3.12/3.13,
    ///   3 << 30 initially in 3.14), which increments never reach;
    /// * free-threaded builds: the owning thread's `ob_ref_local` (32 bits)
    ///   plus the shared count `ob_ref_shared >> _Py_REF_SHARED_SHIFT` (2;
    ///   its low two bits are flags, and it may be negative while another
    ///   thread's decrements are not merged yet); immortal when
    ///   `ob_ref_local` is UINT32_MAX, reported as `_Py_IMMORTAL_REFCNT`.
    pub fn refcount(&self, header: &[u8]) -> (i64, bool) {
        let o = &self.offsets;
        let word = |at: u64| crate::memory::field_u64(header, at);
        match (o.object_ob_ref_local, o.object_ob_ref_shared) {
            (Some(local_at), Some(shared_at)) => {
                let local = crate::memory::field_u32(header, local_at);
                if local == u32::MAX {
                    return (i64::from(u32::MAX), true);
                }
                let shared = word(shared_at) as i64;
                (i64::from(local).wrapping_add(shared >> 2), false)
            }
            _ => {
                let refcount = word(o.object_ob_refcnt.unwrap_or(0)) as i64;
                let immortal = self.version.minor >= 12 && (refcount as u32 as i32) < 0;
                (refcount, immortal)
            }
        }
    }

    /// Whether GC-tracked objects are linked in the collector's generation
    /// lists (`PyGC_Head` before each object). Free-threaded builds have
    /// no `PyGC_Head`: their collector visits mimalloc's heaps instead.
    pub fn has_gc_lists(&self) -> bool {
        !self.offsets.free_threaded
    }

    /// Fails naming the first field the stack walker cannot do without.
    pub fn check_required(&self) -> Result<(), LayoutError> {
        let o = &self.offsets;
        let mut required: Vec<(&'static str, Option<u64>)> = vec![
            ("runtime.interpreters_head", o.runtime_interpreters_head),
            ("interpreter.next", o.interpreter_next),
            ("interpreter.threads_head", o.interpreter_threads_head),
            ("thread.next", o.thread_next),
            ("thread.thread_id", o.thread_thread_id),
            ("code.co_filename", o.code_co_filename),
            ("code.co_name", o.code_co_name),
            ("code.co_firstlineno", o.code_co_firstlineno),
            ("object.ob_type", o.object_ob_type),
        ];
        match self.semantics.frame_kind {
            FrameKind::FrameObject => required.extend([
                ("thread.frame", o.thread_frame),
                ("frame.f_back", o.frame_object_f_back),
                ("frame.f_code", o.frame_object_f_code),
                ("frame.f_lasti", o.frame_object_f_lasti),
                ("code.co_code", o.code_co_code),
            ]),
            FrameKind::InterpreterFrame => required.extend([
                ("interpreter_frame.size", o.interpreter_frame_size),
                ("interpreter_frame.previous", o.interpreter_frame_previous),
                (
                    "interpreter_frame.f_executable",
                    o.interpreter_frame_f_executable
                        .or(o.interpreter_frame_f_code),
                ),
                (
                    "interpreter_frame.instr_ptr",
                    o.interpreter_frame_instr_ptr
                        .or(o.interpreter_frame_prev_instr),
                ),
                ("interpreter_frame.owner", o.interpreter_frame_owner),
                ("code.co_code_adaptive", o.code_co_code_adaptive),
                (
                    "thread.current_frame",
                    o.thread_current_frame.or(o.thread_cframe),
                ),
            ]),
        }
        for (field, value) in required {
            if value.is_none() {
                return Err(LayoutError::MissingField {
                    version: self.version.clone(),
                    field,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claimed_version_has_semantics_and_no_other_does() {
        // The claimed versions are the facts crate's list: one list for
        // the agent, the viewer's opcode tables and the line tables.
        for &(major, minor) in pydeep_cpython::VERSIONS {
            assert!(semantics_for(major, minor).is_some(), "3.{minor}");
        }
        for minor in 0..40 {
            assert_eq!(
                semantics_for(3, minor).is_some(),
                pydeep_cpython::VERSIONS.contains(&(3, minor)),
                "3.{minor}"
            );
        }
        assert!(semantics_for(3, 8).is_none());
        assert!(semantics_for(3, 16).is_none());
        assert!(semantics_for(2, 7).is_none());
    }

    fn layout_of(offsets: Offsets, free_threaded: bool) -> Layout {
        Layout {
            version: PythonVersion {
                major: 3,
                minor: 13,
                free_threaded,
                ..Default::default()
            },
            semantics: semantics_for(3, 13).unwrap(),
            offsets,
        }
    }

    #[test]
    fn the_free_threaded_refcount_is_the_local_count_plus_the_shared_count_shifted() {
        let layout = layout_of(generated::CPYTHON_3_13T, true);
        let mut header = [0u8; 32];
        header[12..16].copy_from_slice(&3u32.to_le_bytes());
        // Shared count 5 with the "maybe weakref" flag in its low two bits.
        header[16..24].copy_from_slice(&((5i64 << 2) | 1).to_le_bytes());
        assert_eq!(layout.refcount(&header), (8, false));
        // Unmerged decrements from other threads: a negative shared count.
        header[16..24].copy_from_slice(&(-2i64 << 2).to_le_bytes());
        assert_eq!(layout.refcount(&header), (1, false));
        header[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(layout.refcount(&header), (i64::from(u32::MAX), true));
        // A truncated header reads as zeros, never panics.
        assert_eq!(layout.refcount(&header[..4]), (0, false));
    }

    #[test]
    fn the_default_refcount_is_ob_refcnt_and_immortal_from_bit_31() {
        let layout = layout_of(generated::CPYTHON_3_13, false);
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(layout.refcount(&header), (7, false));
        header[..8].copy_from_slice(&u64::from(u32::MAX).to_le_bytes());
        assert!(layout.refcount(&header).1);
    }

    #[test]
    fn generated_tables_match_the_version_they_serve() {
        for minor in 9..=12 {
            let semantics = semantics_for(3, minor).unwrap();
            let OffsetsSource::Generated(table) = semantics.offsets else {
                panic!("3.{minor} should use a generated table");
            };
            assert_eq!((table.version.0, table.version.1), (3, minor));
            let layout = Layout {
                version: PythonVersion {
                    major: 3,
                    minor,
                    ..Default::default()
                },
                semantics,
                offsets: *table,
            };
            layout.check_required().unwrap();
        }
    }

    /// Fields CPython itself declares less aligned in some builds, each
    /// checked against the target's memory. `gc_state_generations`: from
    /// 3.13.5, `PyGC_Head` is `Py_ALIGNED(4)` on its typedef
    /// (Include/internal/pycore_gc.h), which GCC takes as an alignment of
    /// 4, so the generations follow `debug` at offset 20; in a running
    /// 3.13.5 the thresholds `gc.get_threshold()` gives lie 16 bytes after
    /// heads at 20, 44, 68, and gc_heads finds the heads there by shape.
    const LOWER_ALIGNED: &[&str] = &["gc_state_generations"];

    #[test]
    fn generated_offsets_are_aligned_and_plausible_in_every_table() {
        // The reference: the default builds of 3.9 to 3.13.0 (pyenv's),
        // none of whose structs CPython declared with a lowered alignment.
        // A field 8-aligned in every one of them is a word (or holds
        // words); in any other table it must stay 8-aligned, or be one
        // CPython lowered (LOWER_ALIGNED, 4-aligned at least): a generator
        // or header mistake otherwise.
        let reference = [
            generated::CPYTHON_3_9,
            generated::CPYTHON_3_10,
            generated::CPYTHON_3_11,
            generated::CPYTHON_3_12,
            generated::CPYTHON_3_13,
        ];
        for table in generated::ALL {
            let label = format!(
                "{}.{}.{}{}",
                table.version.0,
                table.version.1,
                table.version.2,
                if table.free_threaded { "t" } else { "" }
            );
            for (index, (name, value)) in table.fields().into_iter().enumerate() {
                let Some(value) = value else { continue };
                assert!(value < 1 << 20, "{label}: {name} = {value} is implausible");
                let word = reference
                    .iter()
                    .all(|r| r.fields()[index].1.is_some_and(|v| v.is_multiple_of(8)));
                if word && !value.is_multiple_of(8) {
                    assert!(
                        LOWER_ALIGNED.contains(&name) && value.is_multiple_of(4),
                        "{label}: {name} = {value}, a word 8-aligned in 3.9-3.13.0"
                    );
                }
            }
        }
    }

    #[test]
    fn the_lower_aligned_gc_generations_leave_room_before_collecting() {
        for t in generated::ALL {
            let (Some(at), Some(size), Some(collecting)) = (
                t.gc_state_generations,
                t.gc_generation_size,
                t.gc_state_collecting,
            ) else {
                continue;
            };
            assert!(at.is_multiple_of(4) && at + 3 * size <= collecting, "{t:?}");
        }
    }
}
