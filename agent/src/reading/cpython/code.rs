//! Code objects: read once from the target, with everything a recording
//! embeds (names, bytecode, line table, variable names, constants).

use super::objects::{ObjectError, ObjectReader};
use super::FrameKind;
use crate::process::memory::{field_u32, field_u64, read_vec};

/// Largest bytecode array accepted (CPython caps code at INT_MAX, real code
/// is far smaller).
pub const MAX_BYTECODE: usize = 4 << 20;
/// Longest constant repr kept (longer ones keep 197 characters and "...",
/// the bounded repr rule of notes/bytecode.md).
pub const MAX_CONST_REPR: usize = 200;

pub use pydeep_format::proto::LineTableKind;

/// A code object as read from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeObject {
    /// Address in the target.
    pub address: u64,
    /// `co_filename`.
    pub filename: String,
    /// `co_name`.
    pub name: String,
    /// `co_qualname` (`co_name` before 3.11).
    pub qualname: String,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// The bytecode as it is in memory: on 3.11+ the adaptive form, with
    /// specialized instructions and inline caches.
    pub bytecode: Vec<u8>,
    /// The bytecode with specializations undone, or empty when not
    /// computed (pydeep does not yet carry per-version deopt tables).
    pub bytecode_deoptimized: Vec<u8>,
    /// `co_linetable` / `co_lnotab` bytes.
    pub line_table: Vec<u8>,
    /// Their encoding (`pydeep_cpython::line_table_kind` of the version).
    pub line_table_kind: LineTableKind,
    /// Local variable names (`co_varnames`).
    pub varnames: Vec<String>,
    /// Cell variable names (`co_cellvars`).
    pub cellvars: Vec<String>,
    /// Free variable names (`co_freevars`).
    pub freevars: Vec<String>,
    /// Global and attribute names (`co_names`).
    pub names: Vec<String>,
    /// Bounded reprs of `co_consts` (nested code objects as "<code NAME>").
    pub consts: Vec<String>,
    /// Addresses of code objects among the constants.
    pub const_code_addresses: Vec<u64>,
    /// `co_argcount`.
    pub argcount: u32,
    /// `co_posonlyargcount`.
    pub posonlyargcount: u32,
    /// `co_kwonlyargcount`.
    pub kwonlyargcount: u32,
    /// `co_flags`.
    pub flags: u32,
    /// `co_stacksize`.
    pub stacksize: u32,
    /// `co_localspluskinds` (3.11+), one byte per local.
    pub localspluskinds: Vec<u8>,
    /// Bytes a frame of this code takes on the thread's data stack (3.11+;
    /// see [`ObjectReader::frame_size`]), `None` if unknown.
    pub frame_size: Option<u64>,
}

impl CodeObject {
    /// An empty code object named `name` in `filename`, line 1 (unit tests'
    /// stand-in for one read from a target).
    #[cfg(test)]
    pub(crate) fn named(name: &str, filename: &str) -> CodeObject {
        CodeObject {
            address: 0,
            filename: filename.into(),
            name: name.into(),
            qualname: name.into(),
            first_line: 1,
            bytecode: Vec::new(),
            bytecode_deoptimized: Vec::new(),
            line_table: Vec::new(),
            line_table_kind: crate::LineTableKind::LineTableLocations,
            varnames: Vec::new(),
            cellvars: Vec::new(),
            freevars: Vec::new(),
            names: Vec::new(),
            consts: Vec::new(),
            const_code_addresses: Vec::new(),
            argcount: 0,
            posonlyargcount: 0,
            kwonlyargcount: 0,
            flags: 0,
            stacksize: 0,
            localspluskinds: Vec::new(),
            frame_size: None,
        }
    }
}

/// The fields of a code object that identify it: compared on every sample
/// to detect a freed code object replaced by another at the same address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeFingerprint {
    /// `ob_type`.
    pub ob_type: u64,
    /// Pointer to `co_filename`.
    pub filename: u64,
    /// Pointer to `co_name`.
    pub name: u64,
    /// `co_firstlineno`.
    pub first_line: u32,
}

/// `co_localspluskinds` bits (Include/internal/pycore_code.h).
const CO_FAST_LOCAL: u8 = 0x20;
const CO_FAST_CELL: u8 = 0x40;
const CO_FAST_FREE: u8 = 0x80;

impl ObjectReader<'_> {
    /// Bytes of the code object header needed for its fingerprint.
    pub fn code_fingerprint_len(&self) -> usize {
        let o = &self.layout.offsets;
        [o.object_ob_type, o.code_co_filename, o.code_co_name]
            .into_iter()
            .flatten()
            .chain(o.code_co_firstlineno.map(|f| f.saturating_sub(4)))
            .max()
            .unwrap_or(0) as usize
            + 8
    }

    /// The fingerprint in a copy of a code object's header.
    pub fn code_fingerprint(&self, header: &[u8]) -> CodeFingerprint {
        let c = &self.layout.core;
        CodeFingerprint {
            ob_type: field_u64(header, c.object_ob_type),
            filename: field_u64(header, c.code_co_filename),
            name: field_u64(header, c.code_co_name),
            first_line: field_u32(header, c.code_co_firstlineno),
        }
    }

    /// Bytes a frame of the code object whose header is `header` takes on
    /// the data stack (3.11+): a frame pushed at `F` ends at `F + size`,
    /// where `tstate->datastack_top` points while it is the innermost one
    /// (pycore_frame.h `_PyFrame_PushUnchecked`). `co_framesize` words
    /// from 3.12 on; on 3.11 `co_nlocalsplus + co_stacksize +
    /// FRAME_SPECIALS_SIZE` (`_PyFrame_NumSlotsForCodeObject`). `None`
    /// where the layout does not say, or the size is implausible.
    pub fn frame_size(&self, header: &[u8]) -> Option<u64> {
        let o = &self.layout.offsets;
        let int = |at: u64| -> Option<u64> {
            (at + 4 <= header.len() as u64).then(|| u64::from(field_u32(header, at)))
        };
        let words = match o.code_co_framesize {
            Some(at) => int(at)?,
            None => {
                int(o.code_co_nlocalsplus?)? + int(o.code_co_stacksize?)? + o.frame_specials_words?
            }
        };
        // A frame holds its specials at least; CPython caps a code's
        // locals and stack far below a million words.
        (1..1 << 20).contains(&words).then_some(words * 8)
    }

    /// Reads the code object at `address`, checking its type is `code`.
    pub fn code_object(&self, address: u64) -> Result<(CodeObject, CodeFingerprint), ObjectError> {
        let o = &self.layout.offsets;
        let c = &self.layout.core;
        let header_len = c.code_size.clamp(64, 1024) as usize;
        let header = read_vec(self.memory, address, header_len, 1024)?;
        let fingerprint = self.code_fingerprint(&header);
        let type_name = self.type_name(fingerprint.ob_type)?;
        if type_name != "code" {
            return Err(ObjectError::Invalid {
                address,
                expected: "code object",
                detail: format!("type is {type_name:?}"),
            });
        }
        let ptr = |field: Option<u64>| field.map_or(0, |f| field_u64(&header, f));
        let int = |field: Option<u64>| field.map_or(0, |f| field_u32(&header, f));
        let string = |field: Option<u64>| -> String {
            match ptr(field) {
                0 => String::new(),
                // Named, not dropped: a frame whose code object's name
                // points to garbage is still shown, and says so.
                p => self
                    .unicode(p)
                    .unwrap_or_else(|_| format!("<unreadable str at {p:#x}>")),
            }
        };
        let strings = |field: Option<u64>| -> Vec<String> {
            match ptr(field) {
                0 => Vec::new(),
                p => self.string_tuple(p).unwrap_or_default(),
            }
        };
        let filename = string(o.code_co_filename);
        let name = string(o.code_co_name);
        let qualname = match o.code_co_qualname {
            Some(_) => string(o.code_co_qualname),
            None => name.clone(),
        };
        let version = &self.layout.version;
        let line_table_kind = pydeep_cpython::line_table_kind(version.major, version.minor)
            .unwrap_or(LineTableKind::LineTableUnspecified);
        let bytecode = match self.layout.semantics.frame_kind {
            FrameKind::FrameObject => self.bytes(ptr(o.code_co_code), MAX_BYTECODE)?,
            FrameKind::InterpreterFrame => {
                // co_code_adaptive is inline; its length in code units is
                // the object's ob_size (Objects/codeobject.c).
                let units = self.var_size(address)?;
                let units = usize::try_from(units).unwrap_or(usize::MAX);
                let frames = self
                    .layout
                    .interpreter_frames
                    .ok_or(ObjectError::MissingOffset("co_code_adaptive"))?;
                let start = address.wrapping_add(frames.code_adaptive);
                read_vec(self.memory, start, units.saturating_mul(2), MAX_BYTECODE)?
            }
        };
        let line_table = match ptr(o.code_co_linetable.or(o.code_co_lnotab)) {
            0 => Vec::new(),
            p => self.bytes(p, MAX_BYTECODE).unwrap_or_default(),
        };
        let (mut varnames, mut cellvars, mut freevars) = (
            strings(o.code_co_varnames),
            strings(o.code_co_cellvars),
            strings(o.code_co_freevars),
        );
        let mut localspluskinds = Vec::new();
        if o.code_co_localsplusnames.is_some() {
            let names = strings(o.code_co_localsplusnames);
            localspluskinds = match ptr(o.code_co_localspluskinds) {
                0 => Vec::new(),
                p => self.bytes(p, 1 << 16).unwrap_or_default(),
            };
            for (name, kind) in names.iter().zip(&localspluskinds) {
                // A cell that is also an argument counts as a local and a
                // cell, as co_varnames/co_cellvars show it.
                if kind & CO_FAST_LOCAL != 0 {
                    varnames.push(name.clone());
                }
                if kind & CO_FAST_CELL != 0 {
                    cellvars.push(name.clone());
                }
                if kind & CO_FAST_FREE != 0 {
                    freevars.push(name.clone());
                }
            }
        }
        let (consts, const_code_addresses) = match ptr(o.code_co_consts) {
            0 => (Vec::new(), Vec::new()),
            p => self.const_reprs(p),
        };
        Ok((
            CodeObject {
                address,
                filename,
                name,
                qualname,
                first_line: int(o.code_co_firstlineno),
                bytecode,
                bytecode_deoptimized: Vec::new(),
                line_table,
                line_table_kind,
                varnames,
                cellvars,
                freevars,
                names: strings(o.code_co_names),
                consts,
                const_code_addresses,
                argcount: int(o.code_co_argcount),
                posonlyargcount: int(o.code_co_posonlyargcount),
                kwonlyargcount: int(o.code_co_kwonlyargcount),
                flags: int(o.code_co_flags),
                stacksize: int(o.code_co_stacksize),
                localspluskinds,
                frame_size: self.frame_size(&header),
            },
            fingerprint,
        ))
    }

    fn const_reprs(&self, tuple: u64) -> (Vec<String>, Vec<u64>) {
        let Ok(items) = self.tuple_items(tuple) else {
            return (Vec::new(), Vec::new());
        };
        let mut reprs = Vec::with_capacity(items.len());
        let mut codes = Vec::new();
        for item in items {
            let repr = self.const_repr(item, 0, &mut codes);
            reprs.push(truncate(repr));
        }
        (reprs, codes)
    }

    /// `repr()` of a constant for the types constants have (str, int,
    /// bool, None, float, tuple, code); others as `<typename>`.
    fn const_repr(&self, item: u64, depth: u32, codes: &mut Vec<u64>) -> String {
        let type_name = self
            .type_of(item)
            .and_then(|t| self.type_name(t))
            .unwrap_or_else(|_| "?".into());
        match type_name.as_str() {
            "str" => self
                .unicode(item)
                .map(|s| python_str_repr(&s))
                .unwrap_or_else(|_| "<str>".into()),
            "int" => self
                .int(item)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| "<int>".into()),
            "NoneType" => "None".into(),
            "bool" => match self.int(item) {
                Ok(0) => "False".into(),
                Ok(_) => "True".into(),
                Err(_) => "<bool>".into(),
            },
            "float" => self
                .layout
                .offsets
                .float_ob_fval
                .and_then(|at| {
                    crate::process::memory::read_u64(self.memory, item.wrapping_add(at)).ok()
                })
                .map(|bits| python_float_repr(f64::from_bits(bits)))
                .unwrap_or_else(|| "<float>".into()),
            "tuple" if depth < 2 => match self.tuple_items(item) {
                Ok(items) if items.len() <= 64 => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|&i| self.const_repr(i, depth + 1, codes))
                        .collect();
                    match parts.len() {
                        1 => format!("({},)", parts[0]),
                        _ => format!("({})", parts.join(", ")),
                    }
                }
                _ => "<tuple>".into(),
            },
            "code" => {
                codes.push(item);
                let o = &self.layout.offsets;
                let name = o
                    .code_co_name
                    .and_then(|f| {
                        crate::process::memory::read_u64(self.memory, item.wrapping_add(f)).ok()
                    })
                    .and_then(|p| self.unicode(p).ok())
                    .unwrap_or_default();
                format!("<code {name}>")
            }
            other => format!("<{other}>"),
        }
    }
}

/// `repr()` of a float as CPython writes it (Python/pystrtod.c, repr
/// mode 'r'): the shortest round-tripping digits, positional for
/// 1e-4 <= |x| < 1e16 with at least one decimal, otherwise exponent form
/// with a sign and two or more exponent digits.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let magnitude = value.abs();
    if value == 0.0 || (1e-4..1e16).contains(&magnitude) {
        let text = format!("{value}");
        if text.contains('.') {
            text
        } else {
            text + ".0"
        }
    } else {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    }
}

/// `repr()` of a `str` as CPython writes it (Objects/unicodeobject.c
/// `unicode_repr`): single quotes unless the text holds a single quote and
/// no double quote; backslash escapes for the quote, `\\`, `\t`, `\n`, `\r`
/// and other non-printable characters.
pub fn python_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if !c.is_alphanumeric() && (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn truncate(mut text: String) -> String {
    if text.chars().count() > MAX_CONST_REPR {
        text = text.chars().take(MAX_CONST_REPR - 3).collect::<String>() + "...";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_reprs_follow_cpython_quoting_and_escapes() {
        assert_eq!(python_str_repr("x"), "'x'");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_str_repr("'\""), "'\\'\"'");
        assert_eq!(python_str_repr("a\nb\\"), "'a\\nb\\\\'");
        assert_eq!(python_str_repr("\u{1}é"), "'\\x01é'");
    }

    #[test]
    fn float_reprs_follow_cpython() {
        assert_eq!(python_float_repr(2.5), "2.5");
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(-0.0), "-0.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1.5e-5), "1.5e-05");
        assert_eq!(python_float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(python_float_repr(f64::INFINITY), "inf");
    }

    #[test]
    fn long_reprs_keep_197_characters_and_an_ellipsis() {
        let long = "x".repeat(300);
        let cut = truncate(long);
        assert_eq!(cut.chars().count(), 200);
        assert!(cut.ends_with("xx..."));
    }
}
