//! Call sites that block: is a frame stopped in a call to a C function
//! that waits (`time.sleep`, `select.select`, `lock.acquire`, ...)?
//!
//! Why the sampler asks: a thread that released the GIL is idle or not by
//! its kernel state (`R` in `/proc/PID/task/TID/stat`), but `R` also
//! covers a thread the kernel woke from its sleep that has not run yet
//! (it waits for a CPU) and one just back from the call that has not
//! retaken the GIL. On a loaded machine a loop of `time.sleep(0.005)` spends
//! a good part of each call that way, and the kernel cannot tell it from a
//! thread computing without the GIL: `/proc/.../syscall` and `wchan` say
//! "running" for any runnable task (`task_current_syscall`,
//! `get_wchan`, kernel/). The Python side can: the innermost frame stopped
//! at a call whose callable was loaded by the name of a waiting function.
//!
//! The callable is found the way the compiler laid out the value stack:
//! walking back from the call over the instructions that pushed its
//! arguments, each counted by what it pops and pushes (the NULL or `self`
//! a 3.11+ `LOAD_GLOBAL`/`LOAD_ATTR` pushes beside a callable, and a
//! 3.9/3.10 `LOAD_METHOD`'s second value, are counted as one slot with the
//! callable, on every version, so no version is named here). An instruction
//! this walk does not know, a jump inside the arguments, or a callable not
//! loaded by name gives "not known to block", the kernel's word stands.

use pydeep_view::bytecode::disassemble::{disassemble, instruction_index_at, Form, Instruction};
use pydeep_view::bytecode::Code;

use crate::reading::cpython::code::CodeObject;

/// Names of C functions and methods that wait (time, select, selectors'
/// polls, socket, locks, os waits, signals). A Python function of one of
/// these names never matches: calling it pushes its own frame, so its
/// caller is not the innermost frame.
pub const BLOCKING_NAMES: &[&str] = &[
    "sleep",
    "select",
    "poll",
    "epoll_wait",
    "control",
    "acquire",
    "accept",
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "recvmsg",
    "recvmsg_into",
    "waitpid",
    "wait",
    "wait3",
    "wait4",
    "waitid",
    "sigwait",
    "sigwaitinfo",
    "sigtimedwait",
    "pause",
    "flock",
    "lockf",
];

/// Instructions walked back from the call at most.
const MAX_STEPS: usize = 256;

/// The name the callable of the call at `offset` was loaded by, if the
/// instruction there is a call and its callable was loaded by a name
/// (`LOAD_GLOBAL`, `LOAD_NAME`, `LOAD_FAST`, `LOAD_DEREF`, `LOAD_ATTR`,
/// `LOAD_METHOD`). `version` is the code's CPython (major, minor), whose
/// opcode table disassembles it.
pub fn callee_name(code: &CodeObject, version: (u32, u32), offset: u32) -> Option<String> {
    let view = Code {
        qualname: code.qualname.clone(),
        filename: code.filename.clone(),
        first_line: code.first_line,
        version,
        bytecode: code.bytecode.clone(),
        deoptimized: Vec::new(),
        line_table: Vec::new(),
        line_table_kind: Default::default(),
        names: code.names.clone(),
        consts: code.consts.clone(),
        varnames: code.varnames.clone(),
        cellvars: code.cellvars.clone(),
        freevars: code.freevars.clone(),
        localsplus: pydeep_view::bytecode::code::localsplus_names(
            &code.varnames,
            &code.cellvars,
            &code.freevars,
            &code.localspluskinds,
        ),
        source_file: 0,
    };
    let instructions = disassemble(&view, Form::Deoptimized).ok()?;
    callee_in(&instructions, offset)
}

/// True if the call at `offset` of `code` is a call to a waiting function
/// by its name ([`BLOCKING_NAMES`]).
pub fn blocks_at(code: &CodeObject, version: (u32, u32), offset: u32) -> bool {
    callee_name(code, version, offset).is_some_and(|name| BLOCKING_NAMES.contains(&name.as_str()))
}

/// [`callee_name`] over disassembled instructions.
pub fn callee_in(instructions: &[Instruction], offset: u32) -> Option<String> {
    let at = instruction_index_at(instructions, offset)?;
    let call = &instructions[at];
    let argc = u32::try_from(call.arg.unwrap_or(0)).ok()?;
    // Values above the callable: the arguments, and the keyword names'
    // tuple of a 3.9/3.10 CALL_FUNCTION_KW or a 3.13+ CALL_KW.
    let mut above = match call.base_opname {
        "CALL" | "CALL_FUNCTION" | "CALL_METHOD" => argc,
        "CALL_FUNCTION_KW" | "CALL_KW" => argc + 1,
        _ => return None,
    };
    let jump_targets: Vec<u32> = instructions.iter().filter_map(|i| i.jump_target).collect();
    for instruction in instructions[..at].iter().rev().take(MAX_STEPS) {
        let (pops, pushes) = stack_effect(instruction)?;
        if pushes > above {
            return loaded_name(instruction);
        }
        // A jump lands between the callable and the call: the values may
        // come from another path than the straight one walked here.
        if jump_targets.contains(&instruction.offset) {
            return None;
        }
        above = above - pushes + pops;
    }
    None
}

/// The name a loading instruction loaded.
fn loaded_name(instruction: &Instruction) -> Option<String> {
    match instruction.base_opname {
        "LOAD_GLOBAL" | "LOAD_NAME" | "LOAD_ATTR" | "LOAD_METHOD" | "LOAD_FAST" | "LOAD_DEREF"
        | "LOAD_FAST_CHECK" | "LOAD_CLASSDEREF" | "LOAD_FAST_BORROW" => {
            // "NULL + sleep", "NULL|self + sleep" (3.11+ push bits).
            let text = instruction.argrepr.as_str();
            let name = text.rsplit(" + ").next().unwrap_or(text);
            (!name.is_empty()).then(|| name.to_string())
        }
        _ => None,
    }
}

/// (values popped, values pushed) of an instruction that may appear among
/// a call's arguments, counting a callable with its NULL or `self` as one
/// value; None for any other.
fn stack_effect(instruction: &Instruction) -> Option<(u32, u32)> {
    let arg = u32::try_from(instruction.arg.unwrap_or(0)).ok()?;
    Some(match instruction.base_opname {
        "NOP" | "CACHE" | "EXTENDED_ARG" | "PRECALL" | "KW_NAMES" | "PUSH_NULL" | "SWAP"
        | "ROT_TWO" | "ROT_THREE" | "ROT_FOUR" | "ROT_N" | "RESUME" | "NOT_TAKEN" => (0, 0),
        "LOAD_CONST"
        | "LOAD_SMALL_INT"
        | "LOAD_FAST"
        | "LOAD_FAST_CHECK"
        | "LOAD_FAST_BORROW"
        | "LOAD_FAST_AND_CLEAR"
        | "LOAD_NAME"
        | "LOAD_GLOBAL"
        | "LOAD_DEREF"
        | "LOAD_CLASSDEREF"
        | "LOAD_CLOSURE"
        | "LOAD_ASSERTION_ERROR"
        | "LOAD_BUILD_CLASS"
        | "LOAD_COMMON_CONSTANT"
        | "DUP_TOP"
        | "COPY" => (0, 1),
        "LOAD_FAST_LOAD_FAST" | "LOAD_FAST_BORROW_LOAD_FAST_BORROW" | "DUP_TOP_TWO" => (0, 2),
        "LOAD_ATTR" | "LOAD_METHOD" | "UNARY_NEGATIVE" | "UNARY_POSITIVE" | "UNARY_NOT"
        | "UNARY_INVERT" | "TO_BOOL" | "FORMAT_SIMPLE" | "CONVERT_VALUE" | "CALL_INTRINSIC_1"
        | "GET_LEN" => (1, 1),
        "BINARY_OP"
        | "BINARY_SUBSCR"
        | "BINARY_ADD"
        | "BINARY_SUBTRACT"
        | "BINARY_MULTIPLY"
        | "BINARY_TRUE_DIVIDE"
        | "BINARY_FLOOR_DIVIDE"
        | "BINARY_MODULO"
        | "BINARY_POWER"
        | "BINARY_AND"
        | "BINARY_OR"
        | "BINARY_XOR"
        | "BINARY_LSHIFT"
        | "BINARY_RSHIFT"
        | "BINARY_MATRIX_MULTIPLY"
        | "COMPARE_OP"
        | "IS_OP"
        | "CONTAINS_OP"
        | "FORMAT_WITH_SPEC"
        | "CALL_INTRINSIC_2" => (2, 1),
        "BINARY_SLICE" => (3, 1),
        "BUILD_TUPLE" | "BUILD_LIST" | "BUILD_SET" | "BUILD_STRING" | "BUILD_SLICE" => (arg, 1),
        "BUILD_MAP" => (arg.checked_mul(2)?, 1),
        "BUILD_CONST_KEY_MAP" => (arg.checked_add(1)?, 1),
        "FORMAT_VALUE" => (1 + u32::from(arg & 4 != 0), 1),
        "CALL" | "CALL_FUNCTION" | "CALL_METHOD" => (arg.checked_add(1)?, 1),
        "CALL_FUNCTION_KW" | "CALL_KW" => (arg.checked_add(2)?, 1),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruction(
        offset: u32,
        name: &'static str,
        arg: Option<i64>,
        argrepr: &str,
    ) -> Instruction {
        Instruction {
            offset,
            opcode: 0,
            opname: name,
            base_opcode: 0,
            base_opname: name,
            arg,
            argrepr: argrepr.to_string(),
            jump_target: None,
            label: None,
            caches: 0,
            cache_fields: Vec::new(),
        }
    }

    #[test]
    fn the_callable_of_a_call_is_found_past_its_arguments_and_nested_calls() {
        // time.sleep(self.delay * f(2)) as 3.12 compiles it.
        let code = [
            instruction(0, "LOAD_GLOBAL", Some(0), "time"),
            instruction(2, "LOAD_ATTR", Some(3), "NULL|self + sleep"),
            instruction(4, "LOAD_FAST", Some(0), "self"),
            instruction(6, "LOAD_ATTR", Some(4), "delay"),
            instruction(8, "LOAD_GLOBAL", Some(5), "NULL + f"),
            instruction(10, "LOAD_CONST", Some(1), "2"),
            instruction(12, "CALL", Some(1), ""),
            instruction(14, "BINARY_OP", Some(5), "*"),
            instruction(16, "CALL", Some(1), ""),
        ];
        assert_eq!(callee_in(&code, 16).as_deref(), Some("sleep"));
        assert_eq!(callee_in(&code, 12).as_deref(), Some("f"));
        // Not a call.
        assert_eq!(callee_in(&code, 14), None);
    }

    #[test]
    fn an_unknown_instruction_or_a_jump_among_the_arguments_gives_no_name() {
        let code = [
            instruction(0, "LOAD_GLOBAL", Some(0), "sleep"),
            instruction(2, "GET_AWAITABLE", Some(0), ""),
            instruction(4, "CALL_FUNCTION", Some(1), ""),
        ];
        assert_eq!(callee_in(&code, 4), None);
        let mut jumped = [
            instruction(0, "LOAD_GLOBAL", Some(0), "sleep"),
            instruction(2, "LOAD_FAST", Some(0), "x"),
            instruction(4, "CALL_FUNCTION", Some(1), ""),
        ];
        jumped[1].jump_target = Some(2);
        assert_eq!(callee_in(&jumped, 4), None);
    }
}
