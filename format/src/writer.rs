//! [`Writer`]: interning, columnar sample batches and chunk flushing.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;

use crate::container::{
    encode_chunk_in_blocks, file_header, FLAG_FINAL, FORMAT_VERSION, MAX_RECORD_LEN,
};
use crate::hash::FastMap;
use crate::proto::{self, record::Kind};
use crate::stacks::StackInterner;
use crate::timing::SampleClock;
use crate::FormatError;

/// A sample batch of fewer samples is not split into a deflate block per
/// column (each block costs a sync marker and Huffman tables).
const MIN_BLOCK_SAMPLES: usize = 256;

/// Above this many buffered bytes the writer closes the chunk early, so a
/// burst of definitions or snapshots cannot grow one chunk without bound.
const SOFT_CHUNK_LEN: usize = 4 << 20;

/// How a [`Writer`] cuts the stream into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Longest time a chunk stays open: a killed writer loses at most this
    /// much of the recording. Checked on every [`Writer::sample`],
    /// [`Writer::record`] and [`Writer::maybe_flush`]. Default: 1 second.
    pub flush_interval: Duration,
    /// Most samples in one chunk. Default: 20 000.
    pub max_samples_per_chunk: usize,
    /// Deflate level, 0 (store) to 9 (smallest). Default: 6.
    pub compression_level: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            flush_interval: Duration::from_secs(1),
            max_samples_per_chunk: 20_000,
            compression_level: 6,
        }
    }
}

/// Counters of what a [`Writer`] has written so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Samples written (or buffered in the open chunk).
    pub samples: u64,
    /// Chunks written to the sink.
    pub chunks: u64,
    /// Bytes written to the sink, file header included.
    pub bytes_written: u64,
    /// Records written to the sink (sample batches count once each).
    pub records: u64,
    /// Chunk payload bytes before compression.
    pub uncompressed_bytes: u64,
    /// Interned strings.
    pub strings: u64,
    /// Interned frames.
    pub frames: u64,
    /// StackDefs written (distinct stacks plus shared-prefix nodes).
    pub stacks: u64,
    /// Frame ids listed in all StackDefs: what the prefix tree saves shows here.
    pub stack_frames: u64,
    /// Code objects defined.
    pub code_objects: u64,
    /// Snapshots recorded.
    pub snapshots: u64,
}

/// The identity of an interned frame: a code object and an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameKey {
    /// Code object id (from [`Writer::next_code_id`]).
    pub code: u64,
    /// Byte offset of the instruction, as `dis` numbers it.
    pub instruction_offset: u32,
    /// Source line of the instruction (0 if unknown).
    pub line: u32,
    /// Generator, coroutine or async generator frame.
    pub is_generator: bool,
    /// Interpreter shim frame.
    pub is_shim: bool,
}

/// Writes a `.pdr` recording to a sink.
///
/// Definitions (strings, frames, stacks, code objects, threads) are written
/// once, in the chunk of their first use or earlier. Samples of one chunk are
/// gathered into a columnar [`proto::SampleBatch`] written after the
/// definitions they use. A chunk is written when [`WriterOptions::flush_interval`]
/// has passed since it opened, when it holds
/// [`WriterOptions::max_samples_per_chunk`] samples, or on [`Writer::flush`].
/// Call [`Writer::maybe_flush`] periodically when no samples arrive.
///
/// Dropping a writer without [`Writer::finish`] leaves a file that readers
/// report as truncated, with every written chunk readable.
pub struct Writer<W: Write> {
    sink: W,
    options: WriterOptions,
    /// Length-delimited records of the open chunk.
    pending: Vec<u8>,
    /// End offset in `pending` of each record.
    boundaries: Vec<usize>,
    /// Offsets in `pending` where a deflate block should end: around each
    /// column of a sample batch and each embedded source file.
    block_ends: Vec<usize>,
    batch: proto::SampleBatch,
    /// Times of the samples of `batch`, coded when it closes.
    batch_times: Vec<u64>,
    chunk_opened: Option<Instant>,
    chunk_samples: usize,
    /// Codes sample times (the previous sample's time, the tick grid).
    clock: SampleClock,
    /// The sampler's tick interval in nanoseconds, 0 if unknown.
    tick_interval: u64,
    start_clock: u64,
    last_time: Option<u64>,
    strings: FastMap<String, u64>,
    frames: FastMap<FrameKey, u64>,
    stacks: StackInterner,
    stack_defs: Vec<proto::StackDef>,
    source_files: FastMap<u64, u64>,
    /// Source definitions (whole files and spans) made so far: the last id.
    source_ids: u64,
    next_code: u64,
    stats: WriterStats,
    failed: bool,
    /// An error from an infallible call, returned by the next fallible one.
    deferred: Option<FormatError>,
    /// `Header.recording_id`, repeated by every later chunk's `ChunkStart`.
    recording_id: u64,
}

impl Writer<std::fs::File> {
    /// Creates `path` with mode 0600 and writes the file header and `header`.
    ///
    /// Without `overwrite` the file must not exist (`O_CREAT|O_EXCL`). With
    /// it, an existing regular file is replaced by a new one, created beside
    /// it and renamed over it before anything is written (see
    /// [`crate::files::OutputFile`]): the old file is never written through,
    /// so another user's file or a hard link keeps its contents. A symbolic
    /// link is never followed, so a planted link cannot redirect the
    /// recording of a privileged profiler.
    pub fn create(
        path: &Path,
        overwrite: bool,
        header: proto::Header,
        options: WriterOptions,
    ) -> Result<Self, FormatError> {
        use crate::files::{Existing, OutputFile};
        let existing = if overwrite {
            Existing::Replace
        } else {
            Existing::Refuse
        };
        Writer::create_in(OutputFile::create(path, existing, 0o600)?, header, options)
    }

    /// Writes a recording into `output`, created before (see
    /// [`Writer::create`]): the file takes its name, then gets the file
    /// header and `header`. If that first write fails (a full disk), the
    /// file is removed rather than left empty.
    pub fn create_in(
        output: crate::files::OutputFile,
        header: proto::Header,
        options: WriterOptions,
    ) -> Result<Self, FormatError> {
        let path = output.path().to_path_buf();
        let file = output.commit()?;
        Writer::new(file, header, options).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    }
}

impl<W: Write> Writer<W> {
    /// Writes the file header and a first chunk holding `header`, so even a
    /// writer killed at once leaves a file that names its target.
    /// `header.format_version` is set to [`FORMAT_VERSION`], and a
    /// `header.recording_id` of 0 to a random one.
    pub fn new(
        mut sink: W,
        mut header: proto::Header,
        options: WriterOptions,
    ) -> Result<Self, FormatError> {
        header.format_version = FORMAT_VERSION;
        if header.recording_id == 0 {
            header.recording_id = crate::sequence::new_recording_id();
        }
        let recording_id = header.recording_id;
        let file_header = file_header();
        sink.write_all(&file_header)?;
        let start = header.start_clock_ns;
        let tick_interval = header
            .sampling
            .as_ref()
            .map_or(0, |sampling| tick_interval_of(sampling.rate_hz));
        let mut writer = Writer {
            sink,
            options,
            pending: Vec::new(),
            boundaries: Vec::new(),
            block_ends: Vec::new(),
            batch: proto::SampleBatch::default(),
            batch_times: Vec::new(),
            chunk_opened: None,
            chunk_samples: 0,
            clock: SampleClock::new(start),
            tick_interval,
            start_clock: start,
            last_time: None,
            strings: FastMap::default(),
            frames: FastMap::default(),
            stacks: StackInterner::new(),
            stack_defs: Vec::new(),
            source_files: FastMap::default(),
            source_ids: 0,
            next_code: 1,
            stats: WriterStats {
                bytes_written: file_header.len() as u64,
                ..WriterStats::default()
            },
            failed: false,
            deferred: None,
            recording_id,
        };
        writer.push_record(Kind::Header(header))?;
        writer.flush()?;
        Ok(writer)
    }

    /// Sets the sampler's tick interval (nanoseconds; 0: unknown), which
    /// sample times are coded against from the next sample on. [`Writer::new`]
    /// takes it from the header's `sampling.rate_hz`, and [`Writer::record`]
    /// from a `PROCESS_RATE_CHANGED` event; any value keeps times exact, the
    /// right one makes them small.
    pub fn set_tick_interval(&mut self, interval_ns: u64) {
        if interval_ns == self.tick_interval {
            return;
        }
        if let Err(error) = self.close_batch() {
            self.deferred.get_or_insert(error);
        }
        self.tick_interval = interval_ns;
    }

    /// Turns the sharing of stack prefixes on (the default) or off. Off, every
    /// StackDef lists all its frames; only useful to measure what sharing buys.
    pub fn set_stack_prefix_sharing(&mut self, on: bool) {
        self.stacks.prefix_sharing = on;
    }

    fn open_chunk(&mut self) {
        if self.chunk_opened.is_none() {
            self.chunk_opened = Some(Instant::now());
        }
    }

    /// Appends one record to the open chunk.
    fn push_record(&mut self, kind: Kind) -> Result<(), FormatError> {
        let kind = match kind {
            Kind::TraceEvents(batch) => return self.push_trace_events(batch),
            kind => kind,
        };
        let record = proto::Record { kind: Some(kind) };
        let size = record.encoded_len();
        if size > MAX_RECORD_LEN {
            return Err(FormatError::RecordTooLarge {
                size,
                limit: MAX_RECORD_LEN,
            });
        }
        self.open_chunk();
        let start = self.pending.len();
        match &record.kind {
            // A block costs ~60 bytes: only worth it for columns of some length.
            Some(Kind::Samples(batch)) if batch.len() >= MIN_BLOCK_SAMPLES => {
                // Record = length, tag of field 8, batch length, columns in tag order.
                let batch_len = batch.encoded_len();
                let mut end = start
                    + prost::encoding::encoded_len_varint(size as u64)
                    + 1
                    + prost::encoding::encoded_len_varint(batch_len as u64);
                self.block_ends.push(start);
                let columns = column_lengths(batch);
                debug_assert_eq!(columns.iter().sum::<usize>(), batch_len);
                for column in columns {
                    end += column;
                    self.block_ends.push(end);
                }
            }
            Some(Kind::SourceFile(_)) => {
                self.block_ends.push(start);
                self.block_ends
                    .push(start + prost::encoding::encoded_len_varint(size as u64) + size);
            }
            _ => {}
        }
        record
            .encode_length_delimited(&mut self.pending)
            .map_err(|error| FormatError::Io(std::io::Error::other(error)))?;
        self.boundaries.push(self.pending.len());
        Ok(())
    }

    /// [`Writer::push_record`] of a trace batch, the same bytes as prost
    /// writes: its four event columns (fields 1-4, first in tag order)
    /// coded here, each walked twice (its length, its values), the rest by
    /// prost. prost walked each column five times (the record's length,
    /// again as the record is coded, the batch's as it is nested, each
    /// column's own as it is written, and its values): at millions of
    /// events a second that was a fifth of `pydeep trace`'s time.
    fn push_trace_events(&mut self, mut batch: proto::TraceEventBatch) -> Result<(), FormatError> {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
        let time = std::mem::take(&mut batch.time_delta_ns);
        let thread = std::mem::take(&mut batch.thread);
        let kind = std::mem::take(&mut batch.kind);
        let frame = std::mem::take(&mut batch.frame);
        let bodies = [
            varints_len(time.iter().copied()),
            varints_len(thread.iter().map(|&v| u64::from(v))),
            varints_len(kind.iter().map(|&v| v as i64 as u64)),
            varints_len(frame.iter().copied()),
        ];
        // A packed field: key (one byte for fields 1-4), length, values;
        // nothing if empty.
        let field_len = |body: usize| {
            if body == 0 {
                0
            } else {
                1 + encoded_len_varint(body as u64) + body
            }
        };
        let rest_len = batch.encoded_len();
        let batch_len = bodies.iter().map(|&b| field_len(b)).sum::<usize>() + rest_len;
        // Record: key of field 10, the batch's length, the batch.
        let size = 1 + encoded_len_varint(batch_len as u64) + batch_len;
        if size > MAX_RECORD_LEN {
            return Err(FormatError::RecordTooLarge {
                size,
                limit: MAX_RECORD_LEN,
            });
        }
        self.open_chunk();
        let out = &mut self.pending;
        out.reserve(encoded_len_varint(size as u64) + size);
        let start = out.len();
        encode_varint(size as u64, out);
        encode_key(10, WireType::LengthDelimited, out);
        encode_varint(batch_len as u64, out);
        put_packed(out, 1, bodies[0], time.iter().copied());
        put_packed(out, 2, bodies[1], thread.iter().map(|&v| u64::from(v)));
        put_packed(out, 3, bodies[2], kind.iter().map(|&v| v as i64 as u64));
        put_packed(out, 4, bodies[3], frame.iter().copied());
        batch.encode_raw(out);
        debug_assert_eq!(out.len() - start, encoded_len_varint(size as u64) + size);
        self.boundaries.push(self.pending.len());
        Ok(())
    }

    /// Appends a definition; an oversized one is reported by the next fallible call.
    fn push_definition(&mut self, kind: Kind) {
        if let Err(error) = self.push_record(kind) {
            self.deferred.get_or_insert(error);
        }
    }

    fn check(&mut self) -> Result<(), FormatError> {
        if self.failed {
            return Err(FormatError::WriterFailed);
        }
        match self.deferred.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Returns the id of `s`, defining it on first use. The empty string is id 0.
    pub fn intern_string(&mut self, s: &str) -> u64 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.strings.len() as u64 + 1;
        self.strings.insert(s.to_owned(), id);
        self.stats.strings += 1;
        self.push_definition(Kind::String(proto::StringDef {
            id,
            value: s.to_owned(),
        }));
        id
    }

    /// Returns the id of `frame`, defining it on first use.
    pub fn intern_frame(&mut self, frame: FrameKey) -> u64 {
        if let Some(&id) = self.frames.get(&frame) {
            return id;
        }
        let id = self.frames.len() as u64 + 1;
        self.frames.insert(frame, id);
        self.stats.frames += 1;
        self.push_definition(Kind::Frame(proto::FrameDef {
            id,
            code: frame.code,
            instruction_offset: frame.instruction_offset,
            line: frame.line,
            is_generator: frame.is_generator,
            is_shim: frame.is_shim,
        }));
        id
    }

    /// Returns the id of the stack made of `frames_outermost_first` (frame
    /// ids), defining it on first use as an extension of the longest interned
    /// prefix. The empty stack is id 0.
    pub fn intern_stack(&mut self, frames_outermost_first: &[u64]) -> u64 {
        let mut defs = std::mem::take(&mut self.stack_defs);
        let id = self.stacks.intern(frames_outermost_first, &mut defs);
        for def in defs.drain(..) {
            self.stats.stacks += 1;
            self.stats.stack_frames += def.frames.len() as u64;
            self.push_definition(Kind::Stack(def));
        }
        self.stack_defs = defs;
        id
    }

    /// Number of distinct stacks interned so far (shared-prefix nodes included).
    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }

    /// Reserves the id of a code object to define with [`Writer::define_code_object`].
    pub fn next_code_id(&mut self) -> u64 {
        let id = self.next_code;
        self.next_code += 1;
        id
    }

    /// Writes a code object definition; `def.id` comes from [`Writer::next_code_id`].
    pub fn define_code_object(&mut self, def: proto::CodeObjectDef) {
        self.stats.code_objects += 1;
        self.push_definition(Kind::CodeObject(def));
    }

    /// Embeds a source file once per path (string id) and returns its id. With
    /// `content` `None` the file is recorded as missing. Content too large for
    /// one chunk ([`crate::MAX_RECORD_LEN`]) is recorded as missing too.
    pub fn define_source_file(&mut self, path: u64, content: Option<Vec<u8>>) -> u64 {
        if let Some(&id) = self.source_files.get(&path) {
            return id;
        }
        self.source_ids += 1;
        let id = self.source_ids;
        self.source_files.insert(path, id);
        let content = content.filter(|c| c.len() <= MAX_RECORD_LEN - 64);
        self.push_definition(Kind::SourceFile(proto::SourceFileDef {
            id,
            path,
            missing: content.is_none(),
            content: content.unwrap_or_default(),
            first_line: 0,
            missing_reason: String::new(),
        }));
        id
    }

    /// Records that the source file `path` (string id) was not embedded, and
    /// `reason` why (not readable by the target's user, not found, ...), as
    /// a new definition: unlike [`Writer::define_source_file`] it is never
    /// shared with another definition of the same path, which another
    /// process of the recording may have been allowed to read.
    pub fn define_unreadable_source(&mut self, path: u64, reason: &str) -> u64 {
        self.source_ids += 1;
        let id = self.source_ids;
        self.push_definition(Kind::SourceFile(proto::SourceFileDef {
            id,
            path,
            missing: true,
            content: Vec::new(),
            first_line: 0,
            missing_reason: reason.to_owned(),
        }));
        id
    }

    /// Embeds the lines of `path` (string id) from 1-based line
    /// `first_line` on (`content`: those lines) as a new definition and
    /// returns its id. Unlike [`Writer::define_source_file`] every call
    /// defines a span, even of a path already embedded: the caller chooses
    /// which lines each code object needs.
    pub fn define_source_span(&mut self, path: u64, first_line: u32, content: Vec<u8>) -> u64 {
        self.source_ids += 1;
        let id = self.source_ids;
        let fits = content.len() <= MAX_RECORD_LEN - 64;
        self.push_definition(Kind::SourceFile(proto::SourceFileDef {
            id,
            path,
            missing: !fits,
            content: if fits { content } else { Vec::new() },
            first_line: first_line.max(1),
            missing_reason: if fits {
                String::new()
            } else {
                "too large for one chunk".into()
            },
        }));
        id
    }

    /// Writes a thread definition. The caller chooses `def.id`; writing the
    /// same id again records a change of name or state.
    pub fn define_thread(&mut self, def: proto::ThreadDef) {
        self.push_definition(Kind::Thread(def));
    }

    /// Adds a sample taken at `clock_ns` (absolute, on the header's stream
    /// clock) of `thread` (a ThreadDef id) with `stack` (a stack id) and
    /// `flags` (OR of [`proto::SampleFlag`] bits); writes the chunk if due.
    pub fn sample(
        &mut self,
        clock_ns: u64,
        thread: u32,
        stack: u64,
        flags: u32,
    ) -> Result<(), FormatError> {
        self.weighted_sample(clock_ns, thread, stack, flags, 1)
    }

    /// Writes a sample standing for `weight` sampler ticks (1 plus the
    /// ticks missed right before it; see `SampleBatch.weight`).
    pub fn weighted_sample(
        &mut self,
        clock_ns: u64,
        thread: u32,
        stack: u64,
        flags: u32,
        weight: u32,
    ) -> Result<(), FormatError> {
        self.check()?;
        self.open_chunk();
        let weight = weight.max(1);
        // The column is written only for a batch that needs it: from its
        // first weight other than 1, with 1 for the samples before.
        if weight != 1 || !self.batch.weight.is_empty() {
            self.batch.weight.resize(self.batch_times.len(), 1);
            self.batch.weight.push(weight);
        }
        self.batch_times.push(clock_ns);
        self.batch.thread.push(thread);
        self.batch.stack.push(stack);
        self.batch.flags.push(flags);
        self.last_time = Some(clock_ns);
        self.chunk_samples += 1;
        self.stats.samples += 1;
        self.maybe_flush()?;
        Ok(())
    }

    /// Writes a snapshot, process event or trace batch. Samples before it stay
    /// before it in the stream. The header and footer are refused: the writer
    /// writes those itself. A definition passed here is written as is,
    /// outside the interning tables: use the `intern_*`/`define_*` methods,
    /// whose ids cannot collide.
    pub fn record(&mut self, kind: Kind) -> Result<(), FormatError> {
        self.check()?;
        match kind {
            Kind::Header(_) | Kind::Footer(_) => {
                return Err(FormatError::InvalidRecord(
                    "the header and footer are written by Writer::new and Writer::finish",
                ))
            }
            Kind::Snapshot(_) => self.stats.snapshots += 1,
            Kind::CodeObject(_) => self.stats.code_objects += 1,
            _ => {}
        }
        self.close_batch()?;
        let rate_change = match &kind {
            Kind::ProcessEvent(event)
                if event.kind == proto::ProcessEventKind::ProcessRateChanged as i32
                    && event.code > 0 =>
            {
                // `code` is the new rate in millihertz.
                Some(tick_interval_of(f64::from(event.code) / 1000.0))
            }
            _ => None,
        };
        self.push_record(kind)?;
        if let Some(interval) = rate_change {
            self.tick_interval = interval;
        }
        self.maybe_flush()?;
        Ok(())
    }

    /// Codes the times of the open batch on the tick grid or as version-1
    /// deltas, whichever deflates smaller (the reader decides per batch).
    ///
    /// Why both: on the grid an on-time sampler's tick costs a tick count
    /// and a small lateness instead of a three-byte delta, but a sampler
    /// that cannot keep up (100 kHz asked, ticks taken every 30-80 µs)
    /// has offsets as random as the deltas, plus a ticks column: 10 %
    /// larger than deltas there. Deflating both at level 1 costs ~20 ns per
    /// sample, once per batch.
    fn code_times(&mut self) {
        let mut times = std::mem::take(&mut self.batch_times);
        let mut delta_clock = self.clock.clone();
        delta_clock.start_batch(0);
        let deltas: Vec<u64> = times
            .iter()
            .map(|&time| delta_clock.encode_delta(time))
            .collect();
        let batch = &mut self.batch;
        batch.time_delta_ns.clear();
        batch.ticks.clear();
        batch.tick_offset_ns.clear();
        let mut use_deltas = true;
        if self.tick_interval > 0 {
            let mut grid_clock = self.clock.clone();
            grid_clock.start_batch(self.tick_interval);
            let (ticks, offsets): (Vec<u64>, Vec<i64>) =
                times.iter().map(|&time| grid_clock.encode(time)).unzip();
            let grid_size = deflated_len(&[&varints(&ticks), &signed_varints(&offsets)]);
            let delta_size = deflated_len(&[&varints(&deltas)]);
            if grid_size < delta_size {
                batch.tick_interval_ns = self.tick_interval;
                batch.ticks = ticks;
                batch.tick_offset_ns = offsets;
                self.clock = grid_clock;
                use_deltas = false;
            }
        }
        if use_deltas {
            batch.tick_interval_ns = 0;
            batch.time_delta_ns = deltas;
            self.clock = delta_clock;
        }
        times.clear();
        self.batch_times = times;
    }

    /// Moves the open sample batch into the chunk as one record.
    fn close_batch(&mut self) -> Result<(), FormatError> {
        if self.batch_times.is_empty() {
            return Ok(());
        }
        self.code_times();
        let batch = std::mem::take(&mut self.batch);
        self.push_record(Kind::Samples(batch))
    }

    /// Writes the open chunk if [`WriterOptions::flush_interval`] has passed
    /// since it opened, it holds [`WriterOptions::max_samples_per_chunk`]
    /// samples or it grew large. Returns whether a chunk was written.
    pub fn maybe_flush(&mut self) -> Result<bool, FormatError> {
        self.check()?;
        let Some(opened) = self.chunk_opened else {
            return Ok(false);
        };
        let due = self.chunk_samples >= self.options.max_samples_per_chunk
            || self.pending.len() + self.batch_times.len() * 8 >= SOFT_CHUNK_LEN
            || opened.elapsed() >= self.options.flush_interval;
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    /// Closes the open chunk, writes it and flushes the sink.
    pub fn flush(&mut self) -> Result<(), FormatError> {
        self.check()?;
        self.close_batch()?;
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let boundaries = std::mem::take(&mut self.boundaries);
            let result = self.write_records(&pending, &boundaries, 0);
            self.pending = pending;
            self.pending.clear();
            self.boundaries = boundaries;
            self.boundaries.clear();
            self.block_ends.clear();
            result?;
        }
        self.chunk_opened = None;
        self.chunk_samples = 0;
        self.sink_flush()
    }

    fn sink_flush(&mut self) -> Result<(), FormatError> {
        if let Err(error) = self.sink.flush() {
            self.failed = true;
            return Err(error.into());
        }
        Ok(())
    }

    /// Writes `records` (ending at `boundaries`) as one chunk, or several if
    /// they exceed a chunk's limit; the last one gets `last_flags`.
    fn write_records(
        &mut self,
        records: &[u8],
        boundaries: &[usize],
        last_flags: u32,
    ) -> Result<(), FormatError> {
        let limit = MAX_RECORD_LEN;
        let mut start = 0;
        let mut index = 0;
        while index < boundaries.len() {
            let mut end_index = index;
            while end_index + 1 < boundaries.len() && boundaries[end_index + 1] - start <= limit {
                end_index += 1;
            }
            let end = boundaries[end_index];
            let flags = if end_index + 1 == boundaries.len() {
                last_flags
            } else {
                0
            };
            let block_ends: Vec<usize> = self
                .block_ends
                .iter()
                .filter(|&&offset| offset > start && offset < end)
                .map(|&offset| offset - start)
                .collect();
            self.write_chunk(
                &records[start..end],
                &block_ends,
                (end_index + 1 - index) as u64,
                flags,
            )?;
            start = end;
            index = end_index + 1;
        }
        Ok(())
    }

    fn write_chunk(
        &mut self,
        payload: &[u8],
        block_ends: &[usize],
        records: u64,
        flags: u32,
    ) -> Result<(), FormatError> {
        // Every chunk after the Header's starts with its ChunkStart.
        let (payload, block_ends, records) = if self.stats.chunks == 0 {
            (payload.to_vec(), block_ends.to_vec(), records)
        } else {
            let mut marked = crate::sequence::chunk_start(self.recording_id, self.stats.chunks);
            let shift = marked.len();
            marked.extend_from_slice(payload);
            let ends = block_ends.iter().map(|end| end + shift).collect();
            (marked, ends, records + 1)
        };
        let chunk =
            encode_chunk_in_blocks(&payload, self.options.compression_level, flags, &block_ends)?;
        if let Err(error) = self.sink.write_all(&chunk) {
            self.failed = true;
            return Err(error.into());
        }
        self.stats.chunks += 1;
        self.stats.records += records;
        self.stats.bytes_written += chunk.len() as u64;
        self.stats.uncompressed_bytes += payload.len() as u64;
        Ok(())
    }

    /// The sink the file is written to.
    pub fn sink(&self) -> &W {
        &self.sink
    }

    /// The header's `start_clock_ns`: where the clocks of the records
    /// counting from it (trace events' time deltas) start.
    pub fn start_clock_ns(&self) -> u64 {
        self.start_clock
    }

    /// What has been written so far.
    pub fn stats(&self) -> WriterStats {
        self.stats.clone()
    }

    /// Writes the open chunk, then a final chunk holding `footer`, and returns
    /// the sink. Zero counts in the footer are filled in: `chunk_count`,
    /// `sample_count`, `snapshot_count`, and `duration_ns` (from the header's
    /// start to the last sample).
    pub fn finish(mut self, mut footer: proto::Footer) -> Result<W, FormatError> {
        self.flush()?;
        if footer.chunk_count == 0 {
            footer.chunk_count = self.stats.chunks + 1;
        }
        if footer.sample_count == 0 {
            footer.sample_count = self.stats.samples;
        }
        if footer.snapshot_count == 0 {
            footer.snapshot_count = self.stats.snapshots;
        }
        if footer.duration_ns == 0 {
            if let Some(last) = self.last_time {
                footer.duration_ns = last.saturating_sub(self.start_clock);
            }
        }
        self.push_record(Kind::Footer(footer))?;
        let pending = std::mem::take(&mut self.pending);
        let boundaries = std::mem::take(&mut self.boundaries);
        self.write_records(&pending, &boundaries, FLAG_FINAL)?;
        self.sink_flush()?;
        Ok(self.sink)
    }
}

/// `values` as concatenated varints.
fn varints(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 2);
    for &value in values {
        prost::encoding::encode_varint(value, &mut out);
    }
    out
}

/// `values` as concatenated zigzag varints (protobuf's sint64).
fn signed_varints(values: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 2);
    for &value in values {
        prost::encoding::encode_varint(((value << 1) ^ (value >> 63)) as u64, &mut out);
    }
    out
}

/// Size of `parts` deflated at level 1, each in its own block.
fn deflated_len(parts: &[&[u8]]) -> usize {
    use flate2::write::DeflateEncoder;
    let mut encoder = DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    for part in parts {
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(part);
        let _ = encoder.flush();
    }
    encoder.finish().map_or(usize::MAX, |out| out.len())
}

/// The length of `values` as varints.
fn varints_len(values: impl Iterator<Item = u64>) -> usize {
    values
        .map(prost::encoding::encoded_len_varint)
        .sum::<usize>()
}

/// Appends packed field `tag` (1-15) of `values`, `len` bytes of varints
/// in all (their [`varints_len`]); nothing if `len` is 0.
fn put_packed(out: &mut Vec<u8>, tag: u32, len: usize, values: impl Iterator<Item = u64>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if len == 0 {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    let start = out.len();
    out.resize(start + len, 0);
    let room = &mut out[start..];
    let mut at = 0;
    for mut value in values {
        while value >= 0x80 {
            room[at] = (value as u8) | 0x80;
            value >>= 7;
            at += 1;
        }
        room[at] = value as u8;
        at += 1;
    }
    debug_assert_eq!(at, len);
}

/// Encoded lengths of the columns of `batch`, in the order prost writes
/// them (tag order; the scalar tick interval goes with the ticks).
fn column_lengths(batch: &proto::SampleBatch) -> [usize; 7] {
    use prost::encoding::{sint64, uint32, uint64};
    let interval = if batch.tick_interval_ns == 0 {
        0
    } else {
        uint64::encoded_len(5, &batch.tick_interval_ns)
    };
    [
        uint64::encoded_len_packed(1, &batch.time_delta_ns),
        uint32::encoded_len_packed(2, &batch.thread),
        uint64::encoded_len_packed(3, &batch.stack),
        uint32::encoded_len_packed(4, &batch.flags),
        interval + uint64::encoded_len_packed(6, &batch.ticks),
        sint64::encoded_len_packed(7, &batch.tick_offset_ns),
        uint32::encoded_len_packed(8, &batch.weight),
    ]
}

/// The tick interval of a sampler asked for `rate_hz` ticks per second, in
/// nanoseconds, as the agent's schedule computes it (`agent/src/recording/schedule.rs`:
/// whole nanoseconds, 1 µs to 1 h); 0 for a rate that is not a positive number.
pub fn tick_interval_of(rate_hz: f64) -> u64 {
    if rate_hz.is_finite() && rate_hz > 0.0 {
        (1e9 / rate_hz.max(1e-3)).clamp(1_000.0, 3.6e12) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod trace_event_tests {
    use super::*;

    #[test]
    fn trace_batches_are_coded_as_prost_codes_them() {
        let columns = |n: u64| proto::TraceEventBatch {
            time_delta_ns: (0..n).map(|i| i * i * 1_000_003 % (1 << 40)).collect(),
            thread: (0..n).map(|i| (i % 3) as u32 * 100_000).collect(),
            kind: (0..n).map(|i| (i % 5) as i32).collect(),
            frame: (0..n).map(|i| u64::MAX >> (i % 64)).collect(),
            ..Default::default()
        };
        let batches = [
            proto::TraceEventBatch::default(),
            columns(1),
            columns(10_000),
            proto::TraceEventBatch {
                lost: 5,
                lost_first_ns: 1 << 50,
                window_start_ns: 3,
                functions: "f.*".into(),
                lines: true,
                count_frame: vec![1, 2, 300],
                count_kind: vec![5, 5, 5],
                count: vec![7, 1 << 33, 9],
                clock: "TSC".into(),
                calls_by: "eval-frame hook".into(),
                unwatched_functions: 2,
                ..columns(300)
            },
            proto::TraceEventBatch {
                // Only some columns (and a negative enum value, coded as
                // prost codes an int32: ten bytes).
                kind: vec![-1, 2],
                frame: vec![0, 0],
                ..Default::default()
            },
        ];
        for batch in batches {
            let mut writer =
                Writer::new(Vec::new(), proto::Header::default(), Default::default()).unwrap();
            writer.pending.clear();
            writer.boundaries.clear();
            writer
                .push_record(Kind::TraceEvents(batch.clone()))
                .unwrap();
            let expected = proto::Record {
                kind: Some(Kind::TraceEvents(batch)),
            }
            .encode_length_delimited_to_vec();
            assert_eq!(writer.pending, expected);
            assert_eq!(writer.boundaries, vec![expected.len()]);
        }
    }
}
