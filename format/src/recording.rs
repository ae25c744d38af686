//! [`Recording`]: the high-level streaming reader with the interned tables.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Read};
use std::path::Path;

use crate::container::MAX_STACK_FRAMES;
use crate::proto::{self, record::Kind};
use crate::timing::SampleClock;
use crate::{FormatError, IdTable, Reader, StackTable};

/// One sample, with its time made absolute again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sample {
    /// Stream clock time in nanoseconds (the header's clock).
    pub time_ns: u64,
    /// ThreadDef id.
    pub thread: u32,
    /// Stack id (0: no Python frame).
    pub stack: u64,
    /// OR of [`proto::SampleFlag`] bits.
    pub flags: u32,
    /// Sampler ticks this sample stands for (1, or more after ticks the
    /// sampler missed: `SampleBatch.weight`). Profiles count samples by it.
    pub weight: u32,
}

/// What a [`Recording`] yields, in stream order. Definitions are not events:
/// they are absorbed into [`Recording::tables`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One stack sample.
    Sample(Sample),
    /// A deep snapshot.
    Snapshot(Box<proto::Snapshot>),
    /// A batch of trace events.
    TraceEvents(proto::TraceEventBatch),
    /// A process lifecycle event.
    Process(proto::ProcessEvent),
    /// A stretch of time the sampler did not observe.
    Gap(proto::Gap),
    /// The footer: the last event of a complete recording.
    Footer(proto::Footer),
}

/// The interned tables of a recording, as far as it has been read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    /// StringDef values by id.
    pub strings: HashMap<u64, String>,
    /// Embedded source files by id.
    pub source_files: HashMap<u64, proto::SourceFileDef>,
    /// Code objects by id.
    pub code_objects: HashMap<u64, proto::CodeObjectDef>,
    /// Frames by id.
    pub frames: IdTable<proto::FrameDef>,
    /// Stack prefix-tree nodes by id.
    pub stacks: StackTable,
    /// Threads by id, in their latest definition.
    pub threads: HashMap<u32, proto::ThreadDef>,
}

/// The lines of `spans` (in order of first line; a whole file has first
/// line 0) laid out at their own line numbers: later spans overwrite the
/// lines they share with earlier ones, gaps are empty lines. Bounded by the
/// spans' own lengths plus their first lines, which a hostile file could
/// make large: first lines past [`MAX_SOURCE_LINE`] are dropped.
fn spans_text<'a>(spans: impl Iterator<Item = &'a proto::SourceFileDef>) -> String {
    let mut lines: Vec<String> = Vec::new();
    for def in spans {
        let text = String::from_utf8_lossy(&def.content);
        let first = def.first_line.max(1) as usize;
        if first > MAX_SOURCE_LINE {
            continue;
        }
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let at = first - 1 + i;
            if lines.len() <= at {
                lines.resize(at + 1, String::new());
            }
            lines[at] = line.trim_end_matches(['\n', '\r']).to_owned();
        }
    }
    lines.join("\n")
}

/// Highest first line of an embedded span honoured: a hostile file could
/// otherwise make the reader lay out billions of empty lines (each costs a
/// `String`, 24 bytes: at most 24 MiB here). No real Python file has this
/// many lines.
const MAX_SOURCE_LINE: usize = 1 << 20;

impl Tables {
    /// The string with id `id`, or "" if it is 0 or unknown.
    pub fn string(&self, id: u64) -> &str {
        self.strings.get(&id).map(String::as_str).unwrap_or("")
    }

    /// The string with id `id` as a name to print ([`crate::text::escape`]:
    /// no control character): for every name a target controls (functions,
    /// files, threads, types, variables) in a text output.
    pub fn name(&self, id: u64) -> std::borrow::Cow<'_, str> {
        crate::text::escape(self.string(id))
    }

    /// The text of source definition `id` with each line at its own line
    /// number: a span of a file (`first_line` > 0) is preceded by empty
    /// lines. None if unknown or missing.
    pub fn source_text(&self, id: u64) -> Option<String> {
        let def = self.source_files.get(&id).filter(|def| !def.missing)?;
        if def.first_line == 0 {
            return Some(String::from_utf8_lossy(&def.content).into_owned());
        }
        Some(spans_text([def].into_iter()))
    }

    /// Everything embedded of the file the recording names `path`: the
    /// whole file if it was embedded so, else every span of it merged, each
    /// line at its own line number and lines not embedded left empty. None
    /// if nothing of it is there.
    pub fn file_text(&self, path: &str) -> Option<String> {
        let mut defs: Vec<&proto::SourceFileDef> = self
            .source_files
            .values()
            .filter(|def| !def.missing && self.string(def.path) == path)
            .collect();
        if defs.is_empty() {
            return None;
        }
        if let Some(whole) = defs.iter().find(|def| def.first_line == 0) {
            return Some(String::from_utf8_lossy(&whole.content).into_owned());
        }
        defs.sort_by_key(|def| (def.first_line, def.id));
        Some(spans_text(defs.into_iter()))
    }

    /// The frame ids of `stack`, outermost first. Empty for stack 0 or an
    /// unknown stack. The parent chain of a hostile file is followed at most
    /// once per defined stack and for at most [`crate::MAX_STACK_FRAMES`]
    /// frames, so cycles and absurd depths end; an unknown parent ends the
    /// chain there.
    pub fn stack_frames(&self, stack: u64) -> Vec<u64> {
        let mut segments: Vec<&[u64]> = Vec::new();
        let mut total = 0usize;
        let mut id = stack;
        let mut steps = 0usize;
        while id != 0 && steps <= self.stacks.len() && total < MAX_STACK_FRAMES {
            let Some(def) = self.stacks.get(&id) else {
                break;
            };
            let take = def.frames.len().min(MAX_STACK_FRAMES - total);
            // Keep the innermost part of an over-long segment: it is the part
            // nearest the caller's sample.
            segments.push(&def.frames[def.frames.len() - take..]);
            total += take;
            steps += 1;
            id = def.parent;
        }
        let mut frames = Vec::with_capacity(total);
        for segment in segments.iter().rev() {
            frames.extend_from_slice(segment);
        }
        frames
    }

    /// Absorbs a definition record; returns false for anything else.
    fn absorb(&mut self, kind: &mut Option<Kind>) -> bool {
        match kind.take() {
            Some(Kind::String(def)) => {
                self.strings.insert(def.id, def.value);
            }
            Some(Kind::SourceFile(def)) => {
                self.source_files.insert(def.id, def);
            }
            Some(Kind::CodeObject(def)) => {
                self.code_objects.insert(def.id, def);
            }
            Some(Kind::Frame(def)) => {
                self.frames.insert(def.id, def);
            }
            Some(Kind::Stack(def)) => {
                self.stacks.insert(def);
            }
            Some(Kind::Thread(def)) => {
                self.threads.insert(def.id, def);
            }
            other => {
                *kind = other;
                return false;
            }
        }
        true
    }
}

enum Pending {
    Samples(proto::SampleBatch),
    Event(Event),
}

/// Reads a recording as a stream of [`Event`]s, maintaining the [`Tables`].
///
/// Each chunk's definitions are absorbed before any of its events is returned,
/// so every id an event uses is in [`Recording::tables`] when it arrives (the
/// writer puts each definition in the chunk of its first use or earlier).
/// Memory is bounded by one chunk plus the tables.
pub struct Recording<R: Read> {
    reader: Reader<R>,
    header: proto::Header,
    tables: Tables,
    footer: Option<proto::Footer>,
    queue: VecDeque<Pending>,
    /// The batch being handed out and the index of its next sample.
    batch: Option<(proto::SampleBatch, usize)>,
    clock: SampleClock,
    chunk_offset: u64,
}

impl Recording<BufReader<std::fs::File>> {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        Recording::new(Reader::open(path)?)
    }
}

impl<R: Read> Recording<R> {
    /// Reads the first chunk, which must start with the [`proto::Header`].
    pub fn new(mut reader: Reader<R>) -> Result<Self, FormatError> {
        let Some(chunk) = reader.next_chunk()? else {
            return Err(FormatError::Truncated {
                offset: reader.offset(),
                complete_chunks: reader.complete_chunks(),
            });
        };
        let mut records = chunk.records.into_iter();
        let header = match records.next().and_then(|r| r.kind) {
            Some(Kind::Header(header)) => header,
            _ => {
                return Err(FormatError::corrupt(
                    chunk.offset,
                    "the first record of the file is not a Header",
                ))
            }
        };
        let mut recording = Recording {
            reader,
            clock: SampleClock::new(header.start_clock_ns),
            header,
            tables: Tables::default(),
            footer: None,
            queue: VecDeque::new(),
            batch: None,
            chunk_offset: chunk.offset,
        };
        recording.absorb_chunk(chunk.offset, records.collect())?;
        Ok(recording)
    }

    /// The header of the recording.
    pub fn header(&self) -> &proto::Header {
        &self.header
    }

    /// The interned tables, as far as the recording has been read.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The footer, once read (only complete files have one).
    pub fn footer(&self) -> Option<&proto::Footer> {
        self.footer.as_ref()
    }

    /// The chunk reader underneath (offsets, chunk counts).
    pub fn reader(&self) -> &Reader<R> {
        &self.reader
    }

    /// Byte offset of the chunk the last event came from.
    pub fn chunk_offset(&self) -> u64 {
        self.chunk_offset
    }

    fn absorb_chunk(
        &mut self,
        offset: u64,
        records: Vec<proto::Record>,
    ) -> Result<(), FormatError> {
        self.chunk_offset = offset;
        for record in records {
            let mut kind = record.kind;
            if self.tables.absorb(&mut kind) {
                continue;
            }
            let pending = match kind {
                Some(Kind::Samples(batch)) => {
                    if !batch.columns_agree() {
                        return Err(FormatError::corrupt(
                            offset,
                            format!(
                                "sample batch columns differ in length ({} time deltas, {} ticks, {} tick offsets, {} threads, {} stacks, {} flags, {} weights)",
                                batch.time_delta_ns.len(),
                                batch.ticks.len(),
                                batch.tick_offset_ns.len(),
                                batch.thread.len(),
                                batch.stack.len(),
                                batch.flags.len(),
                                batch.weight.len()
                            ),
                        ));
                    }
                    Pending::Samples(batch)
                }
                Some(Kind::Snapshot(snapshot)) => {
                    Pending::Event(Event::Snapshot(Box::new(snapshot)))
                }
                Some(Kind::TraceEvents(batch)) => Pending::Event(Event::TraceEvents(batch)),
                Some(Kind::ProcessEvent(event)) => Pending::Event(Event::Process(event)),
                Some(Kind::Gap(gap)) => Pending::Event(Event::Gap(gap)),
                Some(Kind::Footer(footer)) => {
                    self.footer = Some(footer.clone());
                    Pending::Event(Event::Footer(footer))
                }
                // A second header, or a record kind from a newer writer.
                _ => continue,
            };
            self.queue.push_back(pending);
        }
        Ok(())
    }

    /// The next event, `Ok(None)` at the end of a complete recording. A
    /// truncated or corrupt file gives every event of its complete chunks,
    /// then the error.
    pub fn next_event(&mut self) -> Result<Option<Event>, FormatError> {
        loop {
            if let Some((batch, index)) = &mut self.batch {
                if *index < batch.len() {
                    let i = *index;
                    *index += 1;
                    let time_ns = if batch.tick_interval_ns == 0 {
                        self.clock.decode_delta(batch.time_delta_ns[i])
                    } else {
                        self.clock.decode(batch.ticks[i], batch.tick_offset_ns[i])
                    };
                    return Ok(Some(Event::Sample(Sample {
                        time_ns,
                        thread: batch.thread[i],
                        stack: batch.stack[i],
                        flags: batch.flags[i],
                        weight: batch.weight.get(i).copied().unwrap_or(1).max(1),
                    })));
                }
                self.batch = None;
            }
            match self.queue.pop_front() {
                Some(Pending::Samples(batch)) => {
                    self.clock.start_batch(batch.tick_interval_ns);
                    self.batch = Some((batch, 0));
                }
                Some(Pending::Event(event)) => return Ok(Some(event)),
                None => match self.reader.next_chunk()? {
                    Some(chunk) => self.absorb_chunk(chunk.offset, chunk.records)?,
                    None => return Ok(None),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(id: u64, parent: u64, frames: Vec<u64>) -> proto::StackDef {
        proto::StackDef { id, parent, frames }
    }

    fn tables(stacks: Vec<proto::StackDef>) -> Tables {
        Tables {
            stacks: stacks.into_iter().collect(),
            ..Tables::default()
        }
    }

    #[test]
    fn a_stack_is_its_parents_frames_then_its_own() {
        let t = tables(vec![
            stack(1, 0, vec![10, 11]),
            stack(2, 1, vec![12]),
            stack(3, 2, vec![13, 14]),
        ]);
        assert_eq!(t.stack_frames(3), vec![10, 11, 12, 13, 14]);
        assert_eq!(t.stack_frames(0), Vec::<u64>::new());
        assert_eq!(t.stack_frames(99), Vec::<u64>::new());
    }

    #[test]
    fn hostile_parent_chains_end() {
        // A self-parent, a two-stack cycle, an unknown parent.
        let t = tables(vec![
            stack(1, 1, vec![7]),
            stack(2, 3, vec![8]),
            stack(3, 2, vec![9]),
            stack(4, 77, vec![5, 6]),
        ]);
        assert!(t.stack_frames(1).len() <= 5);
        assert!(t.stack_frames(2).len() <= 5);
        assert_eq!(t.stack_frames(4), vec![5, 6]);
    }

    #[test]
    fn an_absurdly_deep_chain_is_cut_at_max_stack_frames() {
        let wide = vec![1u64; 40_000];
        let t = tables(vec![stack(1, 2, wide.clone()), stack(2, 1, wide)]);
        assert_eq!(t.stack_frames(1).len(), MAX_STACK_FRAMES);
    }

    #[test]
    fn the_empty_string_and_unknown_ids_read_as_empty() {
        let mut t = Tables::default();
        t.strings.insert(1, "main".into());
        assert_eq!(t.string(1), "main");
        assert_eq!(t.string(0), "");
        assert_eq!(t.string(2), "");
    }
}
