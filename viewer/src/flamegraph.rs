//! Interactive flamegraph SVG (search, zoom) drawn by inferno from the
//! profile's folded stacks.

use std::io::{self, Write};

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self as inferno_flamegraph, Direction};

use crate::aggregate::Profile;
use crate::collapsed;

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
}

/// Draws `profile` as an SVG into `out`. The root frame "all" carries the
/// profile's total sample count.
pub fn write(profile: &Profile, options: &FlamegraphOptions, out: impl Write) -> io::Result<()> {
    let lines: Vec<String> = collapsed::folded(profile, options.reverse)
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    let mut inferno_options = inferno_flamegraph::Options::default();
    inferno_options.title = options.title.clone().unwrap_or_else(|| "pydeep".into());
    inferno_options.count_name = "samples".into();
    inferno_options.image_width = options.width;
    inferno_options.subtitle = Some(subtitle(profile));
    // Colours by Python semantics (stdlib, site-packages, user code), hashed
    // from the name so a function keeps its colour across graphs and runs.
    inferno_options.colors = Palette::Multi(MultiPalette::Python);
    inferno_options.hash = true;
    if options.reverse {
        inferno_options.direction = Direction::Inverted;
    }
    if lines.is_empty() {
        // inferno refuses an empty input; an empty profile is still an answer.
        return write_empty(&inferno_options.title, out);
    }
    inferno_flamegraph::from_lines(&mut inferno_options, lines.iter().map(String::as_str), out)
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
