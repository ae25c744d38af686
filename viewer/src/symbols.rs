//! Turns frames into symbols: the function, line or instruction a frame is
//! counted as, at the granularity the user chose.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use pydeep_format::{proto, IdTable, Tables};

use crate::bytecode::code::Code;
use crate::bytecode::disassemble::{disassemble, Form};
use crate::ViewError;

/// What a frame is counted as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One symbol per function (qualname and file): the default.
    #[default]
    Function,
    /// One symbol per source line of a function.
    Line,
    /// One symbol per bytecode instruction (offset as `dis` numbers it).
    Instruction,
}

impl FromStr for Granularity {
    type Err = ViewError;
    fn from_str(text: &str) -> Result<Self, ViewError> {
        match text {
            "function" => Ok(Granularity::Function),
            "line" => Ok(Granularity::Line),
            "instruction" => Ok(Granularity::Instruction),
            _ => Err(ViewError::InvalidArgument(format!(
                "invalid granularity {text:?}: expected function, line or instruction"
            ))),
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Granularity::Function => "function",
            Granularity::Line => "line",
            Granularity::Instruction => "instruction",
        })
    }
}

/// One thing samples are counted against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// The function's co_qualname (co_name before 3.11).
    pub function: String,
    /// The function's co_name.
    pub name: String,
    /// co_filename.
    pub file: String,
    /// co_firstlineno (0 if unknown).
    pub first_line: u32,
    /// The source line; 0 at function granularity or if unknown.
    pub line: u32,
    /// The instruction offset, at instruction granularity only.
    pub instruction_offset: Option<u32>,
    /// The instruction's opname as found in memory (specialized on 3.11+),
    /// at instruction granularity when the bytecode was recorded.
    pub opname: Option<&'static str>,
    /// The display label, free of `;` and line breaks so that it can stand
    /// in a collapsed-stack line.
    pub label: String,
}

/// Index of a [`Symbol`] in a [`Symbols`] table.
pub type SymbolId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Code {
        filename: u64,
        qualname: u64,
        line: u32,
        instruction_offset: u32,
    },
    UnknownFrame(u64),
    NoPython,
    Pseudo(&'static str),
}

/// The symbols of one output, interned as frames are resolved. Both maps
/// grow with distinct frames only.
#[derive(Debug)]
pub struct Symbols {
    granularity: Granularity,
    by_frame: IdTable<SymbolId>,
    by_key: HashMap<Key, SymbolId>,
    symbols: Vec<Symbol>,
    /// Instruction offsets and opnames per code object id (instruction
    /// granularity only), disassembled once per code object.
    instructions: HashMap<u64, Vec<(u32, u32, &'static str)>>,
    python_version: Option<(u32, u32)>,
}

/// Label of the symbol that stands for a sample without any Python frame.
pub const NO_PYTHON_LABEL: &str = "<no Python frame>";

impl Symbols {
    /// An empty table resolving at `granularity`.
    pub fn new(granularity: Granularity) -> Self {
        Symbols {
            granularity,
            by_frame: IdTable::new(),
            by_key: HashMap::new(),
            symbols: Vec::new(),
            instructions: HashMap::new(),
            python_version: None,
        }
    }

    /// Takes the target's CPython version from the header, for code objects
    /// that do not carry their own (it chooses the opcode table).
    pub fn with_header(mut self, header: &proto::Header) -> Self {
        self.python_version = header
            .python_version
            .as_ref()
            .map(|v| (v.major, v.minor))
            .filter(|&(major, _)| major > 0);
        self
    }

    /// The granularity symbols are resolved at.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The symbol with index `id`.
    pub fn get(&self, id: SymbolId) -> &Symbol {
        &self.symbols[id as usize]
    }

    /// Every symbol, indexed by [`SymbolId`].
    pub fn all(&self) -> &[Symbol] {
        &self.symbols
    }

    /// Appends the symbols of stack `stack_id`, outermost first, to `out`.
    /// An empty stack (a thread running no Python) resolves to one symbol
    /// labelled [`NO_PYTHON_LABEL`], so that every sample is counted somewhere.
    pub fn resolve_stack(&mut self, tables: &Tables, stack_id: u64, out: &mut Vec<SymbolId>) {
        let start = out.len();
        if stack_id != 0 {
            for frame in tables.stack_frames(stack_id) {
                let symbol = self.frame(tables, frame);
                out.push(symbol);
            }
        }
        if out.len() == start {
            let symbol = self.intern(Key::NoPython, || unresolved(NO_PYTHON_LABEL.to_string()));
            out.push(symbol);
        }
    }

    /// A symbol that is no Python frame, labelled `label` (such as a
    /// thread state), interned like the others.
    pub fn pseudo(&mut self, label: &'static str) -> SymbolId {
        self.intern(Key::Pseudo(label), || unresolved(label.to_string()))
    }

    /// The symbol of frame `frame_id`.
    pub fn frame(&mut self, tables: &Tables, frame_id: u64) -> SymbolId {
        if let Some(symbol) = self.by_frame.get(&frame_id) {
            return *symbol;
        }
        let symbol = self.resolve_frame(tables, frame_id);
        self.by_frame.insert(frame_id, symbol);
        symbol
    }

    fn resolve_frame(&mut self, tables: &Tables, frame_id: u64) -> SymbolId {
        let frame = tables.frames.get(&frame_id);
        let code = frame.and_then(|f| tables.code_objects.get(&f.code));
        let (Some(frame), Some(code)) = (frame, code) else {
            return self.intern(Key::UnknownFrame(frame_id), || {
                unresolved(format!("<unknown frame {frame_id}>"))
            });
        };
        let granularity = self.granularity;
        let line = match granularity {
            Granularity::Function => 0,
            Granularity::Line | Granularity::Instruction => frame.line,
        };
        let instruction_offset = match granularity {
            Granularity::Instruction => Some(frame.instruction_offset),
            _ => None,
        };
        let opname = match granularity {
            Granularity::Instruction => self.opname(tables, code, frame.instruction_offset),
            _ => None,
        };
        let key = Key::Code {
            filename: code.filename,
            qualname: code.qualname,
            line,
            instruction_offset: instruction_offset.unwrap_or(u32::MAX),
        };
        self.intern(key, || {
            // Names the target controls, escaped once here for every output.
            let mut function = tables.name(code.qualname).into_owned();
            let name = tables.name(code.name).into_owned();
            if function.is_empty() {
                function = name.clone();
            }
            if function.is_empty() {
                function = format!("<code {}>", code.id);
            }
            let file = tables.name(code.filename).into_owned();
            let label = match granularity {
                Granularity::Function => format!("{function} ({file})"),
                Granularity::Line => format!("{function} ({file}:{line})"),
                Granularity::Instruction => match opname {
                    Some(opname) => format!(
                        "{function} ({file}:{line}) @ +{} {opname}",
                        frame.instruction_offset
                    ),
                    None => format!("{function} ({file}:{line}) @ +{}", frame.instruction_offset),
                },
            };
            Symbol {
                function,
                name,
                file,
                first_line: code.first_line,
                line,
                instruction_offset,
                opname,
                label: sanitize(&label),
            }
        })
    }

    /// The opname of the instruction holding byte `offset` of `code`, if its
    /// bytecode was recorded and its version has an opcode table.
    fn opname(
        &mut self,
        tables: &Tables,
        code: &proto::CodeObjectDef,
        offset: u32,
    ) -> Option<&'static str> {
        let version = self.python_version;
        let instructions = self.instructions.entry(code.id).or_insert_with(|| {
            if code.bytecode.is_empty() {
                return Vec::new();
            }
            let resolved = Code::from_def(code, |id| tables.strings.get(&id).cloned(), version);
            disassemble(&resolved, Form::Adaptive)
                .map(|list| {
                    list.iter()
                        .map(|i| (i.offset, i.end_offset(), i.opname))
                        .collect()
                })
                .unwrap_or_default()
        });
        let index = instructions
            .partition_point(|i| i.0 <= offset)
            .checked_sub(1)?;
        let (_, end, opname) = instructions[index];
        (offset < end).then_some(opname)
    }

    fn intern(&mut self, key: Key, make: impl FnOnce() -> Symbol) -> SymbolId {
        if let Some(symbol) = self.by_key.get(&key) {
            return *symbol;
        }
        let id = self.symbols.len() as SymbolId;
        self.symbols.push(make());
        self.by_key.insert(key, id);
        id
    }
}

fn unresolved(label: String) -> Symbol {
    Symbol {
        function: label.clone(),
        name: label.clone(),
        file: String::new(),
        first_line: 0,
        line: 0,
        instruction_offset: None,
        opname: None,
        label,
    }
}

/// Makes a label safe for the collapsed-stack format, where `;` separates
/// frames and a line holds one stack.
pub(crate) fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            ';' => ',',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_names_round_trip() {
        for granularity in [
            Granularity::Function,
            Granularity::Line,
            Granularity::Instruction,
        ] {
            assert_eq!(
                granularity.to_string().parse::<Granularity>().unwrap(),
                granularity
            );
        }
        assert!("bytes".parse::<Granularity>().is_err());
    }

    #[test]
    fn labels_lose_separators_and_line_breaks() {
        assert_eq!(sanitize("a;b\nc"), "a,b c");
    }
}
