//! Interactive flamegraph SVG (search, zoom) drawn by inferno from the
//! profile's folded stacks.
//!
//! Frames show short labels, `qualname (file.py:line)`; each frame's title
//! (its tooltip, and what search matches) carries the full path
//! ([`crate::labels`]). inferno derives a frame's text from its title when
//! it zooms or resizes, so the SVG's script is given the same rule
//! (directories left out of the file); it is also kept from setting a
//! negative width when the page is narrower than its padding.

use std::collections::HashMap;
use std::io::{self, Write};

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self as inferno_flamegraph, Direction};

use crate::aggregate::{Profile, ThreadInfo};
use crate::collapsed;
use crate::labels::Labels;
use crate::symbols::sanitize;

/// How the flamegraph is drawn. The default is a classic flame graph,
/// callers at the bottom, titled "pydeep".
#[derive(Clone, Debug, Default)]
pub struct FlamegraphOptions {
    /// Title above the graph (default "pydeep").
    pub title: Option<String>,
    /// Reversed icicle graph: stacks are reversed (innermost frame at the
    /// root, so each function's callers are merged under it) and drawn top
    /// down. Default false.
    pub reverse: bool,
    /// Image width in pixels (default: inferno's 1200).
    pub width: Option<usize>,
    /// One root frame per thread (`MainThread (pid 12, tid 34)`) under
    /// "all". Default false: threads merged.
    pub per_thread: bool,
    /// What the counts are, in the tooltips (default "samples"; "ns" for
    /// traced time).
    pub count_name: Option<String>,
}

/// Draws `profile` as an SVG into `out`. The root frame "all" carries the
/// profile's total sample count.
pub fn write(profile: &Profile, options: &FlamegraphOptions, out: impl Write) -> io::Result<()> {
    let labels = Labels::new(profile);
    let thread_root = |id: u32| {
        let name = profile
            .threads
            .get(&id)
            .map_or_else(|| format!("thread {id}"), ThreadInfo::describe);
        sanitize(&name)
    };
    let root: Option<&dyn Fn(u32) -> String> = options.per_thread.then_some(&thread_root);
    let lines: Vec<String> =
        collapsed::folded_with(profile, options.reverse, root, &|id| labels.short(id))
            .into_iter()
            .map(|(stack, count)| format!("{stack} {count}"))
            .collect();
    let mut inferno_options = inferno_flamegraph::Options::default();
    inferno_options.title = options.title.clone().unwrap_or_else(|| "pydeep".into());
    inferno_options.count_name = options
        .count_name
        .clone()
        .unwrap_or_else(|| "samples".into());
    inferno_options.image_width = options.width;
    inferno_options.subtitle = Some(subtitle(profile));
    // Colours by Python semantics (stdlib, site-packages, user code), hashed
    // from the name so a function keeps its colour across graphs and runs.
    inferno_options.colors = Palette::Multi(MultiPalette::Python);
    inferno_options.hash = true;
    if options.reverse {
        inferno_options.direction = Direction::Inverted;
    }
    let full: HashMap<&str, &str> = (0..profile.symbols.all().len() as u32)
        .map(|id| (labels.short(id), labels.full(id)))
        .collect();
    draw(&lines, inferno_options, &full, out)
}

/// Draws folded `lines` with inferno, then gives the frames' titles their
/// full labels from `full` (short label to full). inferno refuses an empty
/// input; an empty profile is still an answer (an empty page).
fn draw(
    lines: &[String],
    mut inferno_options: inferno_flamegraph::Options,
    full: &HashMap<&str, &str>,
    out: impl Write,
) -> io::Result<()> {
    if lines.is_empty() {
        return write_empty(&inferno_options.title, out);
    }
    let mut svg = Vec::new();
    inferno_flamegraph::from_lines(
        &mut inferno_options,
        lines.iter().map(String::as_str),
        &mut svg,
    )?;
    write_with_full_titles(&svg, full, out)
}

/// inferno's way of turning a frame's title into its text, and ours: the
/// title without its counts, then the file without its directories.
const INFERNO_FRAME_TEXT: &str = r#"find_child(e, "title").textContent.replace(/\([^(]*\)$/,"")"#;
const FRAME_TEXT: &str = "frame_text(e)";
const FRAME_TEXT_FUNCTION: &str = r#"
function frame_text(e) {
    return find_child(e, "title").textContent.replace(/\([^(]*\)$/, "")
        .replace(/ \((?:[^()]*\/)?([^()\/]*)\)/, " ($1)");
}
"#;
/// inferno sets the frames' width to the page's less the padding, negative
/// on a page narrower than the padding ("attribute width: negative value").
const INFERNO_FRAMES_WIDTH: &str =
    "frames.attributes.width.value = svg.width.baseVal.value - xpad * 2;";
const FRAMES_WIDTH: &str =
    "frames.attributes.width.value = Math.max(1, svg.width.baseVal.value - xpad * 2);";

/// Copies inferno's SVG to `out`, with each frame title's short label
/// replaced by the full one and the script patched (see the module's
/// documentation). Memory: inferno's SVG, which the caller holds, and the
/// patched head (style and script) only; frames are copied piece by piece.
fn write_with_full_titles(
    svg: &[u8],
    full: &HashMap<&str, &str>,
    out: impl Write,
) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let text = String::from_utf8_lossy(svg);
    // The script comes before the frames; only that head needs patching.
    let frames_at = text.find("<svg id=\"frames\"").unwrap_or(0);
    let (head, frames) = text.split_at(frames_at);
    let head = head
        .replace(INFERNO_FRAME_TEXT, FRAME_TEXT)
        .replace(INFERNO_FRAMES_WIDTH, FRAMES_WIDTH)
        .replacen("<![CDATA[", &format!("<![CDATA[{FRAME_TEXT_FUNCTION}"), 1);
    out.write_all(head.as_bytes())?;
    let mut rest = frames;
    while let Some(at) = rest.find("<title>") {
        let (before, from) = rest.split_at(at + "<title>".len());
        out.write_all(before.as_bytes())?;
        let Some(end) = from.find("</title>") else {
            rest = from;
            break;
        };
        let title = &from[..end];
        let full_title = title
            .rsplit_once(" (")
            .and_then(|(name, counts)| Some((full.get(unescape(name).as_str())?, counts)));
        match full_title {
            Some((full, counts)) => {
                out.write_all(escape(full).as_bytes())?;
                out.write_all(b" (")?;
                out.write_all(counts.as_bytes())?;
            }
            None => out.write_all(title.as_bytes())?,
        }
        rest = &from[end..];
    }
    out.write_all(rest.as_bytes())?;
    out.flush()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Draws folded lines with two counts each (`stack before after`) as
/// inferno's differential flamegraph titled `title`, with the frames'
/// titles given their full labels from `full` (short label to full).
pub(crate) fn write_differential(
    lines: &[String],
    title: &str,
    full: &HashMap<&str, &str>,
    out: impl Write,
) -> io::Result<()> {
    let mut inferno_options = inferno_flamegraph::Options::default();
    inferno_options.title = title.to_string();
    inferno_options.count_name = "samples".into();
    draw(lines, inferno_options, full, out)
}

fn subtitle(profile: &Profile) -> String {
    let granularity = profile.symbols.granularity();
    let argv = profile.header.argv.join(" ");
    if argv.is_empty() {
        format!("pid {}, by {granularity}", profile.header.pid)
    } else {
        format!("{argv} (pid {}), by {granularity}", profile.header.pid)
    }
}

fn write_empty(title: &str, mut out: impl Write) -> io::Result<()> {
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    writeln!(
        out,
        r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="600" y="24" text-anchor="middle">{title}</text><text x="600" y="48" text-anchor="middle">No samples (0 samples)</text></svg>"#
    )?;
    out.flush()
}
