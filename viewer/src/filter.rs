//! Which samples an output counts: by process, thread, time window and flags.

use pydeep_format::proto::{self, SampleFlag};
use pydeep_format::{Sample, Tables};

use crate::ViewError;

/// The sample filter shared by every output. The default counts every sample.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep only threads of these processes (default: every process).
    pub pids: Vec<u32>,
    /// Keep only threads matching one of these: a thread name as `threading`
    /// knows it, or a number compared with the kernel thread id, the pthread
    /// id and the recording's own thread id (default: every thread).
    pub threads: Vec<String>,
    /// Start of the time window, in nanoseconds after the recording's start
    /// (default: the start).
    pub from_ns: Option<u64>,
    /// End of the time window (exclusive), in nanoseconds after the
    /// recording's start (default: the end).
    pub to_ns: Option<u64>,
    /// Keep only samples of running threads (flag ACTIVE); default false.
    pub active_only: bool,
    /// Keep only samples of threads holding the GIL (flag HOLDS_GIL); default false.
    pub gil_only: bool,
    /// Keep torn samples too (flag TORN: the thread's stack changed while
    /// it was read, so the stack may mix two moments and name a call chain
    /// that never existed). Default false: they are left out of profiles,
    /// as the agent's summary counts them apart.
    pub include_torn: bool,
}

impl Filter {
    /// Binds the filter to a recording whose stream clock started at
    /// `start_clock_ns` (the header's), ready to test samples.
    pub fn bind(&self, header: &proto::Header) -> BoundFilter {
        let start = header.start_clock_ns;
        let mut required = 0;
        if self.active_only {
            required |= SampleFlag::Active as u32;
        }
        if self.gil_only {
            required |= SampleFlag::HoldsGil as u32;
        }
        BoundFilter {
            filter: self.clone(),
            from: self.from_ns.map(|from| start.saturating_add(from)),
            to: self.to_ns.map(|to| start.saturating_add(to)),
            required_flags: required,
            refused_flags: if self.include_torn {
                0
            } else {
                SampleFlag::Torn as u32
            },
            thread_cache: Vec::new(),
        }
    }
}

/// A [`Filter`] bound to one recording's clock.
#[derive(Clone, Debug)]
pub struct BoundFilter {
    filter: Filter,
    from: Option<u64>,
    to: Option<u64>,
    required_flags: u32,
    refused_flags: u32,
    /// Decision per file-local thread id, with the ThreadDef fields it was
    /// taken on (a thread is defined again when its name changes).
    thread_cache: Vec<Option<(u32, u64, bool)>>,
}

impl BoundFilter {
    /// True if `sample` counts.
    pub fn accepts(&mut self, tables: &Tables, sample: &Sample) -> bool {
        if sample.flags & self.required_flags != self.required_flags
            || sample.flags & self.refused_flags != 0
        {
            return false;
        }
        if self.from.is_some_and(|from| sample.time_ns < from)
            || self.to.is_some_and(|to| sample.time_ns >= to)
        {
            return false;
        }
        if self.filter.pids.is_empty() && self.filter.threads.is_empty() {
            return true;
        }
        self.accepts_thread(tables, sample.thread)
    }

    fn accepts_thread(&mut self, tables: &Tables, thread: u32) -> bool {
        let definition = tables.threads.get(&thread);
        let (pid, name) = definition.map_or((0, 0), |t| (t.pid, t.name));
        let index = thread as usize;
        if let Some(Some((cached_pid, cached_name, decision))) = self.thread_cache.get(index) {
            if (*cached_pid, *cached_name) == (pid, name) {
                return *decision;
            }
        }
        let decision = self.decide_thread(tables, thread, definition);
        // File-local thread ids are small and dense; anything absurd is
        // simply not cached.
        if index < 1 << 20 {
            if self.thread_cache.len() <= index {
                self.thread_cache.resize(index + 1, None);
            }
            self.thread_cache[index] = Some((pid, name, decision));
        }
        decision
    }

    fn decide_thread(
        &self,
        tables: &Tables,
        thread: u32,
        definition: Option<&proto::ThreadDef>,
    ) -> bool {
        let pid = definition.map_or(0, |t| t.pid);
        if !self.filter.pids.is_empty() && !self.filter.pids.contains(&pid) {
            return false;
        }
        if self.filter.threads.is_empty() {
            return true;
        }
        let name = definition.map_or("", |t| tables.string(t.name));
        self.filter.threads.iter().any(|wanted| {
            if wanted == name {
                return true;
            }
            match wanted.parse::<u64>() {
                Ok(number) => definition.map_or(number == u64::from(thread), |t| {
                    number == t.native_id || number == t.thread_id || number == u64::from(t.id)
                }),
                Err(_) => false,
            }
        })
    }
}

/// Parses a time offset such as `1.5`, `1.5s`, `250ms`, `40us` or `100ns`
/// (plain numbers are seconds) into nanoseconds.
pub fn parse_offset(text: &str) -> Result<u64, ViewError> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e9)
    } else {
        (text, 1e9)
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value >= 0.0 && value.is_finite() => Ok((value * scale).round() as u64),
        _ => Err(ViewError::InvalidArgument(format!(
            "invalid time offset {text:?}: expected seconds after the start, like 1.5, 1.5s, 250ms"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_with_and_without_units() {
        assert_eq!(parse_offset("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_offset("2s").unwrap(), 2_000_000_000);
        assert_eq!(parse_offset("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_offset("40us").unwrap(), 40_000);
        assert_eq!(parse_offset("7ns").unwrap(), 7);
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("soon").is_err());
    }
}
