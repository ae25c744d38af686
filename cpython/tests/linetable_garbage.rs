//! The line-table decoders read bytes from another process's memory: on any
//! bytes at all they must return (no panic, no endless loop) and stay within
//! the bounds the table and the bytecode length imply.

use proptest::prelude::*;
use pydeep_cpython::linetable::{
    line_for_offset, line_ranges, position_for_offset, positions, LineIndex,
};
use pydeep_format::proto::LineTableKind;

const KINDS: [LineTableKind; 4] = [
    LineTableKind::LineTableUnspecified,
    LineTableKind::LineTableLnotab,
    LineTableKind::LineTable310,
    LineTableKind::LineTableLocations,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn garbage_tables_decode_without_panicking_and_stay_bounded(
        table in proptest::collection::vec(any::<u8>(), 0..300),
        first_line in any::<u32>(),
        code_len in 0u32..4096,
        offset in any::<u32>(),
    ) {
        for kind in KINDS {
            let ranges = line_ranges(kind, first_line, &table, code_len);
            prop_assert!(ranges.len() <= table.len() + 1);
            for range in &ranges {
                prop_assert!(range.start < range.end);
                prop_assert!(range.end <= code_len);
            }
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start);
            }
            let all = positions(kind, first_line, &table, code_len);
            prop_assert!(all.len() <= (code_len / 2) as usize);
            let line = line_for_offset(kind, first_line, &table, offset);
            let index = LineIndex::new(kind, first_line, &table);
            prop_assert_eq!(index.line(offset), line);
            prop_assert_eq!(
                index.position(offset),
                position_for_offset(kind, first_line, &table, offset)
            );
        }
    }

    #[test]
    fn positions_agree_with_line_for_offset_on_every_code_unit(
        table in proptest::collection::vec(any::<u8>(), 0..200),
        first_line in 0u32..100_000,
        code_len in 0u32..2048,
    ) {
        for kind in KINDS {
            let all = positions(kind, first_line, &table, code_len);
            for (unit, position) in all.iter().enumerate() {
                let offset = unit as u32 * 2;
                prop_assert_eq!(line_for_offset(kind, first_line, &table, offset), position.line);
            }
        }
    }
}
