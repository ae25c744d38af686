//! Turns recorded bytecode into instructions the way the recording's own
//! CPython `dis.get_instructions` would (offsets, opnames, arguments with
//! EXTENDED_ARG folded in, argreprs, jump targets), skipping inline caches.
//!
//! Bytes are untrusted: a truncated or garbage array yields garbage
//! instructions, never a panic.

use std::collections::BTreeMap;

use super::code::Code;
use pydeep_cpython::dialect::Dialect;
use pydeep_cpython::opcodes::{opcodes_for, Opcodes};

/// Which bytecode to disassemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The bytecode as it was in memory: on 3.11+ specialized instructions
    /// appear under their own names (`dis.get_instructions(adaptive=True)`).
    Adaptive,
    /// `co_code`: specializations undone (`adaptive=False`).
    Deoptimized,
}

/// One instruction, as `dis.Instruction` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Byte offset in the bytecode.
    pub offset: u32,
    /// The opcode found (specialized on 3.11+ in the adaptive form).
    pub opcode: u8,
    /// Its name.
    pub opname: &'static str,
    /// The base opcode (`dis._deoptop`); equals `opcode` if not specialized.
    pub base_opcode: u8,
    /// The base opcode's name.
    pub base_opname: &'static str,
    /// The argument with EXTENDED_ARG prefixes folded in, if the opcode
    /// takes one.
    pub arg: Option<i64>,
    /// The argument as `dis` describes it ("x", "to 24", "NULL + print", ...).
    pub argrepr: String,
    /// The jump target, for jumps.
    pub jump_target: Option<u32>,
    /// 3.13+: label number of this instruction if it is a jump target.
    pub label: Option<u32>,
    /// Inline cache code units following the instruction (3.11+).
    pub caches: u32,
    /// The named fields of those caches with their current values, as
    /// `dis` shows them with `show_caches=True` (3.11+).
    pub cache_fields: Vec<CacheField>,
}

/// One field of an instruction's inline cache (`opcode._cache_format`):
/// specialization counters, type versions, dict key versions, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheField {
    /// Field name, e.g. "counter" or "func_version".
    pub name: String,
    /// Byte offset of the field's first code unit.
    pub offset: u32,
    /// Size in code units.
    pub size: u32,
    /// The field's bytes read as a little-endian integer (`dis` reads them
    /// with `int.from_bytes(data, sys.byteorder)` on the target's machine;
    /// pydeep targets are little-endian).
    pub value: u64,
}

impl Instruction {
    /// True if the instruction found was a specialization of its base opcode.
    pub fn is_specialized(&self) -> bool {
        self.opcode != self.base_opcode
    }

    /// One past the last byte of the instruction and its caches.
    pub fn end_offset(&self) -> u32 {
        self.offset + 2 + 2 * self.caches
    }
}

/// Why a code object could not be disassembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DisassembleError {
    /// No opcode table for the code object's CPython version.
    #[error("no opcode table for CPython {0}.{1} (pydeep knows {2})")]
    UnsupportedVersion(u32, u32, String),
}

/// The index of the instruction whose bytes (inline caches included) hold
/// byte `offset`: where a sample's `instruction_offset` belongs. On 3.12 a
/// frame stopped in a call can point at the call's last cache unit.
pub fn instruction_index_at(instructions: &[Instruction], offset: u32) -> Option<usize> {
    let index = instructions
        .partition_point(|i| i.offset <= offset)
        .checked_sub(1)?;
    (offset < instructions[index].end_offset()).then_some(index)
}

/// The opcode table of `code`'s version, or an error naming the known ones.
pub fn opcodes_of(code: &Code) -> Result<&'static Opcodes, DisassembleError> {
    let (major, minor) = code.version;
    opcodes_for(major, minor).ok_or_else(|| {
        let known: Vec<String> = pydeep_cpython::opcodes::all_opcodes()
            .iter()
            .map(|t| format!("{}.{}", t.table.version.0, t.table.version.1))
            .collect();
        DisassembleError::UnsupportedVersion(major, minor, known.join(", "))
    })
}

/// `bytecode` with every specialized opcode replaced by its base opcode and
/// every inline cache zeroed: what `co_code` returns (`_PyCode_GetCode`).
pub fn deoptimize(opcodes: &Opcodes, bytecode: &[u8]) -> Vec<u8> {
    let mut out = bytecode.to_vec();
    let mut index = 0;
    while index + 1 < out.len() {
        let base = opcodes.deopt(out[index]);
        out[index] = base;
        let caches = opcodes.caches(base) as usize;
        let cache_end = (index + 2 + 2 * caches).min(out.len());
        out[index + 2..cache_end].fill(0);
        index = cache_end;
    }
    out
}

/// One raw instruction of the structural walk (`dis._unpack_opargs`).
struct RawInstruction {
    offset: u32,
    base: u8,
    arg: Option<i64>,
    caches: u32,
}

/// Walks `code` like `dis._unpack_opargs`: folds EXTENDED_ARG prefixes into
/// the argument and skips inline caches.
fn unpack(opcodes: &Opcodes, dialect: &Dialect, code: &[u8]) -> Vec<RawInstruction> {
    // The oparg is a C int: 3.11+'s `dis` wraps it at 2**31 (_INT_OVERFLOW).
    const INT_OVERFLOW: i64 = 1 << 31;
    let extended_arg = opcodes.table.extended_arg;
    let mut out = Vec::with_capacity(code.len() / 2);
    let mut pending: i64 = 0;
    let mut index = 0usize;
    while index + 1 < code.len() {
        let base = opcodes.deopt(code[index]);
        let caches = opcodes.caches(base);
        let arg = if opcodes.has_arg(base) {
            let arg = i64::from(code[index + 1]) | pending;
            pending = if base == extended_arg {
                arg.wrapping_shl(8)
            } else {
                0
            };
            if dialect.localsplus && pending >= INT_OVERFLOW {
                pending -= 2 * INT_OVERFLOW;
            }
            Some(arg)
        } else {
            if dialect.reset_extended_arg {
                pending = 0;
            }
            None
        };
        out.push(RawInstruction {
            offset: index as u32,
            base,
            arg,
            caches,
        });
        index += 2 + 2 * caches as usize;
    }
    out
}

/// Disassembles `code` in the given form.
pub fn disassemble(code: &Code, form: Form) -> Result<Vec<Instruction>, DisassembleError> {
    let opcodes = opcodes_of(code)?;
    let dialect = Dialect::for_version(code.version.0, code.version.1);
    let deoptimized = if code.deoptimized.is_empty() {
        deoptimize(opcodes, &code.bytecode)
    } else {
        code.deoptimized.clone()
    };
    let shown: &[u8] = match form {
        Form::Adaptive => &code.bytecode,
        Form::Deoptimized => &deoptimized,
    };
    // 3.13's dis walks co_code for structure and arguments and takes only
    // the opcode from the adaptive array (ENTER_EXECUTOR and INSTRUMENTED_*
    // replace opcodes there); earlier versions walk the shown array.
    let structure: &[u8] = if dialect.walk_deoptimized {
        &deoptimized
    } else {
        shown
    };
    let raw = unpack(opcodes, &dialect, structure);
    let resolver = Resolver {
        code,
        opcodes,
        dialect,
    };
    let labels = if dialect.jump_labels {
        let mut targets: Vec<u32> = raw
            .iter()
            .filter_map(|r| resolver.jump_target(r.base, r.arg?, r.offset, r.caches))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        targets
            .into_iter()
            .enumerate()
            .map(|(i, offset)| (offset, i as u32 + 1))
            .collect()
    } else {
        BTreeMap::new()
    };
    let instructions = raw
        .iter()
        .map(|r| {
            let opcode = shown.get(r.offset as usize).copied().unwrap_or(r.base);
            let base = opcodes.deopt(opcode);
            let (argrepr, jump_target) = match r.arg {
                Some(arg) => resolver.describe(base, arg, r.offset, r.caches, &labels),
                None => (String::new(), None),
            };
            Instruction {
                offset: r.offset,
                opcode,
                opname: opcodes.name(opcode),
                base_opcode: base,
                base_opname: opcodes.name(base),
                arg: r.arg,
                argrepr,
                jump_target,
                label: labels.get(&r.offset).copied(),
                caches: r.caches,
                cache_fields: cache_fields(opcodes, base, r.offset, shown),
            }
        })
        .collect();
    Ok(instructions)
}

/// The cache fields of the instruction at `offset` with base opcode `base`,
/// read from `code` (missing bytes read as 0; at most 8 bytes per value).
fn cache_fields(opcodes: &Opcodes, base: u8, offset: u32, code: &[u8]) -> Vec<CacheField> {
    let Some(format) = opcodes.table.cache_format.get(opcodes.name(base)) else {
        return Vec::new();
    };
    let mut field_offset = offset + 2;
    format
        .iter()
        .map(|(name, size)| {
            let start = field_offset as usize;
            let bytes = (2 * *size as usize).min(8);
            let value = (0..bytes).fold(0u64, |value, i| {
                let byte = code.get(start + i).copied().unwrap_or(0);
                value | u64::from(byte) << (8 * i)
            });
            let field = CacheField {
                name: name.clone(),
                offset: field_offset,
                size: *size,
                value,
            };
            field_offset = field_offset.saturating_add(2 * size);
            field
        })
        .collect()
}

/// Resolves arguments against one code object's names and constants.
struct Resolver<'a> {
    code: &'a Code,
    opcodes: &'static Opcodes,
    dialect: Dialect,
}

fn lookup(list: &[String], index: i64) -> String {
    usize::try_from(index)
        .ok()
        .and_then(|i| list.get(i))
        .cloned()
        .unwrap_or_else(|| format!("<{index}?>"))
}

impl Resolver<'_> {
    fn is(&self, base: u8, name: &str) -> bool {
        self.opcodes.opcode(name) == Some(base)
    }

    /// The target of a jump (`_get_jump_target`), or `None` for other
    /// instructions.
    fn jump_target(&self, base: u8, arg: i64, offset: u32, caches: u32) -> Option<u32> {
        let unit = self.dialect.jump_unit;
        let target = if self.opcodes.has_jabs(base) {
            arg.wrapping_mul(unit)
        } else if self.opcodes.has_jrel(base) || self.opcodes.has_jump(base) {
            let signed = if self.opcodes.is_backward_jump(base) {
                -arg
            } else {
                arg
            };
            let skip = if self.dialect.jump_skips_caches {
                2 * i64::from(caches)
            } else {
                0
            };
            i64::from(offset) + 2 + signed.wrapping_mul(unit) + skip
        } else {
            return None;
        };
        u32::try_from(target).ok()
    }

    fn name(&self, index: i64) -> String {
        lookup(&self.code.names, index)
    }

    /// A local, cell or free variable argument.
    fn variable(&self, base: u8, index: i64) -> String {
        if self.dialect.localsplus {
            return lookup(&self.code.localsplus, index);
        }
        if self.opcodes.has_local(base) {
            return lookup(&self.code.varnames, index);
        }
        let cells: Vec<String> = self
            .code
            .cellvars
            .iter()
            .chain(&self.code.freevars)
            .cloned()
            .collect();
        lookup(&cells, index)
    }

    /// (argrepr, jump target) of an instruction with an argument, following
    /// the `if deop in hasconst: ... elif ...` chain of `dis`.
    fn describe(
        &self,
        base: u8,
        arg: i64,
        offset: u32,
        caches: u32,
        labels: &BTreeMap<u32, u32>,
    ) -> (String, Option<u32>) {
        let opcodes = self.opcodes;
        let dialect = &self.dialect;
        let flags = |names: &[String]| -> String {
            names
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 63 && arg & (1 << i) != 0)
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if opcodes.has_const(base) {
            if dialect.const_only_load_const && !self.is(base, "LOAD_CONST") {
                return (String::new(), None);
            }
            return (lookup(&self.code.consts, arg), None);
        }
        if opcodes.has_name(base) {
            let global = self.is(base, "LOAD_GLOBAL");
            let attr = self.is(base, "LOAD_ATTR");
            let super_attr = self.is(base, "LOAD_SUPER_ATTR");
            if dialect.import_name_flags && self.is(base, "IMPORT_NAME") {
                let name = self.name(arg >> 2);
                let text = match arg & 3 {
                    _ if name.is_empty() => name,
                    1 | 3 => format!("{name} + lazy"),
                    2 => format!("{name} + eager"),
                    _ => name,
                };
                return (text, None);
            }
            let text = match (dialect.global_null_bit, dialect.attr_null_bit) {
                (Some(style), _) if global => {
                    let name = self.name(arg >> 1);
                    if arg & 1 != 0 {
                        style.apply(&name, "NULL")
                    } else {
                        name
                    }
                }
                (_, Some(style)) if attr || super_attr => {
                    let name = self.name(if attr { arg >> 1 } else { arg >> 2 });
                    if arg & 1 != 0 {
                        style.apply(&name, "NULL|self")
                    } else {
                        name
                    }
                }
                _ => self.name(arg),
            };
            return (text, None);
        }
        if let Some(target) = self.jump_target(base, arg, offset, caches) {
            let text = if opcodes.has_jabs(base) && !dialect.absolute_jumps_resolved {
                String::new()
            } else if let Some(label) = labels.get(&target) {
                let preposition = if dialect.end_async_for_from && self.is(base, "END_ASYNC_FOR") {
                    "from"
                } else {
                    "to"
                };
                format!("{preposition} L{label}")
            } else {
                format!("to {target}")
            };
            return (text, Some(target));
        }
        let pair = [
            "LOAD_FAST_LOAD_FAST",
            "LOAD_FAST_BORROW_LOAD_FAST_BORROW",
            "STORE_FAST_LOAD_FAST",
            "STORE_FAST_STORE_FAST",
        ];
        if dialect.packed_local_pairs && pair.iter().any(|name| self.is(base, name)) {
            let first = self.variable(base, arg >> 4);
            let second = self.variable(base, arg & 15);
            return (format!("{first}, {second}"), None);
        }
        if opcodes.has_local(base) || opcodes.has_free(base) {
            return (self.variable(base, arg), None);
        }
        if opcodes.has_compare(base) {
            let shift = dialect.compare_shift;
            let operator = lookup(&opcodes.table.cmp_op, arg >> shift);
            if dialect.compare_bool_bit && arg & 16 != 0 {
                return (format!("bool({operator})"), None);
            }
            return (operator, None);
        }
        let converters = &opcodes.table.format_value_converters;
        if self.is(base, "FORMAT_VALUE") {
            let mut text = lookup(converters, arg & 3);
            if arg & 4 != 0 {
                if !text.is_empty() {
                    text.push_str(", ");
                }
                text.push_str("with format");
            }
            return (text, None);
        }
        if self.is(base, "CONVERT_VALUE") {
            return (lookup(converters, arg), None);
        }
        if self.is(base, "MAKE_FUNCTION") || self.is(base, "SET_FUNCTION_ATTRIBUTE") {
            return (flags(&opcodes.table.function_flags), None);
        }
        if self.is(base, "BINARY_OP") {
            return (lookup(&opcodes.table.nb_ops, arg), None);
        }
        if self.is(base, "CALL_INTRINSIC_1") {
            return (lookup(&opcodes.table.intrinsic1, arg), None);
        }
        if self.is(base, "CALL_INTRINSIC_2") {
            return (lookup(&opcodes.table.intrinsic2, arg), None);
        }
        if self.is(base, "LOAD_COMMON_CONSTANT") {
            return (lookup(&opcodes.table.common_constants, arg), None);
        }
        if self.is(base, "LOAD_SPECIAL") {
            return (lookup(&opcodes.table.special_method_names, arg), None);
        }
        if dialect.describes_is_and_contains {
            let negated = arg != 0;
            if self.is(base, "IS_OP") {
                return ((if negated { "is not" } else { "is" }).to_string(), None);
            }
            if self.is(base, "CONTAINS_OP") {
                return ((if negated { "not in" } else { "in" }).to_string(), None);
            }
        }
        (String::new(), None)
    }
}
