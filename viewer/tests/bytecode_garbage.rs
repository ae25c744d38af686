//! Recorded code objects come from another process's memory: on any bytes,
//! names and kinds the disassembler and the listing must return (no panic),
//! with instructions in bounds and in order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use pydeep_cpython::opcodes::all_opcodes;
use pydeep_format::proto::{CodeObjectDef, PythonVersion};
use pydeep_view::bytecode::annotate::render_listing;
use pydeep_view::bytecode::disassemble::deoptimize;
use pydeep_view::bytecode::{disassemble, Code, Form};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn garbage_code_objects_disassemble_without_panicking(
        bytecode in proptest::collection::vec(any::<u8>(), 0..400),
        deoptimized in proptest::collection::vec(any::<u8>(), 0..40),
        line_table in proptest::collection::vec(any::<u8>(), 0..100),
        line_table_kind in 0i32..5,
        kinds in proptest::collection::vec(any::<u8>(), 0..12),
        name_count in 0usize..4,
        const_count in 0usize..4,
        heat_offsets in proptest::collection::vec(any::<u32>(), 0..5),
        first_line in any::<u32>(),
    ) {
        for opcodes in all_opcodes() {
            let (major, minor) = opcodes.table.version;
            let def = CodeObjectDef {
                bytecode: bytecode.clone(),
                bytecode_deoptimized: deoptimized.clone(),
                line_table: line_table.clone(),
                line_table_kind,
                first_line,
                names: (1..=name_count as u64).collect(),
                varnames: vec![1, 2],
                cellvars: vec![2],
                freevars: vec![3],
                localspluskinds: kinds.clone(),
                consts: (0..const_count).map(|i| format!("c{i}")).collect(),
                python_version: Some(PythonVersion { major, minor, ..Default::default() }),
                ..Default::default()
            };
            let code = Code::from_def(&def, |id| Some(format!("s{id}")), None);
            prop_assert_eq!(deoptimize(opcodes, &bytecode).len(), bytecode.len());
            for form in [Form::Adaptive, Form::Deoptimized] {
                let instructions = disassemble(&code, form).expect("a table exists");
                for pair in instructions.windows(2) {
                    prop_assert!(pair[0].offset < pair[1].offset);
                }
                let heat: BTreeMap<u32, u64> = heat_offsets.iter().map(|&o| (o, 1)).collect();
                let source = "def f():\n    é = 1\n";
                let text = render_listing(&code, &instructions, &heat, Some(source), 3, true);
                prop_assert!(!text.is_empty());
            }
        }
    }
}
