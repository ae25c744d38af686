//! A target's memory layout, built at attach from the CPython facts crate.
//!
//! `pydeep_cpython::semantics::semantics_for` is the only table from a
//! CPython minor version to how pydeep reads it (frame family, instruction
//! pointer, offsets source); this module turns it into the [`Layout`] of
//! one target, reading the target's own `_Py_DebugOffsets` on 3.13+.
//! Everything downstream (the walker, the object and code readers) works
//! from that [`Layout`] and never matches on the version.

pub mod builtins;
pub mod code;
pub mod objects;
pub mod tasks;

pub use pydeep_cpython::debug_offsets;
pub use pydeep_cpython::layouts::Offsets;
pub use pydeep_cpython::required::{
    CoreOffsets, FrameObjectOffsets, FramePointer, FrameRunning, InterpreterFrameOffsets,
    RefcountFields,
};
pub use pydeep_cpython::semantics::{
    semantics_for, FrameKind, GeneratorStates, InstructionPointer, OffsetsSource, PythonVersion,
    Semantics,
};

use crate::process::memory::RemoteMemory;
use debug_offsets::{supplement, DebugTable, TableFormat};
use pydeep_cpython::required::carry_constants;

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
    /// The offsets every version has, checked present at load: read these
    /// rather than their optional copies in `offsets`.
    pub core: CoreOffsets,
    /// Where a thread's innermost frame pointer is.
    pub frame_pointer: FramePointer,
    /// The `_PyInterpreterFrame` fields: `Some` exactly when
    /// `semantics.frame_kind` is [`FrameKind::InterpreterFrame`] (3.11+).
    pub interpreter_frames: Option<InterpreterFrameOffsets>,
    /// The `PyFrameObject` fields: `Some` exactly when
    /// `semantics.frame_kind` is [`FrameKind::FrameObject`] (3.9, 3.10).
    pub frame_objects: Option<FrameObjectOffsets>,
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
                read_debug_offsets(memory, runtime_address, format, version)?
            }
        };
        Layout::new(version.clone(), semantics, offsets)
    }

    /// The layout of `version` read with `semantics` from `offsets`, if
    /// they hold every field the version always has and the stack walker
    /// needs ([`LayoutError::MissingField`] names the first missing).
    pub fn new(
        version: PythonVersion,
        semantics: Semantics,
        offsets: Offsets,
    ) -> Result<Layout, LayoutError> {
        let missing = |field| LayoutError::MissingField {
            version: version.clone(),
            field,
        };
        let core = CoreOffsets::from_offsets(&offsets).map_err(missing)?;
        let frame_pointer = FramePointer::from_offsets(&offsets).map_err(missing)?;
        let (interpreter_frames, frame_objects) = match semantics.frame_kind {
            FrameKind::FrameObject => (
                None,
                Some(FrameObjectOffsets::from_offsets(&offsets).map_err(missing)?),
            ),
            FrameKind::InterpreterFrame => (
                Some(InterpreterFrameOffsets::from_offsets(&offsets).map_err(missing)?),
                None,
            ),
        };
        let layout = Layout {
            version,
            semantics,
            offsets,
            core,
            frame_pointer,
            interpreter_frames,
            frame_objects,
        };
        layout.check_required()?;
        Ok(layout)
    }

    /// The layout of CPython 3.`minor` (the GIL build) from `offsets`, with
    /// that version's own semantics: for tests and tools that know the
    /// version rather than read it from a process.
    pub fn of_version(minor: u32, offsets: Offsets) -> Result<Layout, LayoutError> {
        let version = PythonVersion {
            major: 3,
            minor,
            ..Default::default()
        };
        let Some(semantics) = semantics_for(3, minor) else {
            return Err(LayoutError::Unsupported(version));
        };
        Layout::new(version, semantics, offsets)
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
        let word = |at: u64| crate::process::memory::field_u64(header, at);
        match self.core.refcount {
            RefcountFields::Split {
                ob_ref_local,
                ob_ref_shared,
            } => {
                let local = crate::process::memory::field_u32(header, ob_ref_local);
                if local == u32::MAX {
                    return (i64::from(u32::MAX), true);
                }
                let shared = word(ob_ref_shared) as i64;
                (i64::from(local).wrapping_add(shared >> 2), false)
            }
            RefcountFields::Word { ob_refcnt } => {
                let refcount = word(ob_refcnt) as i64;
                let immortal =
                    self.semantics.objects.immortal_objects && (refcount as u32 as i32) < 0;
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

    /// Fails naming the first field of its frame family the stack walker
    /// cannot do without.
    pub fn check_required(&self) -> Result<(), LayoutError> {
        // The fields every version has are in `self.core`, the frame
        // pointer and the frame fields of each family in their own
        // fields, all checked when they were built.
        if self.semantics.frame_kind == FrameKind::FrameObject
            && self.offsets.code_co_code.is_none()
        {
            return Err(LayoutError::MissingField {
                version: self.version.clone(),
                field: "code.co_code",
            });
        }
        Ok(())
    }
}

/// Reads, validates and converts the target's table. For a version whose
/// headers were also available to the generator (3.13), fields the table
/// lacks (co_consts, dict internals, ...) are taken from the generated table
/// only if every field both provide agrees, i.e. the target's build has the
/// layout the headers describe.
fn read_debug_offsets(
    memory: &dyn RemoteMemory,
    runtime_address: u64,
    format: TableFormat,
    version: &PythonVersion,
) -> Result<Offsets, LayoutError> {
    let bad = |reason: String| LayoutError::BadDebugOffsets {
        version: version.clone(),
        reason,
    };
    let mut bytes = vec![0u8; format.byte_len()];
    memory
        .read(runtime_address, &mut bytes)
        .map_err(|e| bad(format!("reading _PyRuntime: {e}")))?;
    let table = DebugTable::parse(&bytes, format).map_err(bad)?;
    table.validate(version).map_err(bad)?;
    let mut offsets = table.to_offsets(version);
    supplement(&mut offsets);
    carry_constants(&mut offsets);
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pydeep_cpython::layouts;

    fn layout_of(offsets: Offsets, free_threaded: bool) -> Layout {
        Layout::new(
            PythonVersion {
                major: 3,
                minor: 13,
                free_threaded,
                ..Default::default()
            },
            semantics_for(3, 13).unwrap(),
            offsets,
        )
        .unwrap()
    }

    #[test]
    fn the_free_threaded_refcount_is_the_local_count_plus_the_shared_count_shifted() {
        let layout = layout_of(layouts::CPYTHON_3_13T, true);
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
        let layout = layout_of(layouts::CPYTHON_3_13, false);
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
            Layout::new(
                PythonVersion {
                    major: 3,
                    minor,
                    ..Default::default()
                },
                semantics,
                *table,
            )
            .unwrap();
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
            layouts::CPYTHON_3_9,
            layouts::CPYTHON_3_10,
            layouts::CPYTHON_3_11,
            layouts::CPYTHON_3_12,
            layouts::CPYTHON_3_13,
        ];
        for table in layouts::ALL {
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
        for t in layouts::ALL {
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
