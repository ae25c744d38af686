//! Short, bounded renderings of objects: Python's own `repr()` where the
//! object is small enough (ints of any size, floats, complex, every compact
//! str kind, bytes, containers, booleans, None), and a bounded form
//! otherwise: containers show their first items and then `...`, instances
//! `Type(attr=value, ...)`, functions `<function QUALNAME>`.

use super::{Kind, Objects, MAX_INT_DIGITS};
use crate::process::memory::{field_u64, read_u64, read_vec};
use crate::reading::cpython::code::python_str_repr;
use crate::reading::cpython::objects::ObjectError;

/// Bounds of a rendering. The defaults keep a value under a few hundred
/// characters.
#[derive(Debug, Clone, Copy)]
pub struct Rendering {
    /// Longest text kept of a str or bytes (characters; default 200).
    pub max_string: usize,
    /// Items shown of a container or attributes of an instance (default 10).
    pub max_items: usize,
    /// Containers opened inside containers (default 2).
    pub max_depth: usize,
    /// Longest rendering (characters; default 1000); longer ones end in `...`.
    pub max_length: usize,
    /// Values of dict items under a str key, and of instance attributes,
    /// whose name matches are shown as `<redacted>` (default: none; the
    /// commands pass `--redact`, see [`crate::reading::redact`]).
    pub redact: Option<&'static regex::Regex>,
}

impl Default for Rendering {
    fn default() -> Self {
        Rendering {
            max_string: 200,
            max_items: 10,
            max_depth: 2,
            max_length: 1000,
            redact: None,
        }
    }
}

impl Objects<'_> {
    /// A bounded rendering of the object at `address`; unreadable objects
    /// render as `<unreadable 0x...>`.
    pub fn render(&self, address: u64, rendering: &Rendering) -> String {
        let mut active = Vec::new();
        let text = self.render_at(address, rendering, 0, &mut active);
        clip(text, rendering.max_length)
    }

    fn render_at(
        &self,
        address: u64,
        rendering: &Rendering,
        depth: usize,
        active: &mut Vec<u64>,
    ) -> String {
        match self.try_render(address, rendering, depth, active) {
            Ok(text) => text,
            Err(_) => format!("<unreadable 0x{address:x}>"),
        }
    }

    /// The reprs of a container's first `items` (one level deeper), and
    /// "..." after them when the container holds `length` > that many.
    fn render_items(
        &self,
        items: &[u64],
        length: usize,
        rendering: &Rendering,
        depth: usize,
        active: &mut Vec<u64>,
    ) -> Vec<String> {
        let mut parts: Vec<String> = items
            .iter()
            .map(|&item| self.render_at(item, rendering, depth + 1, active))
            .collect();
        if length > items.len() {
            parts.push("...".into());
        }
        parts
    }

    fn try_render(
        &self,
        address: u64,
        rendering: &Rendering,
        depth: usize,
        active: &mut Vec<u64>,
    ) -> Result<String, ObjectError> {
        let info = self.info(address)?;
        // A class deriving from a builtin container is rendered as its
        // base, named by the class: `Counter({'a': 2})`, `Row(1, 'x')`.
        let kind = self.read_kind(&info.type_info);
        let subclass = info.type_info.kind == Kind::Instance && kind != Kind::Instance;
        let opened = matches!(
            kind,
            Kind::Tuple
                | Kind::List
                | Kind::Dict
                | Kind::Set
                | Kind::FrozenSet
                | Kind::Instance
                | Kind::Deque
                | Kind::OrderedDict
                | Kind::DefaultDict
                | Kind::Namespace
                | Kind::Partial
        );
        if opened && active.contains(&address) {
            // Python's reprlib marks recursion the same way.
            return Ok(match kind {
                Kind::List => "[...]",
                Kind::Dict | Kind::OrderedDict | Kind::DefaultDict => "{...}",
                Kind::Tuple => "(...)",
                _ => "...",
            }
            .to_string());
        }
        if opened && depth > rendering.max_depth {
            let length = self
                .length(&info)
                .map_or(String::new(), |n| format!(" len={n}"));
            return Ok(format!("<{}{length}>", info.type_info.name));
        }
        active.push(address);
        let out = self.render_kind(&info, kind, rendering, depth, active);
        active.pop();
        let out = out?;
        Ok(match (subclass, kind) {
            (false, _) => out,
            (true, Kind::Tuple) => format!(
                "{}{}",
                info.type_info.name,
                if out.ends_with(",)") {
                    out.replace(",)", ")")
                } else {
                    out
                }
            ),
            (true, _) if self.length(&info) == Some(0) => format!("{}()", info.type_info.name),
            (true, _) => format!("{}({out})", info.type_info.name),
        })
    }

    fn render_kind(
        &self,
        info: &super::ObjectInfo,
        kind: Kind,
        rendering: &Rendering,
        depth: usize,
        active: &mut Vec<u64>,
    ) -> Result<String, ObjectError> {
        let address = info.address;
        let o = &self.layout().offsets;
        match kind {
            Kind::None => Ok("None".to_string()),
            Kind::Bool => Ok(if self.int_decimal(address)? == "0" {
                "False".to_string()
            } else {
                "True".to_string()
            }),
            Kind::Int => self.int_decimal(address),
            Kind::Float => {
                let at = o
                    .float_ob_fval
                    .ok_or(ObjectError::MissingOffset("ob_fval"))?;
                Ok(float_repr(f64::from_bits(read_u64(
                    self.memory(),
                    address + at,
                )?)))
            }
            Kind::Complex => {
                let at = o.complex_cval.ok_or(ObjectError::MissingOffset("cval"))?;
                let bytes = read_vec(self.memory(), address + at, 16, 16)?;
                let real = f64::from_bits(field_u64(&bytes, 0));
                let imag = f64::from_bits(field_u64(&bytes, 8));
                Ok(complex_repr(real, imag))
            }
            Kind::Str => {
                let (text, length) = self.str_prefix(address, rendering.max_string)?;
                let mut repr = python_str_repr(&text);
                if length > text.chars().count() as u64 {
                    repr.push_str("...");
                }
                Ok(repr)
            }
            Kind::Bytes => {
                let at = o
                    .bytes_ob_sval
                    .ok_or(ObjectError::MissingOffset("ob_sval"))?;
                let length = self.size_field(address, 1 << 40)?;
                let shown = length.min(rendering.max_string);
                let bytes = read_vec(self.memory(), address + at, shown, 1 << 20)?;
                let mut repr = bytes_repr(&bytes);
                if length > shown {
                    repr.push_str("...");
                }
                Ok(repr)
            }
            Kind::Tuple | Kind::List => {
                let (items, length) = self.sequence_items(address, kind, rendering.max_items)?;
                let parts = self.render_items(&items, length, rendering, depth, active);
                Ok(if kind == Kind::List {
                    format!("[{}]", parts.join(", "))
                } else if length == 1 {
                    format!("({},)", parts[0])
                } else {
                    format!("({})", parts.join(", "))
                })
            }
            Kind::Set | Kind::FrozenSet => {
                let (items, length) = self.set_items(address, rendering.max_items)?;
                let parts = self.render_items(&items, length, rendering, depth, active);
                let inner = format!("{{{}}}", parts.join(", "));
                Ok(match (kind, length) {
                    (Kind::Set, 0) => "set()".into(),
                    (Kind::Set, _) => inner,
                    (_, 0) => "frozenset()".into(),
                    _ => format!("frozenset({inner})"),
                })
            }
            Kind::Dict | Kind::OrderedDict | Kind::DefaultDict => {
                let (items, length) = if kind == Kind::OrderedDict {
                    self.ordered_dict_items(address, rendering.max_items)?
                } else {
                    self.dict_items(address, rendering.max_items)?
                };
                let mut parts: Vec<String> = items
                    .iter()
                    .map(|&(key, value)| {
                        let secret = rendering.redact.is_some()
                            && self.str_prefix(key, 256).is_ok_and(|(name, _)| {
                                crate::reading::redact::matches(rendering.redact, &name)
                            });
                        format!(
                            "{}: {}",
                            self.render_at(key, rendering, depth + 1, active),
                            if secret {
                                crate::reading::redact::REDACTED.to_string()
                            } else {
                                self.render_at(value, rendering, depth + 1, active)
                            }
                        )
                    })
                    .collect();
                if length > items.len() {
                    parts.push("...".into());
                }
                let inner = format!("{{{}}}", parts.join(", "));
                Ok(match kind {
                    Kind::OrderedDict if length == 0 => "OrderedDict()".to_string(),
                    Kind::OrderedDict => format!("OrderedDict({inner})"),
                    Kind::DefaultDict => {
                        let factory = self
                            .native_referents(info, kind)?
                            .first()
                            .map_or("None".to_string(), |&(_, factory)| {
                                self.render_at(factory, rendering, depth + 1, active)
                            });
                        format!("defaultdict({factory}, {inner})")
                    }
                    _ => inner,
                })
            }
            Kind::Function => Ok(format!(
                "<function {}>",
                self.function_qualname(address)
                    .unwrap_or_else(|_| "?".into())
            )),
            Kind::Cell => {
                let value = self.cell_contents(address)?;
                Ok(if value == 0 {
                    "<cell empty>".to_string()
                } else {
                    format!(
                        "<cell {}>",
                        self.render_at(value, rendering, depth + 1, active)
                    )
                })
            }
            Kind::Instance => {
                let attributes = self.attributes(info)?;
                let parts: Vec<String> = attributes
                    .iter()
                    .take(rendering.max_items)
                    .map(|(name, value)| {
                        if crate::reading::redact::matches(rendering.redact, name) {
                            return format!("{name}={}", crate::reading::redact::REDACTED);
                        }
                        format!(
                            "{name}={}",
                            self.render_at(*value, rendering, depth + 1, active)
                        )
                    })
                    .chain((attributes.len() > rendering.max_items).then(|| "...".to_string()))
                    .collect();
                Ok(format!("{}({})", info.type_info.name, parts.join(", ")))
            }
            // A class by its own name, as `repr` names it, not by its
            // metaclass's (`<ModelMetaclass object at ...>` for a pydantic
            // model): the object at `address` is itself a type.
            // Named and stated as in every view (`Generator::describe`).
            Kind::Generator => {
                let mut codes = crate::reading::generators::Codes::default();
                Ok(
                    match crate::reading::generators::read_generator(self, &mut codes, address) {
                        Ok(generator) => generator.describe(&info.type_info.name),
                        Err(_) => format!("<{} object at 0x{address:x}>", info.type_info.name),
                    },
                )
            }
            Kind::Type => match self.type_info(address) {
                Ok(class) => Ok(format!("<class '{}'>", class.name)),
                Err(_) => Ok(format!("<{} object at 0x{address:x}>", info.type_info.name)),
            },
            _ => {
                let mut render = |item| self.render_at(item, rendering, depth + 1, active);
                Ok(self
                    .render_native(info, kind, rendering, &mut render)?
                    .unwrap_or_else(|| {
                        format!("<{} object at 0x{address:x}>", info.type_info.name)
                    }))
            }
        }
    }

    /// The first `max_chars` characters of a compact `str` and its length.
    pub fn str_prefix(&self, address: u64, max_chars: usize) -> Result<(String, u64), ObjectError> {
        let o = &self.layout().offsets;
        let c = &self.layout().core;
        let missing = ObjectError::MissingOffset;
        let ascii_size = o
            .unicode_ascii_size
            .ok_or(missing("sizeof(PyASCIIObject)"))?;
        let compact_size = c.unicode_compact_size;
        let header = read_vec(self.memory(), address, ascii_size as usize, 256)?;
        let length = field_u64(&header, o.unicode_length.ok_or(missing("length"))?);
        let state =
            crate::process::memory::field_u32(&header, o.unicode_state.ok_or(missing("state"))?);
        let kind = (state >> c.unicode_state_kind_shift) & 7;
        let compact = (state >> c.unicode_state_compact_shift) & 1 == 1;
        let ascii = (state >> c.unicode_state_ascii_shift) & 1 == 1;
        if !compact || !matches!(kind, 1 | 2 | 4) || length > 1 << 40 {
            return Err(ObjectError::Invalid {
                address,
                expected: "str",
                detail: format!("state 0x{state:x}, length {length}"),
            });
        }
        let data = address + if ascii { ascii_size } else { compact_size };
        let shown = (length as usize).min(max_chars);
        // A str's characters are all mapped: one whose claimed end is not
        // readable has a wild length (a corrupt or torn object), which
        // would otherwise be shown as a real string with garbage after it.
        if length as usize > shown {
            let end = data.checked_add(length * kind as u64 - 1);
            if end.is_none_or(|end| read_vec(self.memory(), end, 1, 1).is_err()) {
                return Err(ObjectError::Invalid {
                    address,
                    expected: "str",
                    detail: format!("length {length} runs past readable memory"),
                });
            }
        }
        let bytes = read_vec(self.memory(), data, shown * kind as usize, 4 << 20)?;
        let text = match kind {
            1 => bytes.iter().map(|&b| b as char).collect(),
            2 => bytes
                .chunks_exact(2)
                .map(|c| {
                    char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]])))
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        };
        Ok((text, length))
    }

    /// The decimal value of an `int` (or `bool`) of any size up to
    /// [`MAX_INT_DIGITS`] 30-bit digits.
    pub fn int_decimal(&self, address: u64) -> Result<String, ObjectError> {
        let o = &self.layout().offsets;
        let c = &self.layout().core;
        let digits_at = c.long_ob_digit;
        let (negative, count) = match o.long_lv_tag {
            // 3.12+: lv_tag = ndigits << 3 | sign (0 positive, 1 zero, 2
            // negative), Include/cpython/longintrepr.h.
            Some(tag_at) => {
                let tag = read_u64(self.memory(), address + tag_at)?;
                (tag & 3 == 2, (tag >> 3) as usize)
            }
            None => {
                let size = self.reader.var_size(address)?;
                (size < 0, size.unsigned_abs() as usize)
            }
        };
        if count > MAX_INT_DIGITS {
            let digit_size = c.long_digit_size;
            let bytes = (count as u64).saturating_mul(digit_size);
            return Ok(
                if super::plausible::can_hold(self.memory(), address + digits_at, bytes) {
                    format!("<int of {count} digits>")
                } else {
                    format!(
                        "<int of {}>",
                        super::plausible::describe_implausible(count as u64, "digits")
                    )
                },
            );
        }
        let bits = c.long_digit_bits as u32;
        let bytes = read_vec(
            self.memory(),
            address + digits_at,
            count * 4,
            MAX_INT_DIGITS * 4,
        )?;
        let digits: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & ((1u32 << bits) - 1))
            .collect();
        let text = digits_to_decimal(&digits, bits);
        Ok(if negative && text != "0" {
            format!("-{text}")
        } else {
            text
        })
    }
}

/// Base-2**bits little-endian digits to decimal, by repeated division by
/// 10**9 (quadratic, fine for the bounded sizes read).
fn digits_to_decimal(digits: &[u32], bits: u32) -> String {
    let mut number: Vec<u32> = digits.to_vec();
    while number.last() == Some(&0) {
        number.pop();
    }
    if number.is_empty() {
        return "0".into();
    }
    let mut chunks: Vec<u32> = Vec::new();
    while !number.is_empty() {
        let mut remainder: u64 = 0;
        for digit in number.iter_mut().rev() {
            let value = (remainder << bits) | u64::from(*digit);
            *digit = (value / 1_000_000_000) as u32;
            remainder = value % 1_000_000_000;
        }
        chunks.push(remainder as u32);
        while number.last() == Some(&0) {
            number.pop();
        }
    }
    let mut text = chunks.last().map(|c| c.to_string()).unwrap_or_default();
    for chunk in chunks.iter().rev().skip(1) {
        text.push_str(&format!("{chunk:09}"));
    }
    text
}

/// `repr(float)`: the shortest round-tripping digits, positional for
/// exponents -4..16 and scientific otherwise (Python/pystrtod.c, 'r' mode).
pub fn float_repr(value: f64) -> String {
    format_float(value, true)
}

fn format_float(value: f64, force_point: bool) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "d.ddde±x".
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            let zeros = "0".repeat(point as usize - digits.len());
            if force_point {
                format!("{digits}{zeros}.0")
            } else {
                format!("{digits}{zeros}")
            }
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{text}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.abs())
    }
}

/// `repr(complex)` (Objects/complexobject.c complex_repr): no `.0` on
/// integral parts, no parentheses when the real part is +0.
fn complex_repr(real: f64, imag: f64) -> String {
    let imag_text = format_float(imag, false);
    if real == 0.0 && real.is_sign_positive() {
        return format!("{imag_text}j");
    }
    let sign = if imag_text.starts_with('-') { "" } else { "+" };
    format!("({}{sign}{imag_text}j)", format_float(real, false))
}

/// `repr(bytes)`: b'...' with Python's escapes and quote choice.
pub(super) fn bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::from("b");
    out.push(quote as char);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b if b == quote => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote as char);
    out
}

fn clip(text: String, max: usize) -> String {
    if text.chars().count() > max {
        text.chars().take(max.saturating_sub(3)).collect::<String>() + "..."
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_like_python_repr() {
        for (value, python) in [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123.456, "123.456"),
            (f64::INFINITY, "inf"),
            (2.5e-300, "2.5e-300"),
        ] {
            assert_eq!(float_repr(value), python, "{value}");
        }
    }

    #[test]
    fn complex_numbers_render_like_python_repr() {
        assert_eq!(complex_repr(0.0, 1.0), "1j");
        assert_eq!(complex_repr(1.5, 2.0), "(1.5+2j)");
        assert_eq!(complex_repr(-1.0, -0.5), "(-1-0.5j)");
    }

    #[test]
    fn big_digits_become_decimal() {
        // 2**60 = digits [0, 0, 1] in base 2**30.
        assert_eq!(digits_to_decimal(&[0, 0, 1], 30), "1152921504606846976");
        assert_eq!(digits_to_decimal(&[], 30), "0");
        assert_eq!(digits_to_decimal(&[7], 30), "7");
    }

    #[test]
    fn bytes_render_with_python_escapes() {
        assert_eq!(bytes_repr(b"a'\x00\xff"), "b\"a'\\x00\\xff\"");
        assert_eq!(bytes_repr(b"ok\n"), "b'ok\\n'");
    }
}
