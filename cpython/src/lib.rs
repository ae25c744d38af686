//! CPython facts per minor version that need no process: how pydeep reads
//! a version's memory, how it encodes its line tables, its opcode tables,
//! and the rules of its `dis`.
//!
//! This crate is pure (no process access, no I/O): the agent, the viewer
//! and the tests look these facts up here rather than testing the version
//! themselves, so adding a CPython version starts with [`VERSIONS`] and
//! the tables below (notes/new-python-version.md lists the rest).
//!
//! * [`linetable`]: decoding of `co_lnotab` / `co_linetable` / the 3.11+
//!   location table, and [`line_table_kind`], which of them a version uses;
//! * [`opcodes`]: opcode tables, generated from each interpreter's own
//!   `opcode` and `dis` modules by `cpython/tools/gen_opcodes.py`;
//! * [`dialect`]: the version-dependent rules of `dis` that are code;
//! * [`semantics`]: the one table from a version to how its frames,
//!   generators and offsets are read ([`semantics::semantics_for`]);
//! * [`layouts`]: struct offsets generated from each version's headers by
//!   `cpython/tools/gen_layouts.sh` (3.9–3.12, and 3.13 to supplement);
//! * [`tasks`]: the layout of `_asyncio.Task` (`TaskObj`), private to
//!   its module so no generator takes it, written per version;
//! * [`required`]: the offsets every version has, validated once into
//!   non-optional fields ([`required::CoreOffsets`]);
//! * [`debug_offsets`]: the shapes of 3.13+'s `_Py_DebugOffsets`, parsed
//!   and validated from the bytes a target holds.
//!
//! Reading those bytes from a live target, and the `Layout` built from
//! them, is the agent's (`agent/src/cpython`).

pub mod debug_offsets;
#[rustfmt::skip]
#[allow(clippy::all)]
pub mod layouts;
pub mod dialect;
pub mod linetable;
pub mod opcodes;
pub mod required;
pub mod semantics;
pub mod tasks;

use pydeep_format::proto::LineTableKind;

/// Every CPython minor version pydeep claims to read, oldest first (3.14
/// and 3.15 from their headers and `_Py_DebugOffsets`, untested here).
pub const VERSIONS: &[(u32, u32)] = &[(3, 9), (3, 10), (3, 11), (3, 12), (3, 13), (3, 14), (3, 15)];

/// The line-table encoding of CPython `major.minor`'s code objects:
/// `co_lnotab` up to 3.9, PEP 626's `co_linetable` on 3.10, PEP 657's
/// location table from 3.11. `None` for a version pydeep does not claim.
pub fn line_table_kind(major: u32, minor: u32) -> Option<LineTableKind> {
    if !VERSIONS.contains(&(major, minor)) {
        return None;
    }
    Some(match minor {
        ..=9 => LineTableKind::LineTableLnotab,
        10 => LineTableKind::LineTable310,
        _ => LineTableKind::LineTableLocations,
    })
}

/// True if CPython `major.minor` predates every version pydeep claims (as
/// opposed to being newer than this pydeep knows).
pub fn older_than_supported(major: u32, minor: u32) -> bool {
    (major, minor) < VERSIONS[0]
}

/// True if CPython `major.minor`'s frames give a not-yet-started
/// generator an instruction offset of its own (3.11+: the frame lives in
/// the generator and points before its first instruction); before 3.11 a
/// created generator's `f_lasti` is -1.
pub fn created_generator_has_offset(major: u32, minor: u32) -> bool {
    (major, minor) >= (3, 11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claimed_version_has_every_table() {
        for &(major, minor) in VERSIONS {
            assert!(
                opcodes::opcodes_for(major, minor).is_some(),
                "3.{minor}: no opcode table"
            );
            assert!(
                line_table_kind(major, minor).is_some(),
                "3.{minor}: no line-table format"
            );
            assert!(
                semantics::semantics_for(major, minor).is_some(),
                "3.{minor}: no semantics"
            );
            let dialect = dialect::Dialect::for_version(major, minor);
            assert_eq!(dialect.jump_unit, if minor < 10 { 1 } else { 2 });
        }
        let tables: Vec<_> = opcodes::all_opcodes()
            .iter()
            .map(|t| t.table.version)
            .collect();
        assert_eq!(tables, VERSIONS, "a table for a version not claimed");
        for minor in 0..40 {
            assert_eq!(
                semantics::semantics_for(3, minor).is_some(),
                VERSIONS.contains(&(3, minor)),
                "3.{minor}: semantics for a version not claimed"
            );
        }
        assert!(semantics::semantics_for(2, 7).is_none());
        assert!(older_than_supported(3, 8) && older_than_supported(2, 7));
        assert!(!older_than_supported(3, 9) && !older_than_supported(3, 16));
        assert_eq!(line_table_kind(3, 8), None);
        assert_eq!(line_table_kind(3, 16), None);
    }
}
