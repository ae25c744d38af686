//! Which lines of the target's source files a recording embeds.
//!
//! A recording is self-contained: the viewer shows the source of every
//! function it recorded without the target's files. Embedding each file
//! whole costs most of a short recording's bytes, though: a 2 s recording
//! of four threads carried `threading.py` (58 KB, 15 KB deflated) for the
//! three functions of it on the stacks, 6 of its 12 bytes per sample. So
//! by default each code object gets the span of lines it covers
//! (`co_firstlineno` to the last line its line table names); spans of one
//! file that overlap or touch are merged into a new span, and a code object
//! whose lines an earlier span already holds names that span.
//! `pydeep record --full-source` embeds whole files instead.
//!
//! Each file is read once per process (the first time one of its code
//! objects is recorded) and kept, so that every span of it comes from the
//! same reading even if the file changes on disk meanwhile. It is read only
//! through the target's root and only if the target's own user could read
//! it (source_access.rs); a file withheld or missing is recorded with why.

use std::collections::HashMap;
use std::io::Write;

use pydeep_format::Writer;

use crate::process::source_access::{read_as_target, Unreadable};

/// Lines kept around a code object's span: the line above (a decorator or
/// comment often introduces a function) is not worth a second span later.
const CONTEXT_LINES: u32 = 1;

/// One source file as read, and what of it is embedded.
struct File {
    /// String id of its name in the recording.
    path: u64,
    /// Its bytes, or why it was not read.
    content: Result<Vec<u8>, Unreadable>,
    /// The definition standing for the whole file (or for its absence).
    whole: Option<u64>,
    /// (first line, last line, definition id) of each span embedded.
    spans: Vec<(u32, u32, u64)>,
}

/// The source files embedded so far, by process and the name its code
/// objects give them (two processes may see different files under one
/// name, and may not have the same right to read them).
#[derive(Default)]
pub struct Sources {
    files: HashMap<(i32, String), File>,
    /// Embed whole files rather than the spans code objects cover.
    whole_files: bool,
    /// Files withheld because the target's user could not read them:
    /// (name, why), in the order found.
    withheld: Vec<(String, String)>,
}

impl Sources {
    /// Embeds spans of lines, or whole files if `whole_files`.
    pub fn new(whole_files: bool) -> Sources {
        Sources {
            files: HashMap::new(),
            whole_files,
            withheld: Vec::new(),
        }
    }

    /// Forgets the files read for `pid` (its program image is gone).
    pub fn forget_process(&mut self, pid: i32) {
        self.files.retain(|(owner, _), _| *owner != pid);
    }

    /// Files withheld because the target's own user could not read them,
    /// with why.
    pub fn withheld(&self) -> &[(String, String)] {
        &self.withheld
    }

    /// The source definition holding `lines` (first and last, 1-based) of
    /// `filename` as the target `pid` sees it, defining it on first use;
    /// `lines` None (a code object naming no line) embeds the whole file.
    /// Returns the id and whether a definition was written.
    pub fn embed<W: Write>(
        &mut self,
        writer: &mut Writer<W>,
        pid: i32,
        filename: &str,
        lines: Option<(u32, u32)>,
    ) -> (u64, bool) {
        let whole_files = self.whole_files;
        let withheld = &mut self.withheld;
        let file = self
            .files
            .entry((pid, filename.to_owned()))
            .or_insert_with(|| {
                let content = read_as_target(pid, filename);
                if let Err(Unreadable::Forbidden(why)) = &content {
                    withheld.push((filename.to_owned(), why.clone()));
                }
                File {
                    path: writer.intern_string(filename),
                    content,
                    whole: None,
                    spans: Vec::new(),
                }
            });
        let lines = lines.filter(|(first, last)| *first >= 1 && first <= last);
        let (Ok(content), Some((first, last)), false) = (&file.content, lines, whole_files) else {
            if let Some(id) = file.whole {
                return (id, false);
            }
            let id = match &file.content {
                Ok(content) => writer.define_source_file(file.path, Some(content.clone())),
                Err(why) => writer.define_unreadable_source(file.path, why.reason()),
            };
            file.whole = Some(id);
            return (id, true);
        };
        if let Some(id) = file.whole {
            return (id, false);
        }
        let first = first.saturating_sub(CONTEXT_LINES).max(1);
        if let Some(&(_, _, id)) = file
            .spans
            .iter()
            .find(|(a, b, _)| *a <= first && last <= *b)
        {
            return (id, false);
        }
        let (first, last) = merged(&file.spans, first, last);
        let id =
            writer.define_source_span(file.path, first, lines_of(content, first, last).to_vec());
        file.spans.push((first, last, id));
        (id, true)
    }
}

/// `[first, last]` widened to every span of `spans` it overlaps or touches,
/// repeatedly (a merge can reach further spans).
fn merged(spans: &[(u32, u32, u64)], mut first: u32, mut last: u32) -> (u32, u32) {
    // Each round widens over at least one more span, or ends.
    for _ in 0..=spans.len() {
        let mut widened = false;
        for &(a, b, _) in spans {
            let touches = a <= last.saturating_add(1) && first <= b.saturating_add(1);
            if touches && (a < first || b > last) {
                first = first.min(a);
                last = last.max(b);
                widened = true;
            }
        }
        if !widened {
            break;
        }
    }
    (first, last)
}

/// The bytes of lines `first..=last` (1-based) of `content`, with their line
/// ends; lines past the end are simply not there.
fn lines_of(content: &[u8], first: u32, last: u32) -> &[u8] {
    let mut line = 1u32;
    let mut start = if first <= 1 { Some(0) } else { None };
    for (i, &byte) in content.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        if line == last {
            return &content[start.unwrap_or(i + 1)..=i];
        }
        line += 1;
        if line == first {
            start = Some(i + 1);
        }
    }
    start.map_or(&[][..], |s| &content[s..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"one\ntwo\nthree\nfour\nfive";

    #[test]
    fn lines_are_cut_with_their_ends_and_the_last_line_may_lack_one() {
        assert_eq!(lines_of(TEXT, 1, 1), b"one\n");
        assert_eq!(lines_of(TEXT, 2, 3), b"two\nthree\n");
        assert_eq!(lines_of(TEXT, 4, 9), b"four\nfive");
        assert_eq!(lines_of(TEXT, 5, 5), b"five");
        assert_eq!(lines_of(TEXT, 1, 5), TEXT);
        assert_eq!(lines_of(TEXT, 6, 8), b"");
        assert_eq!(lines_of(b"a\nb\n", 2, 2), b"b\n");
        assert_eq!(lines_of(b"a\nb\n", 3, 3), b"");
    }

    #[test]
    fn spans_that_overlap_or_touch_merge_and_apart_ones_do_not() {
        let spans = [(10, 20, 1), (30, 40, 2), (42, 50, 3)];
        assert_eq!(merged(&spans, 21, 25), (10, 25), "touches 10-20");
        assert_eq!(merged(&spans, 22, 28), (22, 28), "touches nothing");
        assert_eq!(
            merged(&spans, 15, 41),
            (10, 50),
            "reaches the third through the second"
        );
        assert_eq!(merged(&spans, 1, 100), (1, 100));
    }

    #[test]
    fn a_code_objects_lines_are_embedded_once_and_whole_files_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let name = path.display().to_string();
        let me = std::process::id() as i32;

        let mut writer = Writer::new(
            Vec::new(),
            pydeep_format::proto::Header::default(),
            Default::default(),
        )
        .unwrap();
        let mut sources = Sources::new(false);
        let (a, new) = sources.embed(&mut writer, me, &name, Some((5, 8)));
        assert!(new);
        assert_eq!(
            sources.embed(&mut writer, me, &name, Some((6, 7))),
            (a, false)
        );
        let (b, new) = sources.embed(&mut writer, me, &name, Some((20, 22)));
        assert!(new && b != a);
        // Touching the first span: a new span covering both.
        let (c, _) = sources.embed(&mut writer, me, &name, Some((9, 12)));
        let spans = &sources.files[&(me, name.clone())].spans;
        assert_eq!(
            spans.iter().find(|s| s.2 == c).map(|s| (s.0, s.1)),
            Some((4, 12))
        );
        let (missing, new) = sources.embed(&mut writer, me, "/no/such/file.py", Some((1, 2)));
        assert!(new);
        assert_eq!(
            sources.embed(&mut writer, me, "/no/such/file.py", Some((3, 4))),
            (missing, false)
        );

        let mut whole = Sources::new(true);
        let (w, _) = whole.embed(&mut writer, me, &name, Some((5, 8)));
        assert_eq!(
            whole.embed(&mut writer, me, &name, Some((20, 22))),
            (w, false)
        );
    }
}
