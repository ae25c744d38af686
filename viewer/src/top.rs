//! `top`: functions (or lines, or instructions) by self and total share of
//! the samples, the post-hoc cousin of `py-spy top`.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::aggregate::Profile;
use crate::symbols::SymbolId;

/// Samples counted against one symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The symbol.
    pub symbol: SymbolId,
    /// Samples where it was the innermost frame ("self" or "own").
    pub own: u64,
    /// Samples where it was anywhere on the stack, counted once per sample
    /// even when it recurses.
    pub total: u64,
}

/// Every symbol's shares, most own samples first (ties: most total, then
/// label).
pub fn shares(profile: &Profile) -> Vec<Share> {
    let count = profile.symbols.all().len();
    let mut own = vec![0u64; count];
    let mut total = vec![0u64; count];
    // Stamp of the last stack that counted a symbol's total, so recursion
    // counts once per stack without a set per stack.
    let mut stamp = vec![usize::MAX; count];
    for (index, stack) in profile.stacks.iter().enumerate() {
        if let Some(&leaf) = stack.frames.last() {
            own[leaf as usize] += stack.count;
        }
        for &frame in &stack.frames {
            let frame = frame as usize;
            if stamp[frame] != index {
                stamp[frame] = index;
                total[frame] += stack.count;
            }
        }
    }
    let mut shares: Vec<Share> = (0..count)
        .filter(|&id| total[id] > 0)
        .map(|id| Share {
            symbol: id as SymbolId,
            own: own[id],
            total: total[id],
        })
        .collect();
    shares.sort_by(|a, b| {
        b.own
            .cmp(&a.own)
            .then(b.total.cmp(&a.total))
            .then_with(|| profile.label(a.symbol).cmp(profile.label(b.symbol)))
    });
    shares
}

/// Writes the table of the `limit` first shares (all if `limit` is 0).
pub fn write(profile: &Profile, limit: usize, mut out: impl Write) -> io::Result<()> {
    let shares = shares(profile);
    // Counts are sampler ticks: a sample taken after ticks the sampler
    // missed stands for them too (format version 3, `SampleBatch.weight`).
    let ticks = if profile.total == profile.samples {
        String::new()
    } else {
        format!(
            " (standing for {} sampler ticks, with those it missed)",
            profile.total
        )
    };
    writeln!(
        out,
        "{} samples counted{ticks} of {} read, {} threads, by {}",
        profile.samples,
        profile.read,
        profile.threads.len(),
        profile.symbols.granularity()
    )?;
    writeln!(
        out,
        "{:>7}  {:>7}  {:>10}  {:>10}  Function",
        "%Own", "%Total", "Own", "Total"
    )?;
    let percent = |n: u64| {
        if profile.total == 0 {
            0.0
        } else {
            100.0 * n as f64 / profile.total as f64
        }
    };
    let shown = if limit == 0 { shares.len() } else { limit };
    for share in shares.iter().take(shown) {
        writeln!(
            out,
            "{:>6.2}%  {:>6.2}%  {:>10}  {:>10}  {}",
            percent(share.own),
            percent(share.total),
            share.own,
            share.total,
            profile.label(share.symbol)
        )?;
    }
    if shares.len() > shown {
        writeln!(out, "({} more; --limit 0 shows all)", shares.len() - shown)?;
    }
    out.flush()
}

/// The same table as JSON (`top --json`), one document: the totals, each
/// thread's ticks and time, and the `limit` first shares (all if 0), in the
/// order [`write`] prints them. Times are ticks × the sampling period in
/// nanoseconds ([`Profile::ticks_ns`]), the rule every output follows.
pub fn json(profile: &Profile, limit: usize) -> Value {
    let shares = shares(profile);
    let shown = if limit == 0 { shares.len() } else { limit };
    let percent = |n: u64| {
        if profile.total == 0 {
            0.0
        } else {
            100.0 * n as f64 / profile.total as f64
        }
    };
    let threads: Vec<Value> = profile
        .threads
        .values()
        .map(|thread| {
            json!({
                "thread": thread.id,
                "pid": thread.pid,
                "tid": thread.tid(),
                "name": thread.name,
                "describe": thread.describe(),
                "is_main": thread.is_main,
                "ticks": thread.samples,
                "time_ns": profile.ticks_ns(thread.samples),
            })
        })
        .collect();
    let functions: Vec<Value> = shares
        .iter()
        .take(shown)
        .map(|share| {
            let symbol = profile.symbols.get(share.symbol);
            json!({
                "label": symbol.label,
                "function": symbol.function,
                "file": symbol.file,
                "line": if symbol.line != 0 { symbol.line } else { symbol.first_line },
                "own": share.own,
                "total": share.total,
                "own_percent": percent(share.own),
                "total_percent": percent(share.total),
                "own_ns": profile.ticks_ns(share.own),
                "total_ns": profile.ticks_ns(share.total),
            })
        })
        .collect();
    json!({
        "granularity": profile.symbols.granularity().to_string(),
        "samples": profile.samples,
        "ticks": profile.total,
        "read": profile.read,
        "period_ns": profile.sample_period_ns(),
        "time_ns": profile.ticks_ns(profile.total),
        "threads": threads,
        "functions": functions,
        "more": shares.len().saturating_sub(shown),
    })
}

/// How `pydeep top` orders its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Most own (self) time first.
    Own,
    /// Most total time first.
    Total,
}

/// What one thread did over the samples read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadActivity {
    /// Sampler ticks its samples stand for.
    pub ticks: u64,
    /// Of those, ticks it was running (not idle in a syscall, lock or sleep).
    pub active: u64,
    /// Of those, ticks it held the GIL.
    pub gil: u64,
}

/// The live view of `pydeep top` for the readable part of the recording at
/// `path` (a recording still being written: its complete chunks): a header
/// with the target, rate and missed ticks, one line per thread (running and
/// GIL shares), and the function table of [`write`], sorted by `sort`, at
/// most `limit` rows.
pub fn live_screen(
    path: &std::path::Path,
    sort: SortBy,
    limit: usize,
) -> Result<String, crate::ViewError> {
    use crate::filter::Filter;
    use crate::input::Input;
    use crate::symbols::Granularity;
    use pydeep_format::proto::SampleFlag;
    use std::collections::BTreeMap;

    let mut input = Input::open(path)?;
    let header = input.header().clone();
    let mut threads: BTreeMap<u32, ThreadActivity> = BTreeMap::new();
    let mut samples = 0u64;
    let mut last_ns = 0u64;
    input.for_each_sample(|_, sample| {
        samples += 1;
        last_ns = last_ns.max(sample.time_ns);
        let ticks = u64::from(sample.weight.max(1));
        let thread = threads.entry(sample.thread).or_default();
        thread.ticks += ticks;
        if sample.flags & SampleFlag::Active as u32 != 0 {
            thread.active += ticks;
        }
        if sample.flags & SampleFlag::HoldsGil as u32 != 0 {
            thread.gil += ticks;
        }
    });
    let tables_threads: Vec<(u32, String)> = threads
        .keys()
        .map(|&id| {
            let info = crate::aggregate::ThreadInfo::from_tables(input.tables(), id);
            (id, info.describe())
        })
        .collect();
    let profile = Profile::read(
        &mut Input::open(path)?,
        &Filter::default(),
        Granularity::Function,
    );

    let mut out = String::new();
    use std::fmt::Write as _;
    let python = header
        .python_version
        .as_ref()
        .map(|v| {
            format!(
                "Python {}.{}.{}{}",
                v.major,
                v.minor,
                v.patch,
                if v.free_threaded {
                    " free-threaded"
                } else {
                    ""
                }
            )
        })
        .unwrap_or_else(|| "Python ?".into());
    let rate = header.sampling.as_ref().map_or(0.0, |s| s.rate_hz);
    let elapsed = last_ns.saturating_sub(header.start_clock_ns) as f64 / 1e9;
    let ticks: u64 = threads.values().map(|t| t.ticks).sum();
    let missed = ticks.saturating_sub(samples);
    let _ = writeln!(
        out,
        "pydeep top: pid {}, {python}, {rate} Hz, {elapsed:.1} s, {samples} samples, {missed} missed ticks ({:.1}%)",
        header.pid,
        if ticks == 0 { 0.0 } else { 100.0 * missed as f64 / ticks as f64 },
    );
    let free_threaded = header
        .python_version
        .as_ref()
        .is_some_and(|v| v.free_threaded);
    for (id, name) in &tables_threads {
        let t = &threads[id];
        let share = |n: u64| {
            if t.ticks == 0 {
                0.0
            } else {
                100.0 * n as f64 / t.ticks as f64
            }
        };
        let gil = if free_threaded {
            "no GIL (free-threaded)".to_string()
        } else {
            format!("GIL {:5.1}%", share(t.gil))
        };
        let _ = writeln!(
            out,
            "  {:<48} running {:5.1}%  {gil}",
            cut(&pydeep_format::text::escape(name), 48),
            share(t.active)
        );
    }
    let mut shares = shares(&profile);
    if sort == SortBy::Total {
        shares.sort_by(|a, b| b.total.cmp(&a.total).then(b.own.cmp(&a.own)));
    }
    let seconds = |n: u64| profile.ticks_ns(n) as f64 / 1e9;
    let percent = |n: u64| {
        if profile.total == 0 {
            0.0
        } else {
            100.0 * n as f64 / profile.total as f64
        }
    };
    let _ = writeln!(
        out,
        "\n{:>7}  {:>7}  {:>9}  {:>9}  Function   (sorted by {}; keys: o own, t total, q quit)",
        if sort == SortBy::Own { "%Own*" } else { "%Own" },
        if sort == SortBy::Total {
            "%Total*"
        } else {
            "%Total"
        },
        "Own s",
        "Total s",
        if sort == SortBy::Own { "own" } else { "total" },
    );
    for share in shares
        .iter()
        .take(if limit == 0 { usize::MAX } else { limit })
    {
        let _ = writeln!(
            out,
            "{:>6.2}%  {:>6.2}%  {:>9.2}  {:>9.2}  {}",
            percent(share.own),
            percent(share.total),
            seconds(share.own),
            seconds(share.total),
            profile.label(share.symbol)
        );
    }
    Ok(out)
}

/// The first `width` characters of `text`.
fn cut(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}
