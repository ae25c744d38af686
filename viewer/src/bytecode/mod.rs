//! Annotated bytecode: the disassembly of recorded code objects, as the
//! recording's own CPython `dis` prints it, with samples per instruction.
//!
//! * opcode tables and the version-dependent rules of `dis` come from
//!   the CPython facts crate (`pydeep_cpython::{opcodes, dialect}`);
//! * [`code`]: a recorded code object with its strings resolved;
//! * [`disassemble`]: bytes to instructions;
//! * [`annotate`]: heat per instruction and the text report;
//! * [`cli`]: the `pydeep-view bytecode` subcommand.

pub mod annotate;
pub mod cli;
pub mod code;
pub mod disassemble;

pub use code::Code;
pub use disassemble::{
    disassemble, instruction_index_at, CacheField, DisassembleError, Form, Instruction,
};
