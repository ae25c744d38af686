//! [`summarize`] and [`verify`]: what `pydeep info` and `pydeep verify` print.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto::{self, record::Kind};
use crate::{FormatError, Reader};

/// A problem found in a file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset of the chunk (or header) where it was found.
    pub offset: u64,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

fn problem_of(error: &FormatError, fallback_offset: u64) -> Problem {
    let offset = match error {
        FormatError::Truncated { offset, .. } | FormatError::Corrupt { offset, .. } => *offset,
        FormatError::BadMagic | FormatError::UnsupportedVersion(_) => 0,
        _ => fallback_offset,
    };
    Problem {
        offset,
        message: error.to_string(),
    }
}

/// How many process endings [`Summary`] and [`VerifyReport`] keep in full;
/// the rest are only counted.
pub const ENDINGS_SHOWN: usize = 10;

/// Says in words how a process event left a process ("pid 42: exited with
/// status 3 (...)"), or `None` for events that are not an ending (attached,
/// spawned).
pub fn describe_ending(event: &proto::ProcessEvent) -> Option<String> {
    use proto::ProcessEventKind as K;
    let kind = K::try_from(event.kind).ok()?;
    let fallback = match kind {
        K::ProcessExited => format!("exited with status {}", event.code),
        K::ProcessKilledBySignal => format!("killed by signal {}", event.code),
        K::ProcessExeced => "exec'd into another program".into(),
        K::ProcessVanished => "exited; its exit status is unknown".into(),
        K::ProcessDetached => "still running when recording stopped".into(),
        K::ProcessAttached
        | K::ProcessSpawned
        | K::ProcessRateChanged
        | K::ProcessEventUnspecified => return None,
    };
    // The detail names programs and command lines the target chose.
    let text = if event.detail.is_empty() {
        fallback
    } else {
        crate::text::escape(&event.detail).into_owned()
    };
    Some(format!("pid {}: {text}", event.pid))
}

/// The endings of processes seen so far: the first [`ENDINGS_SHOWN`] in
/// words, and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endings {
    /// The first endings, described by [`describe_ending`].
    pub shown: Vec<String>,
    /// All endings in the file.
    pub total: u64,
}

impl Endings {
    fn add(&mut self, event: &proto::ProcessEvent) {
        if let Some(text) = describe_ending(event) {
            self.total += 1;
            if self.shown.len() < ENDINGS_SHOWN {
                self.shown.push(text);
            }
        }
    }

    fn write_text(&self, f: &mut impl fmt::Write, label: &str) -> fmt::Result {
        for text in &self.shown {
            writeln!(f, "{label}{text}")?;
        }
        if self.total > self.shown.len() as u64 {
            writeln!(
                f,
                "{label}... and {} more process endings",
                self.total - self.shown.len() as u64
            )?;
        }
        Ok(())
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The file checked.
    pub path: PathBuf,
    /// Its size in bytes (0 if it could not be read).
    pub file_size: u64,
    /// True if the file ends exactly after a final chunk holding a footer and
    /// no problem was found.
    pub complete: bool,
    /// Complete, valid chunks read.
    pub chunks: u64,
    /// Records in those chunks.
    pub records: u64,
    /// Samples in those chunks.
    pub samples: u64,
    /// Bytes from the start of the file to the end of the last valid chunk.
    pub bytes_readable: u64,
    /// The first problem found, if any.
    pub problem: Option<Problem>,
    /// How the recorded processes ended, as far as the file tells.
    pub endings: Endings,
}

/// The gaps of a recording, summed up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gaps {
    /// Gap records.
    pub count: u64,
    /// Sampler ticks they cover.
    pub ticks: u64,
    /// Wall time they cover, in nanoseconds.
    pub total_ns: u64,
    /// The longest one.
    pub longest: Option<proto::Gap>,
}

impl Gaps {
    /// Counts `gap` in.
    pub fn add(&mut self, gap: &proto::Gap) {
        let length = gap.to_ns.saturating_sub(gap.from_ns);
        self.count += 1;
        self.ticks += gap.ticks;
        self.total_ns += length;
        if self
            .longest
            .as_ref()
            .is_none_or(|l| l.to_ns.saturating_sub(l.from_ns) < length)
        {
            self.longest = Some(gap.clone());
        }
    }
}

impl fmt::Display for Gaps {
    /// "2 (57 ticks, 0.312 s not observed; longest 0.301 s: taking a snapshot took 300.2 ms)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} ticks, {:.3} s not observed",
            self.count,
            self.ticks,
            self.total_ns as f64 / 1e9
        )?;
        if let Some(longest) = &self.longest {
            write!(
                f,
                "; longest {:.3} s",
                longest.to_ns.saturating_sub(longest.from_ns) as f64 / 1e9
            )?;
            if !longest.cause.is_empty() {
                write!(f, ": {}", crate::text::escape(&longest.cause))?;
            }
        }
        write!(f, ")")
    }
}

impl VerifyReport {
    /// True for a complete, valid file: the only case `pydeep verify` exits 0.
    pub fn is_valid(&self) -> bool {
        self.complete && self.problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_text(&mut text)?;
        f.write_str(text.trim_end())
    }
}

impl VerifyReport {
    fn write_text(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let path = self.path.display();
        if self.is_valid() {
            writeln!(
                f,
                "{path}: OK, complete: {} chunks, {} records, {} samples, {} bytes",
                self.chunks, self.records, self.samples, self.file_size
            )?;
            return self.endings.write_text(f, "  target: ");
        }
        writeln!(f, "{path}: INVALID")?;
        if let Some(problem) = &self.problem {
            writeln!(f, "  problem: {problem}")?;
        } else {
            writeln!(f, "  problem: the file has no footer")?;
        }
        writeln!(
            f,
            "  readable: {} of {} bytes: {} chunks, {} records, {} samples",
            self.bytes_readable, self.file_size, self.chunks, self.records, self.samples
        )?;
        self.endings.write_text(f, "  target: ")
    }
}

/// Checks every chunk of `path` (CRC, lengths, deflate, protobuf, sample
/// columns), that the file starts with a Header, that every id a chunk uses
/// (a sample's thread and stack, a stack's parent and frames, a frame's code
/// object) is defined in that chunk or an earlier one, that the footer's
/// counts match, and that the file ends exactly after the final chunk.
pub fn verify(path: &Path) -> VerifyReport {
    let mut report = VerifyReport {
        path: path.to_path_buf(),
        file_size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        complete: false,
        chunks: 0,
        records: 0,
        samples: 0,
        bytes_readable: 0,
        problem: None,
        endings: Endings::default(),
    };
    let mut reader = match Reader::open(path) {
        Ok(reader) => reader,
        Err(error) => {
            report.problem = Some(problem_of(&error, 0));
            return report;
        }
    };
    let mut defined = Defined::default();
    let mut footer = None;
    let mut snapshots = 0u64;
    let mut gaps = 0u64;
    let mut first = true;
    loop {
        let chunk = match reader.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                report.problem = Some(problem_of(&error, reader.offset()));
                break;
            }
        };
        if first
            && !matches!(
                chunk.records.first().and_then(|r| r.kind.as_ref()),
                Some(Kind::Header(_))
            )
        {
            report.problem = Some(Problem {
                offset: chunk.offset,
                message: "the first record of the file is not a Header".into(),
            });
            break;
        }
        first = false;
        for record in &chunk.records {
            defined.add(record.kind.as_ref());
        }
        for record in &chunk.records {
            match &record.kind {
                Some(Kind::Samples(batch)) => {
                    let n = batch.len();
                    if !batch.columns_agree() {
                        report.problem.get_or_insert(Problem {
                            offset: chunk.offset,
                            message: "a sample batch's columns differ in length".into(),
                        });
                    }
                    report.samples += n as u64;
                }
                Some(Kind::Snapshot(_)) => snapshots += 1,
                Some(Kind::Footer(f)) => footer = Some(f.clone()),
                Some(Kind::ProcessEvent(event)) => report.endings.add(event),
                Some(Kind::Gap(_)) => gaps += 1,
                _ => {}
            }
            if report.problem.is_none() {
                if let Some(message) = defined.dangling(record.kind.as_ref()) {
                    report.problem = Some(Problem {
                        offset: chunk.offset,
                        message,
                    });
                }
            }
        }
    }
    report.chunks = reader.complete_chunks();
    report.bytes_readable = reader.offset();
    report.records = reader.records_read();
    if report.problem.is_some() {
        return report;
    }
    match footer {
        Some(footer) => {
            report.complete = true;
            let mut mismatches = Vec::new();
            if footer.sample_count != report.samples {
                mismatches.push(format!(
                    "footer says {} samples, the file holds {}",
                    footer.sample_count, report.samples
                ));
            }
            if footer.chunk_count != report.chunks {
                mismatches.push(format!(
                    "footer says {} chunks, the file holds {}",
                    footer.chunk_count, report.chunks
                ));
            }
            if footer.gap_count != gaps {
                mismatches.push(format!(
                    "footer says {} gaps, the file holds {gaps}",
                    footer.gap_count
                ));
            }
            if footer.snapshot_count != snapshots {
                mismatches.push(format!(
                    "footer says {} snapshots, the file holds {snapshots}",
                    footer.snapshot_count
                ));
            }
            if !mismatches.is_empty() {
                report.problem = Some(Problem {
                    offset: report.bytes_readable,
                    message: mismatches.join("; "),
                });
            }
        }
        None => {
            report.problem = Some(Problem {
                offset: report.bytes_readable,
                message: "the final chunk has no footer".into(),
            });
        }
    }
    report
}

/// The ids defined so far, for [`verify`]'s reference checks.
#[derive(Default)]
struct Defined {
    threads: HashSet<u32>,
    stacks: HashSet<u64>,
    frames: HashSet<u64>,
    code_objects: HashSet<u64>,
}

impl Defined {
    fn add(&mut self, kind: Option<&Kind>) {
        match kind {
            Some(Kind::Thread(def)) => {
                self.threads.insert(def.id);
            }
            Some(Kind::Stack(def)) => {
                self.stacks.insert(def.id);
            }
            Some(Kind::Frame(def)) => {
                self.frames.insert(def.id);
            }
            Some(Kind::CodeObject(def)) => {
                self.code_objects.insert(def.id);
            }
            _ => {}
        }
    }

    /// Describes the first id `kind` uses that is not defined yet.
    fn dangling(&self, kind: Option<&Kind>) -> Option<String> {
        match kind {
            Some(Kind::Samples(batch)) => {
                let index = batch.thread.iter().position(|t| !self.threads.contains(t));
                if let Some(i) = index {
                    return Some(format!(
                        "a sample uses undefined thread {}",
                        batch.thread[i]
                    ));
                }
                let index = batch
                    .stack
                    .iter()
                    .position(|s| *s != 0 && !self.stacks.contains(s));
                index.map(|i| format!("a sample uses undefined stack {}", batch.stack[i]))
            }
            Some(Kind::Stack(def)) => {
                if def.parent != 0 && !self.stacks.contains(&def.parent) {
                    return Some(format!(
                        "stack {} has undefined parent {}",
                        def.id, def.parent
                    ));
                }
                let frame = def.frames.iter().find(|f| !self.frames.contains(f))?;
                Some(format!("stack {} uses undefined frame {frame}", def.id))
            }
            Some(Kind::Frame(def)) if def.code != 0 && !self.code_objects.contains(&def.code) => {
                Some(format!(
                    "frame {} uses undefined code object {}",
                    def.id, def.code
                ))
            }
            _ => None,
        }
    }
}

/// What `pydeep info` shows about a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// The header record.
    pub header: proto::Header,
    /// The footer, if the file is complete.
    pub footer: Option<proto::Footer>,
    /// Chunks read.
    pub chunks: u64,
    /// Records by kind ("string", "stack", "sample_batch", ...).
    pub records: BTreeMap<&'static str, u64>,
    /// Encoded bytes of the records by kind, before compression: where the
    /// size of the file goes.
    pub record_bytes: BTreeMap<&'static str, u64>,
    /// Samples read.
    pub samples: u64,
    /// Distinct thread ids defined.
    pub threads: u64,
    /// From the header's start clock to the last sample (or the footer's duration).
    pub duration_ns: u64,
    /// Bytes from the start of the file to the end of the last valid chunk.
    pub bytes_readable: u64,
    /// True if the file ends after a final chunk holding the footer.
    pub complete: bool,
    /// Why the file is not complete, if it is not.
    pub problem: Option<Problem>,
    /// How the recorded processes ended, as far as the file tells.
    pub endings: Endings,
    /// Stretches the sampler did not observe.
    pub gaps: Gaps,
    /// Source files not embedded because the target's user could not read
    /// them, with why: (path, reason).
    pub withheld_sources: Vec<(String, String)>,
}

impl Summary {
    /// File bytes per sample (0 without samples).
    pub fn bytes_per_sample(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.file_size as f64 / self.samples as f64
        }
    }
}

/// Names a record kind for [`Summary::records`].
pub fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Header(_) => "header",
        Kind::String(_) => "string",
        Kind::SourceFile(_) => "source_file",
        Kind::CodeObject(_) => "code_object",
        Kind::Frame(_) => "frame",
        Kind::Stack(_) => "stack",
        Kind::Thread(_) => "thread",
        Kind::Samples(_) => "sample_batch",
        Kind::Snapshot(_) => "snapshot",
        Kind::TraceEvents(_) => "trace_batch",
        Kind::ProcessEvent(_) => "process_event",
        Kind::ChunkStart(_) => "chunk_start",
        Kind::Gap(_) => "gap",
        Kind::Footer(_) => "footer",
    }
}

/// Reads all of `path` and summarizes it. A truncated or corrupt file is
/// summarized as far as it is readable (see [`Summary::problem`]); only a file
/// without a readable header is an error.
pub fn summarize(path: &Path) -> Result<Summary, FormatError> {
    let file_size = std::fs::metadata(path)?.len();
    let mut reader = Reader::open(path)?;
    let first = match reader.next_chunk()? {
        Some(chunk) => chunk,
        None => {
            return Err(FormatError::Truncated {
                offset: reader.offset(),
                complete_chunks: 0,
            })
        }
    };
    let header = match first.records.first().and_then(|r| r.kind.as_ref()) {
        Some(Kind::Header(header)) => header.clone(),
        _ => {
            return Err(FormatError::corrupt(
                first.offset,
                "the first record of the file is not a Header",
            ))
        }
    };
    let mut summary = Summary {
        path: path.to_path_buf(),
        file_size,
        header,
        footer: None,
        chunks: 0,
        records: BTreeMap::new(),
        record_bytes: BTreeMap::new(),
        samples: 0,
        threads: 0,
        duration_ns: 0,
        bytes_readable: 0,
        complete: false,
        problem: None,
        endings: Endings::default(),
        gaps: Gaps::default(),
        withheld_sources: Vec::new(),
    };
    let mut strings: HashMap<u64, String> = HashMap::new();
    let mut withheld: Vec<(u64, String)> = Vec::new();
    let mut threads = HashSet::new();
    let mut clock = crate::timing::SampleClock::new(summary.header.start_clock_ns);
    let mut time = summary.header.start_clock_ns;
    let mut chunk = Some(first);
    while let Some(current) = chunk.take() {
        for record in &current.records {
            let Some(kind) = &record.kind else { continue };
            *summary.records.entry(kind_name(kind)).or_default() += 1;
            *summary.record_bytes.entry(kind_name(kind)).or_default() +=
                record.encoded_len() as u64;
            match kind {
                Kind::Samples(batch) => {
                    summary.samples += batch.len() as u64;
                    clock.start_batch(batch.tick_interval_ns);
                    if batch.tick_interval_ns == 0 {
                        for &delta in &batch.time_delta_ns {
                            time = clock.decode_delta(delta);
                        }
                    } else {
                        for (&ticks, &offset) in batch.ticks.iter().zip(&batch.tick_offset_ns) {
                            time = clock.decode(ticks, offset);
                        }
                    }
                }
                Kind::Thread(thread) => {
                    threads.insert(thread.id);
                }
                Kind::Footer(footer) => summary.footer = Some(footer.clone()),
                Kind::ProcessEvent(event) => summary.endings.add(event),
                Kind::Gap(gap) => summary.gaps.add(gap),
                Kind::String(def) => {
                    strings.insert(def.id, def.value.clone());
                }
                Kind::SourceFile(def)
                    if def.missing && def.missing_reason.starts_with("not readable") =>
                {
                    withheld.push((def.path, def.missing_reason.clone()));
                }
                _ => {}
            }
        }
        match reader.next_chunk() {
            Ok(next) => chunk = next,
            Err(error) => {
                summary.problem = Some(problem_of(&error, reader.offset()));
            }
        }
    }
    summary.withheld_sources = withheld
        .into_iter()
        .map(|(path, why)| (strings.get(&path).cloned().unwrap_or_default(), why))
        .collect();
    summary.chunks = reader.complete_chunks();
    summary.bytes_readable = reader.offset();
    summary.threads = threads.len() as u64;
    summary.complete = summary.problem.is_none() && summary.footer.is_some();
    summary.duration_ns = match &summary.footer {
        Some(footer) if footer.duration_ns != 0 => footer.duration_ns,
        _ => time.saturating_sub(summary.header.start_clock_ns),
    };
    Ok(summary)
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..=9_999 => format!("{bytes} B"),
        10_000..=9_999_999 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

/// Formats Unix-epoch nanoseconds as a UTC date and time.
fn utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_text(&mut text)?;
        f.write_str(text.trim_end())
    }
}

impl Summary {
    fn write_text(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let h = &self.header;
        let status = if self.complete {
            "complete"
        } else {
            "INCOMPLETE"
        };
        writeln!(
            f,
            "file:        {} ({} bytes, {status})",
            self.path.display(),
            self.file_size
        )?;
        writeln!(
            f,
            "format:      version {}, written by pydeep {}{}",
            h.format_version,
            if h.pydeep_version.is_empty() {
                "?"
            } else {
                &h.pydeep_version
            },
            if h.mode.is_empty() {
                String::new()
            } else {
                format!(" ({})", h.mode)
            }
        )?;
        let python = match &h.python_version {
            Some(v) => format!(
                "Python {}.{}.{}{}{}{}",
                v.major,
                v.minor,
                v.patch,
                v.release,
                if v.free_threaded {
                    " free-threaded (no GIL)"
                } else {
                    ""
                },
                if v.debug_build { " debug" } else { "" }
            ),
            None => "Python ?".into(),
        };
        let esc = crate::text::escape;
        writeln!(
            f,
            "target:      pid {}, {python}, {}",
            h.pid,
            esc(&h.executable)
        )?;
        if !h.argv.is_empty() {
            writeln!(f, "command:     {}", esc(&h.argv.join(" ")))?;
        }
        writeln!(
            f,
            "recorded:    {} on {}",
            utc(h.start_unix_ns),
            if h.host_name.is_empty() {
                "?".into()
            } else {
                esc(&h.host_name)
            }
        )?;
        if let Some(s) = &h.sampling {
            writeln!(
                f,
                "sampling:    {} Hz per thread{}{}, max depth {}",
                s.rate_hz,
                if s.blocking {
                    ", blocking"
                } else {
                    ", non-blocking"
                },
                if s.include_idle {
                    ", idle threads kept"
                } else {
                    ""
                },
                s.max_depth
            )?;
        }
        writeln!(f, "duration:    {:.3} s", self.duration_ns as f64 / 1e9)?;
        writeln!(
            f,
            "samples:     {} in {} threads, {:.2} bytes/sample",
            self.samples,
            self.threads,
            self.bytes_per_sample()
        )?;
        let records: Vec<String> = self
            .records
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "chunks:      {}", self.chunks)?;
        writeln!(f, "records:     {}", records.join(", "))?;
        let mut sizes: Vec<(&str, u64)> = self.record_bytes.iter().map(|(k, v)| (*k, *v)).collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let sizes: Vec<String> = sizes
            .iter()
            .map(|(k, v)| format!("{k} {}", human_bytes(*v)))
            .collect();
        writeln!(
            f,
            "payload:     {} (uncompressed, by record kind)",
            sizes.join(", ")
        )?;
        if let Some(footer) = &self.footer {
            writeln!(
                f,
                "footer:      ended by {:?}; {} missed ticks, {} dropped, {} torn samples ({} torn attempts retried), {} ticks read paused, {} held, {} errors, max lag {:.3} ms",
                footer.end_reason,
                footer.missed_ticks,
                footer.dropped_samples,
                footer.torn_samples,
                footer.torn_retries,
                footer.paused_ticks,
                footer.held_ticks,
                footer.errors,
                footer.max_lag_ns as f64 / 1e6
            )?;
            if footer.held_ticks > 0 {
                writeln!(
                    f,
                    "held:        {} ticks were NOT read (planned paused, held by the pause budget to keep pauses near 10% of the target's time); the sample after them stands for them, or a gap past 20 ms",
                    footer.held_ticks
                )?;
            }
        }
        if self.gaps.count > 0 {
            writeln!(f, "gaps:        {}", self.gaps)?;
        }
        for (path, why) in &self.withheld_sources {
            writeln!(
                f,
                "withheld:    source {}: {}",
                crate::text::escape(path),
                crate::text::escape(why)
            )?;
        }
        self.endings.write_text(f, "process:     ")?;
        if let Some(problem) = &self.problem {
            writeln!(
                f,
                "problem:     {problem}\nreadable:    {} of {} bytes",
                self.bytes_readable, self.file_size
            )?;
        } else if !self.complete {
            writeln!(f, "problem:     the file has no footer")?;
        }
        Ok(())
    }
}
