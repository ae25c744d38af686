//! A recorded code object with its interned strings resolved: the input of
//! the disassembler.

use pydeep_format::proto::{CodeObjectDef, LineTableKind};

/// `co_localspluskinds` bits (`Include/internal/pycore_code.h`, 3.11+).
pub const CO_FAST_LOCAL: u8 = 0x20;
/// A cell variable (possibly also a local, for arguments captured by a closure).
pub const CO_FAST_CELL: u8 = 0x40;
/// A free variable.
pub const CO_FAST_FREE: u8 = 0x80;

/// A code object as the viewer sees it: the recorded bytes plus every name
/// and constant as text.
#[derive(Debug, Clone, Default)]
pub struct Code {
    /// co_qualname (co_name before 3.11).
    pub qualname: String,
    /// co_filename.
    pub filename: String,
    /// co_firstlineno.
    pub first_line: u32,
    /// (major, minor) of the CPython the code object came from.
    pub version: (u32, u32),
    /// The bytecode as read from memory (adaptive form on 3.11+).
    pub bytecode: Vec<u8>,
    /// `co_code` (specializations undone), or empty if not recorded.
    pub deoptimized: Vec<u8>,
    /// Line or location table bytes.
    pub line_table: Vec<u8>,
    /// Which encoding `line_table` uses.
    pub line_table_kind: LineTableKind,
    /// co_names.
    pub names: Vec<String>,
    /// Bounded reprs of co_consts.
    pub consts: Vec<String>,
    /// co_varnames.
    pub varnames: Vec<String>,
    /// co_cellvars.
    pub cellvars: Vec<String>,
    /// co_freevars.
    pub freevars: Vec<String>,
    /// co_localsplusnames (3.11+), rebuilt from the three lists above and
    /// co_localspluskinds.
    pub localsplus: Vec<String>,
    /// Id of the embedded source file, 0 if none.
    pub source_file: u64,
}

impl Code {
    /// Resolves `def` with `string`, which maps a string id to its text.
    /// `fallback_version` is used when the definition carries no version
    /// (e.g. the recording header's).
    pub fn from_def(
        def: &CodeObjectDef,
        string: impl Fn(u64) -> Option<String>,
        fallback_version: Option<(u32, u32)>,
    ) -> Code {
        let text = |id: u64| string(id).unwrap_or_else(|| format!("<string {id}>"));
        let texts = |ids: &[u64]| ids.iter().map(|&id| text(id)).collect::<Vec<_>>();
        let version = def
            .python_version
            .as_ref()
            .map(|v| (v.major, v.minor))
            .filter(|&(major, _)| major > 0)
            .or(fallback_version)
            .unwrap_or((0, 0));
        let varnames = texts(&def.varnames);
        let cellvars = texts(&def.cellvars);
        let freevars = texts(&def.freevars);
        let localsplus = if version >= (3, 11) {
            localsplus_names(&varnames, &cellvars, &freevars, &def.localspluskinds)
        } else {
            Vec::new()
        };
        let qualname = if def.qualname != 0 {
            def.qualname
        } else {
            def.name
        };
        Code {
            qualname: text(qualname),
            filename: text(def.filename),
            first_line: def.first_line,
            version,
            bytecode: def.bytecode.clone(),
            deoptimized: def.bytecode_deoptimized.clone(),
            line_table: def.line_table.clone(),
            line_table_kind: LineTableKind::try_from(def.line_table_kind)
                .unwrap_or(LineTableKind::LineTableUnspecified),
            names: texts(&def.names),
            consts: def.consts.clone(),
            varnames,
            cellvars,
            freevars,
            localsplus,
            source_file: def.source_file,
        }
    }
}

/// Rebuilds co_localsplusnames from co_varnames, co_cellvars, co_freevars
/// and co_localspluskinds.
///
/// CPython derives the three lists from the localsplus arrays
/// (`_PyCode_GetVarnames` etc. in `Objects/codeobject.c`): varnames are the
/// slots with CO_FAST_LOCAL, cellvars those with CO_FAST_CELL (an argument
/// captured by a closure is both, and appears in both lists), freevars those
/// with CO_FAST_FREE, each in slot order. Walking the kinds and taking the
/// next name of the matching list inverts that. Without kinds, the usual
/// layout (locals, then cells that are not locals, then frees) is assumed.
pub fn localsplus_names(
    varnames: &[String],
    cellvars: &[String],
    freevars: &[String],
    kinds: &[u8],
) -> Vec<String> {
    if kinds.is_empty() {
        let mut names: Vec<String> = varnames.to_vec();
        names.extend(cellvars.iter().filter(|c| !varnames.contains(c)).cloned());
        names.extend(freevars.iter().cloned());
        return names;
    }
    let (mut local, mut cell, mut free) = (varnames.iter(), cellvars.iter(), freevars.iter());
    kinds
        .iter()
        .map(|&kind| {
            let name = if kind & CO_FAST_LOCAL != 0 {
                if kind & CO_FAST_CELL != 0 {
                    cell.next();
                }
                local.next()
            } else if kind & CO_FAST_CELL != 0 {
                cell.next()
            } else if kind & CO_FAST_FREE != 0 {
                free.next()
            } else {
                None
            };
            name.cloned().unwrap_or_else(|| "<unknown>".to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn localsplus_puts_captured_arguments_once_and_cells_after_locals() {
        let varnames = strings(&["x", "y"]);
        let cellvars = strings(&["x", "counter"]);
        let freevars = strings(&["outer"]);
        let kinds = [
            CO_FAST_LOCAL | CO_FAST_CELL,
            CO_FAST_LOCAL,
            CO_FAST_CELL,
            CO_FAST_FREE,
        ];
        let names = localsplus_names(&varnames, &cellvars, &freevars, &kinds);
        assert_eq!(names, strings(&["x", "y", "counter", "outer"]));
        assert_eq!(
            localsplus_names(&varnames, &cellvars, &freevars, &[]),
            names
        );
    }
}
