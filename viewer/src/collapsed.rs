//! Brendan Gregg's folded ("collapsed") stack format: one line per distinct
//! stack, frames outermost first separated by `;`, then a space and the
//! sample count. flamegraph.pl, inferno and speedscope all load it.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::aggregate::Profile;
use crate::symbols::SymbolId;

/// The profile's stacks merged across threads, as (folded stack, count)
/// sorted by folded stack. With `reverse`, frames are listed innermost
/// first (a "reversed" or bottom-up profile).
pub fn folded(profile: &Profile, reverse: bool) -> Vec<(String, u64)> {
    folded_with(profile, reverse, None, &|id| profile.label(id))
}

/// [`folded`] with each symbol named by `label` and, with `thread_root`,
/// each stack under a root frame naming its thread (given the file-local
/// thread id; it should be free of `;` and line breaks).
pub fn folded_with<'p>(
    profile: &'p Profile,
    reverse: bool,
    thread_root: Option<&dyn Fn(u32) -> String>,
    label: &dyn Fn(SymbolId) -> &'p str,
) -> Vec<(String, u64)> {
    let mut merged: HashMap<String, u64> = HashMap::new();
    let mut line = String::new();
    for stack in &profile.stacks {
        line.clear();
        if let Some(root) = thread_root {
            line.push_str(&root(stack.thread));
        }
        let mut push = |id| {
            if !line.is_empty() {
                line.push(';');
            }
            line.push_str(label(id));
        };
        if reverse {
            stack.frames.iter().rev().for_each(|&id| push(id));
        } else {
            stack.frames.iter().for_each(|&id| push(id));
        }
        match merged.get_mut(line.as_str()) {
            Some(count) => *count += stack.count,
            None => {
                merged.insert(line.clone(), stack.count);
            }
        }
    }
    let mut lines: Vec<(String, u64)> = merged.into_iter().collect();
    lines.sort_unstable();
    lines
}

/// Writes the folded stacks of `profile`, one per line.
pub fn write(profile: &Profile, reverse: bool, mut out: impl Write) -> io::Result<()> {
    for (stack, count) in folded(profile, reverse) {
        writeln!(out, "{stack} {count}")?;
    }
    out.flush()
}
