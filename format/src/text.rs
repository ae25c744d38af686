//! The one escaping helper of every text output: names a target controls
//! (`co_qualname`, `co_filename`, thread names, type and variable names,
//! task names) can hold anything, and must not reach a terminal as control
//! sequences, break a line-per-record format (`collapsed`), or make an SVG
//! ill-formed (XML 1.0 allows no C0 control but tab, LF and CR, even
//! escaped). Text renderers pass every such name through [`escape`].

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every character that could control a terminal or break a
/// line written as an escape: C0 controls (tab, line feed and ESC
/// included) and DEL as `\xNN`, C1 controls as `\u{NN}`, and the
/// invisible bidirectional overrides (U+200E, U+200F, U+202A to U+202E,
/// U+2066 to U+2069, which can make text read in another order than it
/// is) as `\u{NNNN}`. A backslash is kept as it is: the escapes are for
/// reading, not for decoding back. Borrowed when nothing needed escaping,
/// as is almost always the case.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape("plain_name (app.py)"), Cow::Borrowed(_)));
        assert_eq!(escape("é→ λ"), "é→ λ");
        assert_eq!(escape("evil\x1b[2Jname\n"), "evil\\x1b[2Jname\\x0a");
        assert_eq!(escape("a\tb\rc\0d\x7f"), "a\\x09b\\x0dc\\x00d\\x7f");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("back\\slash"), "back\\slash");
    }
}
