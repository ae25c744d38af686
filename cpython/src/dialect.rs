//! The rules of each version's `dis` that are code rather than data: how a
//! jump argument becomes a target, how the low bits of LOAD_GLOBAL and
//! LOAD_ATTR print, how COMPARE_OP packs its operator. Everything
//! version-dependent in the disassembler is decided here, once.

/// How `dis` prints the "push NULL" bit of LOAD_GLOBAL / LOAD_ATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullStyle {
    /// "NULL + name" (3.11, 3.12: `argrepr = "NULL + " + argrepr`).
    Prefix,
    /// "name + NULL" (3.13+: `argrepr = f"{argrepr} + NULL"`).
    Suffix,
}

/// One version's `dis` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// Bytes per unit of a jump argument: 1 on 3.9 (jumps count bytes), 2
    /// from 3.10 on (jumps count code units; 3.10's `dis` multiplies by 2).
    pub jump_unit: i64,
    /// 3.9's `dis` resolves relative jumps only; absolute jumps keep an
    /// empty argrepr. From 3.10 both print "to N".
    pub absolute_jumps_resolved: bool,
    /// 3.12+: a relative jump counts from the end of the instruction's inline
    /// caches (`argval += 2 * caches` in 3.12's `dis`).
    pub jump_skips_caches: bool,
    /// 3.13+: jump targets print as labels "to L3", numbered in offset order
    /// (`_make_labels_map` in 3.13's `dis`).
    pub jump_labels: bool,
    /// 3.10+: an instruction without argument resets a pending EXTENDED_ARG.
    pub reset_extended_arg: bool,
    /// 3.11+: local, cell and free arguments index co_localsplusnames
    /// (`_varname_from_oparg`); before, locals index co_varnames and
    /// cells/frees index co_cellvars + co_freevars.
    pub localsplus: bool,
    /// 3.11 only: `_get_const_value` resolves LOAD_CONST alone, so KW_NAMES
    /// prints no argrepr.
    pub const_only_load_const: bool,
    /// 3.11+: LOAD_GLOBAL's argument is `name << 1 | push_null`.
    pub global_null_bit: Option<NullStyle>,
    /// 3.12+: LOAD_ATTR's argument is `name << 1 | method`, LOAD_SUPER_ATTR's
    /// `name << 2 | flags`.
    pub attr_null_bit: Option<NullStyle>,
    /// COMPARE_OP's operator is `cmp_op[arg >> compare_shift]` (0 before
    /// 3.12, 4 on 3.12, 5 on 3.13+).
    pub compare_shift: u32,
    /// 3.13+: COMPARE_OP bit 16 asks for a bool result: "bool(<)".
    pub compare_bool_bit: bool,
    /// 3.13+: `dis` walks the deoptimized code for structure and arguments,
    /// taking only the opcode from the adaptive code.
    pub walk_deoptimized: bool,
    /// 3.13+: LOAD_FAST_LOAD_FAST and friends pack two locals in 4 bits each.
    pub packed_local_pairs: bool,
    /// 3.14+: IS_OP and CONTAINS_OP print their sense ("is not", "in").
    pub describes_is_and_contains: bool,
    /// 3.14+: END_ASYNC_FOR's target prints as "from L3" (it jumps back to
    /// the loop's SEND), every other jump as "to L3".
    pub end_async_for_from: bool,
    /// 3.15+: IMPORT_NAME's argument is `name << 2 | flags`, flag 1 "lazy"
    /// and flag 2 "eager" (PEP 810 lazy imports).
    pub import_name_flags: bool,
}

impl Dialect {
    /// The rules of CPython `major.minor`'s `dis`. Versions newer than the
    /// newest known keep the newest rules.
    pub fn for_version(major: u32, minor: u32) -> Dialect {
        let at_least = |m: u32| (major, minor) >= (3, m);
        Dialect {
            jump_unit: if at_least(10) { 2 } else { 1 },
            absolute_jumps_resolved: at_least(10),
            jump_skips_caches: at_least(12),
            jump_labels: at_least(13),
            reset_extended_arg: at_least(10),
            localsplus: at_least(11),
            const_only_load_const: (major, minor) == (3, 11),
            global_null_bit: if at_least(13) {
                Some(NullStyle::Suffix)
            } else if at_least(11) {
                Some(NullStyle::Prefix)
            } else {
                None
            },
            attr_null_bit: if at_least(13) {
                Some(NullStyle::Suffix)
            } else if at_least(12) {
                Some(NullStyle::Prefix)
            } else {
                None
            },
            compare_shift: if at_least(13) {
                5
            } else if at_least(12) {
                4
            } else {
                0
            },
            compare_bool_bit: at_least(13),
            walk_deoptimized: at_least(13),
            packed_local_pairs: at_least(13),
            describes_is_and_contains: at_least(14),
            end_async_for_from: at_least(14),
            import_name_flags: at_least(15),
        }
    }
}

impl NullStyle {
    /// Applies the style: `marker` is "NULL" or "NULL|self".
    pub fn apply(self, name: &str, marker: &str) -> String {
        match self {
            NullStyle::Prefix => format!("{marker} + {name}"),
            NullStyle::Suffix => format!("{name} + {marker}"),
        }
    }
}
