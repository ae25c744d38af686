//! Turns what the walker reads (thread samples, code objects) into records of
//! a `.pdr` file: interning code objects once per distinct object, embedding
//! their source files once, and announcing threads when first seen or renamed.
//!
//! It runs on the recording's sink thread ([`crate::recording::sink`]) and never reads
//! the target: code objects come from a [`CodeSource`], in production the
//! sink's mirror of what the sampler resolved ([`crate::recording::codes`]).

use std::io::Write;

use pydeep_cpython::linetable::LineIndex;
use pydeep_format::proto::{self, SampleFlag};
use pydeep_format::{FormatError, FrameKey, Writer};

use crate::process::address_hash::AddressMap;
use crate::recording::codes::Continuity;
use crate::recording::sources::Sources;
use crate::{CodeId, CodeObject, FrameSample, PythonVersion, ThreadHead};

/// Where the recorder gets code objects from: the mirror of what the
/// sampler resolved ([`crate::recording::codes::CodeMirror`]), never the
/// target itself.
pub trait CodeSource {
    /// The code object at `address`, with its identity.
    fn code_object(&mut self, address: u64) -> Option<(CodeId, &CodeObject)>;

    /// A counter that changes whenever some address's code object changes
    /// identity; while it stays the same, what the recorder derived from an
    /// address (code id, line table) still holds.
    fn code_epoch(&self) -> u64;
}

/// A code object as recorded: its id in the file and its decoded line table.
struct RecordedCode {
    id: u64,
    lines: LineIndex,
}

/// A thread as last announced in the recording.
struct RecordedThread {
    id: u32,
    /// The OS thread: an ident (`thread_id`) is reused once its thread is
    /// joined, and the new thread is another thread of the recording.
    native_id: u64,
    name: Option<String>,
    /// The thread's previous stack, to reuse the frame ids of the part of
    /// the next one that did not change.
    last: LastStack,
}

/// The previous stack of a thread: its frame ids (outermost first) and
/// its stack id.
///
/// Why: between two samples most of a stack is the same callers, and
/// interning a frame costs several hash lookups (code object, line, frame
/// key). At depth 1,000 that was most of the sampler's time. Which
/// outermost frames did not change is found once, by the sampler
/// ([`crate::recording::codes::Resolver`]), and given to [`Recorder::sample`].
#[derive(Default)]
struct LastStack {
    frame_ids: Vec<u64>,
    stack: u64,
    /// The code epoch the ids were derived under; `None`: nothing reusable.
    code_epoch: Option<u64>,
    /// Which of the thread's stacks sent it was ([`Continuity`]).
    sequence: u64,
}

impl LastStack {
    /// How many outermost frame ids of the previous stack can be reused
    /// for a stack of `frames` frames that follows a stack sent as
    /// `continuity` says: none unless the previous stack is the one sent
    /// just before and is still reusable under `code_epoch`.
    fn reusable(&self, continuity: Continuity, frames: usize, code_epoch: u64) -> usize {
        let follows = continuity.sequence != 0 && self.sequence + 1 == continuity.sequence;
        if !follows || self.code_epoch != Some(code_epoch) {
            return 0;
        }
        (continuity.unchanged as usize)
            .min(frames)
            .min(self.frame_ids.len())
    }
}

/// Counters of what the recorder did, for the summary and the footer.
#[derive(Debug, Clone, Default)]
pub struct RecorderStats {
    /// Samples written.
    pub samples: u64,
    /// Samples flagged torn.
    pub torn: u64,
    /// Frames whose code object could not be read (recorded as "<unknown>").
    pub unreadable_code: u64,
    /// Distinct code objects embedded.
    pub code_objects: u64,
    /// Source definitions embedded (whole files or spans of lines).
    pub source_files: u64,
}

/// When a sampler tick was taken, and how many ticks its samples stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The stream clock at the tick, in nanoseconds.
    pub clock_ns: u64,
    /// 1 plus the ticks the sampler missed right before this one
    /// (`Schedule::weight`).
    pub weight: u32,
}

/// One thread's stack as the recorder takes it: the thread, and its
/// frames outermost first (the order stacks are stored in, and the order
/// the sink rebuilds them in from the changed frames it is sent,
/// [`crate::recording::ticks`]).
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    /// The thread.
    pub thread: &'a ThreadHead,
    /// Its frames, outermost first.
    pub frames: &'a [FrameSample],
}

/// Writes samples of one or more targets into one recording.
pub struct Recorder<W: Write> {
    writer: Writer<W>,
    embed_source: bool,
    include_idle: bool,
    codes: AddressMap<(i32, CodeId), RecordedCode>,
    unknown_code: Option<u64>,
    sources: Sources,
    threads: AddressMap<(i32, u64), RecordedThread>,
    next_thread_id: u32,
    frame_ids: Vec<u64>,
    stats: RecorderStats,
    /// Masks secret-looking values of recorded command lines (`--redact`).
    redact: Option<&'static regex::Regex>,
}

impl<W: Write> Recorder<W> {
    /// A recorder writing through `writer`.
    pub fn new(writer: Writer<W>, embed_source: bool, include_idle: bool) -> Self {
        Recorder {
            writer,
            embed_source,
            include_idle,
            codes: AddressMap::default(),
            unknown_code: None,
            sources: Sources::new(false),
            threads: AddressMap::default(),
            next_thread_id: 1,
            frame_ids: Vec::new(),
            stats: RecorderStats::default(),
            redact: None,
        }
    }

    /// Masks values of command lines recorded from now on that match
    /// `pattern` (`--redact`; the daemon uses the default pattern).
    pub fn set_redaction(&mut self, pattern: Option<&'static regex::Regex>) {
        self.redact = pattern;
    }

    /// `argv` as recorded: secret-looking values masked.
    pub fn command_line(&self, argv: &[String]) -> Vec<String> {
        crate::reading::redact::command_line(self.redact, argv)
    }

    /// Embeds whole source files rather than the lines of the code objects
    /// recorded (`--full-source`; see sources.rs).
    pub fn embed_whole_files(&mut self, whole: bool) {
        self.sources = Sources::new(whole);
    }

    /// Forgets everything derived from the program image `pid` ran until
    /// now: its code objects, its threads (with their last stacks) and the
    /// source files read for it. Called when the process `exec`s or is
    /// attached afresh, so that nothing of the old image names a frame of
    /// the new one; its threads are announced again when next sampled.
    pub fn forget_process(&mut self, pid: i32) {
        self.codes.retain(|(owner, _), _| *owner != pid);
        self.threads.retain(|(owner, _), _| *owner != pid);
        self.sources.forget_process(pid);
    }

    /// Source files withheld because the target's own user could not read
    /// them: (name, why).
    pub fn withheld_sources(&self) -> &[(String, String)] {
        self.sources.withheld()
    }

    /// What has been recorded so far.
    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// The underlying writer (for its byte counts).
    pub fn writer(&self) -> &Writer<W> {
        &self.writer
    }

    /// Announces `thread` of `pid` if it is new (a new ident, or a new OS
    /// thread under a reused ident) or its name changed, and returns its id
    /// in the recording.
    pub fn thread(&mut self, pid: i32, sample: &ThreadHead, name: Option<&str>) -> u32 {
        let key = (pid, sample.thread_id);
        if let Some(known) = self.threads.get(&key) {
            let same_thread = known.native_id == sample.native_id;
            if same_thread && (known.name.as_deref() == name || name.is_none()) {
                return known.id;
            }
        }
        let known = self
            .threads
            .remove(&key)
            .filter(|known| known.native_id == sample.native_id);
        let (id, last) = match known {
            Some(known) => (known.id, known.last),
            None => {
                let id = self.next_thread_id;
                self.next_thread_id += 1;
                (id, LastStack::default())
            }
        };
        let name_id = name.map_or(0, |n| self.writer.intern_string(n));
        self.writer.define_thread(proto::ThreadDef {
            id,
            pid: pid as u32,
            thread_id: sample.thread_id,
            native_id: sample.native_id,
            name: name_id,
            is_main: sample.is_main,
            interpreter: sample.interpreter,
        });
        self.threads.insert(
            key,
            RecordedThread {
                id,
                native_id: sample.native_id,
                name: name.map(str::to_owned),
                last,
            },
        );
        id
    }

    /// Records one stack of a thread of process `pid` (its interpreter's
    /// `version`) taken at `tick`. Idle threads are skipped unless idle
    /// recording was asked for; returns whether a sample was written.
    ///
    /// `continuity`: how the stack follows the thread's previous one sent
    /// (default: unknown); the frame ids of its unchanged outermost frames
    /// are reused if that previous stack is the one recorded last.
    pub fn sample(
        &mut self,
        source: &mut impl CodeSource,
        (pid, version): (i32, &PythonVersion),
        tick: Tick,
        stack: Stack<'_>,
        name: Option<&str>,
        continuity: Continuity,
    ) -> Result<bool, FormatError> {
        let Tick { clock_ns, weight } = tick;
        let Stack {
            thread: sample,
            frames,
        } = stack;
        if !sample.active && !self.include_idle {
            return Ok(false);
        }
        let thread = self.thread(pid, sample, name);
        let key = (pid, sample.thread_id);
        let mut last = self
            .threads
            .get_mut(&key)
            .map(|t| std::mem::take(&mut t.last))
            .unwrap_or_default();
        let code_epoch = source.code_epoch();
        let shared = last.reusable(continuity, frames.len(), code_epoch);
        last.sequence = continuity.sequence;
        let stack = if shared == frames.len() && shared == last.frame_ids.len() {
            last.stack
        } else {
            let mut frame_ids = std::mem::take(&mut self.frame_ids);
            frame_ids.clear();
            frame_ids.extend_from_slice(&last.frame_ids[..shared]);
            let unreadable_before = self.stats.unreadable_code;
            for frame in &frames[shared..] {
                frame_ids.push(self.frame(source, pid, version, frame));
            }
            let stack = self.writer.intern_stack(&frame_ids);
            // A frame recorded as "<unknown>" may be readable next time: keep
            // nothing to reuse then. Reading a new code object may also have
            // replaced a cached one, so the epoch is taken again.
            last.code_epoch = (self.stats.unreadable_code == unreadable_before)
                .then(|| source.code_epoch())
                .filter(|&now| now == code_epoch);
            std::mem::swap(&mut last.frame_ids, &mut frame_ids);
            self.frame_ids = frame_ids;
            last.stack = stack;
            stack
        };
        if let Some(recorded) = self.threads.get_mut(&key) {
            recorded.last = last;
        }
        let mut flags = 0;
        if sample.collecting {
            flags |= SampleFlag::Gc as u32;
        }
        if sample.holds_gil {
            flags |= SampleFlag::HoldsGil as u32;
        }
        if sample.active {
            flags |= SampleFlag::Active as u32;
        }
        if sample.torn {
            flags |= SampleFlag::Torn as u32;
            self.stats.torn += 1;
        }
        if sample.truncated {
            flags |= SampleFlag::Truncated as u32;
        }
        if frames.is_empty() {
            flags |= SampleFlag::NoPython as u32;
        }
        self.writer
            .weighted_sample(clock_ns, thread, stack, flags, weight)?;
        self.stats.samples += 1;
        Ok(true)
    }

    /// The id of `frame` in the recording, defining it (and its code
    /// object) on first use.
    pub fn frame(
        &mut self,
        source: &mut impl CodeSource,
        pid: i32,
        version: &PythonVersion,
        frame: &FrameSample,
    ) -> u64 {
        let (code, line) = match self.code(source, pid, version, frame.code_address) {
            Some(code) => (
                code.id,
                code.lines.line(frame.instruction_offset).unwrap_or(0),
            ),
            None => {
                self.stats.unreadable_code += 1;
                (self.unknown_code(), 0)
            }
        };
        self.writer.intern_frame(FrameKey {
            code,
            instruction_offset: frame.instruction_offset,
            line,
            is_generator: frame.is_generator,
            is_shim: frame.is_shim,
        })
    }

    /// The frame id of a line event (`pydeep trace --lines`): the code
    /// object at `code_address`, the instruction offset the tracer read (0
    /// if unknown: before 3.11) and the line it reported, which is kept as
    /// reported rather than derived from the offset.
    pub fn line_frame(
        &mut self,
        source: &mut impl CodeSource,
        pid: i32,
        version: &PythonVersion,
        code_address: u64,
        instruction_offset: u32,
        line: u32,
    ) -> u64 {
        let code = match self.code(source, pid, version, code_address) {
            Some(code) => code.id,
            None => {
                self.stats.unreadable_code += 1;
                self.unknown_code()
            }
        };
        self.writer.intern_frame(FrameKey {
            code,
            instruction_offset,
            line,
            is_generator: false,
            is_shim: false,
        })
    }

    /// The frame id standing for the C function `name` in a trace
    /// (`pydeep trace --c-calls`): a code object of that name in the file
    /// "<built-in>", defined on each call (callers keep the id).
    pub fn native_frame(&mut self, name: &str) -> u64 {
        let id = self.writer.next_code_id();
        let filename = self.writer.intern_string("<built-in>");
        let name = self.writer.intern_string(name);
        self.writer.define_code_object(proto::CodeObjectDef {
            id,
            filename,
            name,
            qualname: name,
            ..Default::default()
        });
        self.writer.intern_frame(FrameKey {
            code: id,
            instruction_offset: 0,
            line: 0,
            is_generator: false,
            is_shim: false,
        })
    }

    /// The stack id of `frame_ids` (outermost first), defining it on first
    /// use; samples of the same stack share the id.
    pub fn stack(&mut self, frame_ids: &[u64]) -> u64 {
        self.writer.intern_stack(frame_ids)
    }

    /// The id of string `text`, defining it on first use.
    pub fn string(&mut self, text: &str) -> u64 {
        self.writer.intern_string(text)
    }

    /// The recording header's `start_clock_ns`.
    pub fn start_clock_ns(&self) -> u64 {
        self.writer.start_clock_ns()
    }

    /// Writes any other record (process events, snapshots).
    pub fn record(&mut self, kind: proto::record::Kind) -> Result<(), FormatError> {
        self.writer.record(kind)
    }

    /// Closes the current chunk if it is due.
    pub fn maybe_flush(&mut self) -> Result<bool, FormatError> {
        self.writer.maybe_flush()
    }

    /// Closes the current chunk now, whether or not it is due (`pydeep
    /// ctl flush`).
    pub fn flush(&mut self) -> Result<(), FormatError> {
        self.writer.flush()
    }

    /// Writes the footer and closes the file.
    pub fn finish(self, footer: proto::Footer) -> Result<W, FormatError> {
        self.writer.finish(footer)
    }

    fn code(
        &mut self,
        source: &mut impl CodeSource,
        pid: i32,
        version: &PythonVersion,
        address: u64,
    ) -> Option<&RecordedCode> {
        let (code_id, code) = source.code_object(address)?;
        let key = (pid, code_id);
        if !self.codes.contains_key(&key) {
            let recorded = self.define_code(pid, version, code);
            self.codes.insert(key, recorded);
        }
        self.codes.get(&key)
    }

    fn define_code(
        &mut self,
        pid: i32,
        version: &PythonVersion,
        code: &CodeObject,
    ) -> RecordedCode {
        let id = self.writer.next_code_id();
        let kind = code.line_table_kind;
        let lines = LineIndex::new(kind, code.first_line, &code.line_table);
        let span = lines
            .last_line()
            .map(|last| (code.first_line, last.max(code.first_line)));
        let source_file = self.source_file(pid, &code.filename, span);
        let w = &mut self.writer;
        let mut strings = |names: &[String]| names.iter().map(|n| w.intern_string(n)).collect();
        let varnames = strings(&code.varnames);
        let cellvars = strings(&code.cellvars);
        let freevars = strings(&code.freevars);
        let names = strings(&code.names);
        let def = proto::CodeObjectDef {
            id,
            filename: self.writer.intern_string(&code.filename),
            name: self.writer.intern_string(&code.name),
            qualname: self.writer.intern_string(&code.qualname),
            first_line: code.first_line,
            bytecode: code.bytecode.clone(),
            bytecode_deoptimized: if code.bytecode_deoptimized == code.bytecode {
                Vec::new()
            } else {
                code.bytecode_deoptimized.clone()
            },
            line_table: code.line_table.clone(),
            line_table_kind: kind as i32,
            varnames,
            cellvars,
            freevars,
            names,
            consts: code.consts.clone(),
            python_version: Some(proto_version(version)),
            source_file,
            argcount: code.argcount,
            posonlyargcount: code.posonlyargcount,
            kwonlyargcount: code.kwonlyargcount,
            flags: code.flags,
            stacksize: code.stacksize,
            localspluskinds: code.localspluskinds.clone(),
            address: code.address,
            pid: pid as u32,
            const_code_ids: Vec::new(),
        };
        self.writer.define_code_object(def);
        self.stats.code_objects += 1;
        RecordedCode { id, lines }
    }

    /// The code id standing for frames whose code object was unreadable.
    fn unknown_code(&mut self) -> u64 {
        if let Some(id) = self.unknown_code {
            return id;
        }
        let id = self.writer.next_code_id();
        let unknown = self.writer.intern_string("<unknown>");
        self.writer.define_code_object(proto::CodeObjectDef {
            id,
            filename: unknown,
            name: unknown,
            qualname: unknown,
            ..Default::default()
        });
        self.unknown_code = Some(id);
        id
    }

    /// The source definition holding `lines` of `filename` (if asked to
    /// embed sources; 0 otherwise), defined on first use (sources.rs).
    fn source_file(&mut self, pid: i32, filename: &str, lines: Option<(u32, u32)>) -> u64 {
        if !self.embed_source || filename.starts_with('<') {
            return 0;
        }
        let (id, new) = self.sources.embed(&mut self.writer, pid, filename, lines);
        if new {
            self.stats.source_files += 1;
        }
        id
    }
}

/// The schema's version message for `version`.
pub fn proto_version(version: &PythonVersion) -> proto::PythonVersion {
    proto::PythonVersion {
        major: version.major,
        minor: version.minor,
        patch: version.patch,
        release: version.release.clone(),
        free_threaded: version.free_threaded,
        debug_build: version.debug_build,
    }
}
