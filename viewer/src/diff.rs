//! `diff`: what grew and shrank between two recordings of the same program.
//!
//! Each recording is read into its own [`Profile`] and measured with
//! [`top::shares`], the same numbers `top` prints; symbols are matched by
//! their full label ([`crate::labels`]), so the same function in both
//! recordings is one row. Shares are compared in points of each
//! recording's own total (a recording twice as long does not make
//! everything "grow"); times (ticks × period) are given too.
//!
//! The differential flamegraph is inferno's: frames are as wide as in the
//! second recording, red where the share grew and blue where it shrank
//! (the first recording's counts scaled to the second's total first).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde_json::{json, Value};

use crate::aggregate::Profile;
use crate::collapsed;
use crate::flamegraph;
use crate::labels::{self, Labels};
use crate::top;

/// Ticks of one symbol in one recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ticks where it was the innermost frame.
    pub own: u64,
    /// Ticks where it was on the stack.
    pub total: u64,
}

/// One symbol's counts in both recordings.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// `qualname (/full/path.py:line)`.
    pub label: String,
    /// `qualname (file.py:line)`.
    pub short: String,
    /// In the first recording (zero if absent).
    pub before: Counts,
    /// In the second recording (zero if absent).
    pub after: Counts,
    /// Own share in the second minus own share in the first, in points.
    pub own_change: f64,
    /// Total share in the second minus total share in the first, in points.
    pub total_change: f64,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Every symbol of either profile, the largest change first: of own or of
/// total share, whichever is larger (ties: label).
pub fn changes(before: &Profile, after: &Profile) -> Vec<Change> {
    let mut rows: BTreeMap<String, Change> = BTreeMap::new();
    for (side, profile) in [(0, before), (1, after)] {
        for share in top::shares(profile) {
            let symbol = profile.symbols.get(share.symbol);
            let label = labels::full_label(symbol);
            let row = rows.entry(label.clone()).or_insert_with(|| Change {
                label,
                short: labels::short_label(symbol),
                before: Counts::default(),
                after: Counts::default(),
                own_change: 0.0,
                total_change: 0.0,
            });
            let counts = Counts {
                own: share.own,
                total: share.total,
            };
            if side == 0 {
                row.before = counts;
            } else {
                row.after = counts;
            }
        }
    }
    let mut rows: Vec<Change> = rows.into_values().collect();
    for row in &mut rows {
        row.own_change =
            percent(row.after.own, after.total) - percent(row.before.own, before.total);
        row.total_change =
            percent(row.after.total, after.total) - percent(row.before.total, before.total);
    }
    let largest = |row: &Change| row.own_change.abs().max(row.total_change.abs());
    rows.sort_by(|a, b| {
        largest(b)
            .total_cmp(&largest(a))
            .then_with(|| a.label.cmp(&b.label))
    });
    rows
}

/// Writes the table of the `limit` largest changes (all if 0).
pub fn write_text(
    before: &Profile,
    after: &Profile,
    rows: &[Change],
    limit: usize,
    mut out: impl Write,
) -> io::Result<()> {
    let seconds = |profile: &Profile| profile.ticks_ns(profile.total) as f64 / 1e9;
    writeln!(
        out,
        "before: {} ticks ({:.3} s), after: {} ticks ({:.3} s), by {}; shares in % of each recording",
        before.total,
        seconds(before),
        after.total,
        seconds(after),
        after.symbols.granularity()
    )?;
    writeln!(
        out,
        "{:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  Function",
        "%Own was", "%Own now", "change", "%Tot was", "%Tot now", "change"
    )?;
    let shown = if limit == 0 { rows.len() } else { limit };
    for row in rows.iter().take(shown) {
        writeln!(
            out,
            "{:>7.2}%  {:>7.2}%  {:>+8.2}  {:>7.2}%  {:>7.2}%  {:>+8.2}  {}",
            percent(row.before.own, before.total),
            percent(row.after.own, after.total),
            row.own_change,
            percent(row.before.total, before.total),
            percent(row.after.total, after.total),
            row.total_change,
            row.label
        )?;
    }
    if rows.len() > shown {
        writeln!(out, "({} more; --limit 0 shows all)", rows.len() - shown)?;
    }
    out.flush()
}

/// The table as one JSON document (`diff --json`; schema in notes/viewer.md).
pub fn json(before: &Profile, after: &Profile, rows: &[Change], limit: usize) -> Value {
    let shown = if limit == 0 { rows.len() } else { limit };
    let side = |profile: &Profile, counts: Counts| {
        json!({
            "own": counts.own,
            "total": counts.total,
            "own_percent": percent(counts.own, profile.total),
            "total_percent": percent(counts.total, profile.total),
            "own_ns": profile.ticks_ns(counts.own),
            "total_ns": profile.ticks_ns(counts.total),
        })
    };
    let summary = |profile: &Profile| {
        json!({
            "samples": profile.samples,
            "ticks": profile.total,
            "period_ns": profile.sample_period_ns(),
            "time_ns": profile.ticks_ns(profile.total),
        })
    };
    json!({
        "granularity": after.symbols.granularity().to_string(),
        "before": summary(before),
        "after": summary(after),
        "functions": rows.iter().take(shown).map(|row| json!({
            "label": row.label,
            "short": row.short,
            "before": side(before, row.before),
            "after": side(after, row.after),
            "own_change": row.own_change,
            "total_change": row.total_change,
        })).collect::<Vec<_>>(),
        "more": rows.len().saturating_sub(shown),
    })
}

/// Draws the differential flamegraph of `before` → `after` as an SVG.
pub fn write_flamegraph(before: &Profile, after: &Profile, out: impl Write) -> io::Result<()> {
    let (before_labels, after_labels) = (Labels::new(before), Labels::new(after));
    let old = collapsed::folded_with(before, false, None, &|id| before_labels.short(id));
    let new = collapsed::folded_with(after, false, None, &|id| after_labels.short(id));
    let scale = if before.total == 0 {
        0.0
    } else {
        after.total as f64 / before.total as f64
    };
    let mut merged: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (stack, count) in old {
        merged.entry(stack).or_default().0 = (count as f64 * scale).round() as u64;
    }
    for (stack, count) in new {
        merged.entry(stack).or_default().1 = count;
    }
    let lines: Vec<String> = merged
        .into_iter()
        .map(|(stack, (was, now))| format!("{stack} {was} {now}"))
        .collect();
    let mut full: HashMap<&str, &str> = HashMap::new();
    for (profile, labels) in [(before, &before_labels), (after, &after_labels)] {
        for id in 0..profile.symbols.all().len() as u32 {
            full.insert(labels.short(id), labels.full(id));
        }
    }
    let title = "pydeep diff: red grew, blue shrank (share of each recording)";
    flamegraph::write_differential(&lines, title, &full, out)
}
