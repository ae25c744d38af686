//! Heat per instruction and the annotated listing of `pydeep-view bytecode`.
//!
//! Samples are counted on their leaf frame (the instruction the thread was
//! executing: FrameDef = code object + instruction offset). Each selected
//! code object is printed like its CPython's `dis`, with a heat column
//! (samples, share of the code object's samples) on the left, source lines
//! interleaved, specialized instructions beside their base form, and carets
//! under the source span of the hottest instruction (3.11+ location tables
//! carry columns).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use pydeep_cpython::linetable::{positions, Position};
use pydeep_format::proto::{CodeObjectDef, LineTableKind};
use pydeep_format::{Event, FormatError, Recording, Tables};

use super::code::Code;
use super::disassemble::{disassemble, instruction_index_at, DisassembleError, Form, Instruction};

/// Which code objects to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotateOptions {
    /// Only code objects with this co_qualname (or co_name, or a qualname
    /// ending in ".NAME"). Default: none, i.e. the hottest.
    pub function: Option<String>,
    /// Only code objects of this file (path suffix) whose lines include this
    /// line. Default: none.
    pub at: Option<(String, u32)>,
    /// How many code objects to print at most, hottest first. Default: 3.
    pub top: usize,
    /// Print each inline cache field and its value under its instruction
    /// (3.11+), like `dis --show-caches`. Default: false.
    pub show_caches: bool,
}

impl Default for AnnotateOptions {
    fn default() -> Self {
        AnnotateOptions {
            function: None,
            at: None,
            top: 3,
            show_caches: false,
        }
    }
}

/// Errors of the annotated listing.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    /// The recording could not be read.
    #[error("reading the recording: {0}")]
    Format(#[from] FormatError),
    /// A code object's version has no opcode table.
    #[error(transparent)]
    Disassemble(#[from] DisassembleError),
    /// Nothing matched the selection.
    #[error(
        "no recorded code object matches {0}; try `pydeep-view bytecode FILE` to list the hottest"
    )]
    NoMatch(String),
}

/// A recording's tables and its samples counted per code object and
/// instruction offset.
#[derive(Debug, Default)]
pub struct Profile {
    /// The interned tables after reading the whole recording.
    pub tables: Tables,
    /// Version of the target, from the header (fallback for code objects).
    pub version: Option<(u32, u32)>,
    /// Samples per code object id, per instruction offset.
    pub heat: HashMap<u64, BTreeMap<u32, u64>>,
    /// Samples with at least one Python frame.
    pub total_samples: u64,
}

impl Profile {
    /// Reads `path` to the end and counts the leaf frame of every sample.
    pub fn read(path: &Path) -> Result<Profile, AnnotateError> {
        let mut recording = Recording::open(path)?;
        let version = recording
            .header()
            .python_version
            .as_ref()
            .map(|v| (v.major, v.minor));
        let mut heat: HashMap<u64, BTreeMap<u32, u64>> = HashMap::new();
        let mut total_samples = 0;
        // Leaf frame of each stack id, computed once per stack.
        let mut leaves: HashMap<u64, Option<(u64, u32)>> = HashMap::new();
        while let Some(event) = recording.next_event()? {
            let Event::Sample(sample) = event else {
                continue;
            };
            let tables = recording.tables();
            let leaf = *leaves.entry(sample.stack).or_insert_with(|| {
                let frame = *tables.stack_frames(sample.stack).last()?;
                let def = tables.frames.get(&frame)?;
                Some((def.code, def.instruction_offset))
            });
            if let Some((code, offset)) = leaf {
                // Weighted, as every profile: the ticks each sample stands for.
                let weight = u64::from(sample.weight.max(1));
                total_samples += weight;
                *heat.entry(code).or_default().entry(offset).or_default() += weight;
            }
        }
        Ok(Profile {
            tables: recording.tables().clone(),
            version,
            heat,
            total_samples,
        })
    }

    /// Samples whose leaf is in code object `code`.
    pub fn samples_of(&self, code: u64) -> u64 {
        self.heat.get(&code).map_or(0, |h| h.values().sum())
    }

    /// The code object `id`, resolved.
    pub fn code(&self, id: u64) -> Option<Code> {
        let def = self.tables.code_objects.get(&id)?;
        Some(Code::from_def(
            def,
            |s| self.tables.strings.get(&s).cloned(),
            self.version,
        ))
    }

    /// Ids of the code objects `options` selects, hottest first.
    pub fn select(&self, options: &AnnotateOptions) -> Result<Vec<u64>, AnnotateError> {
        let string = |id: u64| self.tables.string(id);
        let mut chosen: Vec<u64> = self
            .tables
            .code_objects
            .values()
            .filter(|def| match &options.function {
                Some(name) => {
                    let qualname = string(def.qualname);
                    qualname == name
                        || string(def.name) == name
                        || qualname.ends_with(&format!(".{name}"))
                }
                None => true,
            })
            .filter(|def| match &options.at {
                Some((file, line)) => {
                    string(def.filename).ends_with(file.as_str()) && covers_line(def, *line)
                }
                None => true,
            })
            .map(|def| def.id)
            .collect();
        if options.function.is_none() && options.at.is_none() {
            chosen.retain(|&id| self.samples_of(id) > 0);
        }
        chosen.sort_by_key(|&id| (std::cmp::Reverse(self.samples_of(id)), id));
        chosen.truncate(options.top.max(1));
        if chosen.is_empty() {
            let what = match (&options.function, &options.at) {
                (Some(name), _) => format!("--function {name}"),
                (None, Some((file, line))) => format!("--at {file}:{line}"),
                (None, None) => "any sample".to_string(),
            };
            return Err(AnnotateError::NoMatch(what));
        }
        Ok(chosen)
    }

    /// The annotated listing of code object `id` (with its cache fields if
    /// `show_caches`).
    pub fn render(&self, id: u64, show_caches: bool) -> Result<String, AnnotateError> {
        let Some(code) = self.code(id) else {
            return Err(AnnotateError::NoMatch(format!("code object {id}")));
        };
        let instructions = disassemble(&code, Form::Adaptive)?;
        let heat = self.heat.get(&id).cloned().unwrap_or_default();
        let source = self.tables.source_text(code.source_file);
        Ok(render_listing(
            &code,
            &instructions,
            &heat,
            source.as_deref(),
            self.total_samples,
            show_caches,
        ))
    }
}

/// True if `line` is between the code object's first line and the last line
/// its table mentions.
fn covers_line(def: &CodeObjectDef, line: u32) -> bool {
    let kind =
        LineTableKind::try_from(def.line_table_kind).unwrap_or(LineTableKind::LineTableUnspecified);
    let last = positions(
        kind,
        def.first_line,
        &def.line_table,
        def.bytecode.len() as u32,
    )
    .iter()
    .filter_map(|p| p.end_line.or(p.line))
    .max()
    .unwrap_or(def.first_line);
    def.first_line <= line && line <= last
}

/// Samples of each instruction: a sample's offset counts for the
/// instruction whose bytes (caches included) hold it.
fn heat_per_instruction(instructions: &[Instruction], heat: &BTreeMap<u32, u64>) -> Vec<u64> {
    let mut out = vec![0u64; instructions.len()];
    for (&offset, &count) in heat {
        if let Some(index) = instruction_index_at(instructions, offset) {
            out[index] += count;
        }
    }
    out
}

/// What precedes an interleaved source line (and its carets): as wide as
/// the heat and line columns of an instruction row.
const SOURCE_PREFIX: &str = "                     | ";

/// Formats one code object's listing.
pub fn render_listing(
    code: &Code,
    instructions: &[Instruction],
    heat: &BTreeMap<u32, u64>,
    source: Option<&str>,
    total_samples: u64,
    show_caches: bool,
) -> String {
    let counts = heat_per_instruction(instructions, heat);
    let code_samples: u64 = counts.iter().sum();
    let units = positions(
        code.line_table_kind,
        code.first_line,
        &code.line_table,
        code.bytecode.len() as u32,
    );
    let position_of = |offset: u32| -> Position {
        units
            .get((offset / 2) as usize)
            .copied()
            .unwrap_or_default()
    };
    let hottest = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .max_by_key(|(i, &c)| (c, std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    let jump_targets: Vec<u32> = instructions.iter().filter_map(|i| i.jump_target).collect();
    let source_lines: Vec<&str> = source.map(|s| s.lines().collect()).unwrap_or_default();

    let mut out = String::new();
    let share_of_all = percent(code_samples, total_samples);
    let _ = writeln!(
        out,
        "{} ({}:{}) CPython {}.{}: {code_samples} samples ({share_of_all:.1}% of all)",
        pydeep_format::text::escape(&code.qualname),
        pydeep_format::text::escape(&code.filename),
        code.first_line,
        code.version.0,
        code.version.1
    );
    let _ = writeln!(
        out,
        "{:>8} {:>6} {:>4}         {:>6} instruction",
        "samples", "share", "line", "offset"
    );
    let mut last_line = None;
    for (index, instruction) in instructions.iter().enumerate() {
        let position = position_of(instruction.offset);
        let starts_line = position.line.is_some() && position.line != last_line;
        if starts_line {
            last_line = position.line;
            let line = position.line.unwrap_or(0);
            if let Some(text) = source_lines.get((line as usize).wrapping_sub(1)) {
                let _ = writeln!(out, "{SOURCE_PREFIX}{text}");
                if let Some(hot) = hottest {
                    let hot_position = position_of(instructions[hot].offset);
                    if hot_position.line == Some(line) {
                        if let Some(carets) = caret_line(text, &hot_position) {
                            let _ = writeln!(
                                out,
                                "{SOURCE_PREFIX}{carets} hottest: {} at {}",
                                instructions[hot].opname, instructions[hot].offset
                            );
                        }
                    }
                }
            }
        }
        let count = counts[index];
        let heat_column = if count > 0 {
            format!("{count:>8} {:>5.1}%", percent(count, code_samples))
        } else {
            format!("{:>8} {:>6}", "", "")
        };
        let line_column = match (starts_line, position.line) {
            (true, Some(line)) => format!("{line:>4}"),
            _ => "    ".to_string(),
        };
        let marker = if Some(index) == hottest { "-->" } else { "   " };
        let target = if jump_targets.contains(&instruction.offset) {
            ">>"
        } else {
            "  "
        };
        let _ = writeln!(
            out,
            "{heat_column} {line_column} {marker} {target} {:>6} {}",
            instruction.offset,
            describe(instruction)
        );
        if show_caches {
            for field in &instruction.cache_fields {
                let _ = writeln!(
                    out,
                    "{:>15} {:>4}        {:>6} CACHE  {}: {}",
                    "", "", field.offset, field.name, field.value
                );
            }
        }
    }
    out
}

/// The instruction as `dis` prints it, with the base form beside a
/// specialized opcode: "BINARY_OP_ADD_INT  (BINARY_OP 0 (+))".
pub fn describe(instruction: &Instruction) -> String {
    let argument = match instruction.arg {
        Some(arg) if instruction.argrepr.is_empty() => format!("{arg}"),
        Some(arg) => format!("{arg} ({})", instruction.argrepr),
        None => String::new(),
    };
    let label = instruction
        .label
        .map(|l| format!("L{l}: "))
        .unwrap_or_default();
    let caches = if instruction.caches > 0 {
        format!("  [{} cache]", instruction.caches)
    } else {
        String::new()
    };
    if instruction.is_specialized() {
        let base = format!("{} {argument}", instruction.base_opname);
        format!(
            "{label}{:<28} ({}){caches}",
            instruction.opname,
            base.trim_end()
        )
    } else {
        let arg_column = match instruction.arg {
            Some(arg) => format!("{arg:>5}"),
            None => String::new(),
        };
        let argrepr = if instruction.argrepr.is_empty() {
            String::new()
        } else {
            format!(" ({})", instruction.argrepr)
        };
        let text = format!("{label}{:<20} {arg_column}{argrepr}", instruction.opname);
        format!("{}{caches}", text.trim_end())
    }
}

/// Carets under `text` from `position.column` to `position.end_column`
/// (UTF-8 byte columns, as CPython stores them), like a 3.11 traceback. A
/// span running onto later lines is marked to the end of this one. `None`
/// without columns.
pub fn caret_line(text: &str, position: &Position) -> Option<String> {
    let column = position.column? as usize;
    let end_column = if position.end_line == position.line {
        position.end_column? as usize
    } else {
        text.len()
    };
    let to_chars = |byte: usize| -> usize {
        let byte = byte.min(text.len());
        let mut boundary = byte;
        while !text.is_char_boundary(boundary) {
            boundary -= 1;
        }
        text[..boundary].chars().count()
    };
    let start = to_chars(column);
    let end = to_chars(end_column).max(start + 1);
    Some(format!("{}{}", " ".repeat(start), "^".repeat(end - start)))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carets_cover_the_column_span_in_characters() {
        let position = Position {
            line: Some(3),
            end_line: Some(3),
            column: Some(11),
            end_column: Some(16),
        };
        // "é" is two UTF-8 bytes: byte column 11 is character 10.
        let text = "    é = a + b * c";
        assert_eq!(caret_line(text, &position).unwrap(), "          ^^^^^");
        let no_columns = Position {
            column: None,
            ..position
        };
        assert_eq!(caret_line(text, &no_columns), None);
    }
}
