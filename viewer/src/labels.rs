//! How a symbol is named where space is short and where it is not.
//!
//! Graphs show the short label, `qualname (file.py:line)`: the file's name
//! without its directories, so a narrow frame still starts with what
//! matters. Tooltips and search use the full label, `qualname
//! (/full/path/file.py:line)`. The line is the sampled line at line and
//! instruction granularity and the function's first line
//! (`co_firstlineno`) at function granularity; instruction labels keep
//! their `@ +offset OPNAME` suffix. Symbols that are not Python frames
//! (`<no Python frame>`, thread states) keep their label in both.

use std::collections::HashMap;

use crate::aggregate::Profile;
use crate::symbols::{sanitize, Symbol, SymbolId};

/// The short and full label of every symbol of a profile.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    short: Vec<String>,
    full: Vec<String>,
}

impl Labels {
    /// Labels for every symbol of `profile`. Two symbols whose short labels
    /// would be the same (same qualname, file name and line in two
    /// directories) are both shown by their full label, so that graphs never
    /// merge different functions.
    pub fn new(profile: &Profile) -> Self {
        let symbols = profile.symbols.all();
        let full: Vec<String> = symbols.iter().map(full_label).collect();
        let mut short: Vec<String> = symbols.iter().map(short_label).collect();
        let mut owners: HashMap<&str, usize> = HashMap::new();
        for label in &short {
            *owners.entry(label.as_str()).or_insert(0) += 1;
        }
        let ambiguous: Vec<bool> = short
            .iter()
            .map(|label| owners[label.as_str()] > 1)
            .collect();
        for (index, ambiguous) in ambiguous.into_iter().enumerate() {
            if ambiguous {
                short[index] = full[index].clone();
            }
        }
        Labels { short, full }
    }

    /// `qualname (file.py:line)`, unique per symbol.
    pub fn short(&self, id: SymbolId) -> &str {
        &self.short[id as usize]
    }

    /// `qualname (/full/path/file.py:line)`.
    pub fn full(&self, id: SymbolId) -> &str {
        &self.full[id as usize]
    }
}

fn line_of(symbol: &Symbol) -> u32 {
    if symbol.line != 0 {
        symbol.line
    } else {
        symbol.first_line
    }
}

fn label_with_file(symbol: &Symbol, file: &str) -> String {
    let mut label = symbol.function.clone();
    match line_of(symbol) {
        0 => label.push_str(&format!(" ({file})")),
        line => label.push_str(&format!(" ({file}:{line})")),
    }
    if let Some(offset) = symbol.instruction_offset {
        label.push_str(&format!(" @ +{offset}"));
        if let Some(opname) = symbol.opname {
            label.push(' ');
            label.push_str(opname);
        }
    }
    sanitize(&label)
}

/// `qualname (/full/path/file.py:line)` (see the module's documentation).
pub fn full_label(symbol: &Symbol) -> String {
    if symbol.file.is_empty() {
        return symbol.label.clone();
    }
    label_with_file(symbol, &symbol.file)
}

/// `qualname (file.py:line)` (see the module's documentation).
pub fn short_label(symbol: &Symbol) -> String {
    if symbol.file.is_empty() {
        return symbol.label.clone();
    }
    let name = symbol.file.rsplit('/').next().unwrap_or(&symbol.file);
    label_with_file(symbol, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(line: u32, instruction_offset: Option<u32>) -> Symbol {
        Symbol {
            function: "Job.work".into(),
            name: "work".into(),
            file: "/srv/app/jobs.py".into(),
            first_line: 10,
            line,
            instruction_offset,
            opname: instruction_offset.map(|_| "LOAD_ATTR"),
            label: String::new(),
        }
    }

    #[test]
    fn short_labels_name_the_file_and_full_labels_its_path() {
        assert_eq!(short_label(&symbol(0, None)), "Job.work (jobs.py:10)");
        assert_eq!(
            full_label(&symbol(0, None)),
            "Job.work (/srv/app/jobs.py:10)"
        );
        assert_eq!(short_label(&symbol(12, None)), "Job.work (jobs.py:12)");
        assert_eq!(
            short_label(&symbol(12, Some(8))),
            "Job.work (jobs.py:12) @ +8 LOAD_ATTR"
        );
    }
}
