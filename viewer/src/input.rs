//! Opens a recording and streams its samples.
//!
//! A recording whose tail is missing or damaged (the recorder was killed, the
//! disk filled up) still holds a consistent prefix: the format guarantees that
//! every definition precedes its first use chunk by chunk. So a read error
//! after the header does not fail the output: the samples read so far are
//! shown and [`Input::damage`] says what happened, for the caller to warn.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use pydeep_format::proto;
use pydeep_format::{Event, Reader, Recording, Sample, Tables};

use crate::ViewError;

/// What [`Input::next_timed`] gives: the events that lie on a timeline.
#[derive(Debug)]
pub enum Timed {
    /// One sample of one thread.
    Sample(Sample),
    /// Exact call and return events of a trace window.
    Trace(Box<proto::TraceEventBatch>),
}

/// A recording being read, sample by sample.
pub struct Input<R: Read> {
    recording: Recording<R>,
    name: String,
    samples_read: u64,
    damage: Option<String>,
    saw_footer: bool,
    /// The footer's sample count, to check against the samples read.
    footer_samples: Option<u64>,
    /// Command lines of processes announced by process events (children
    /// followed with subprocesses on), by pid.
    process_argv: HashMap<u32, Vec<String>>,
    finished: bool,
    /// Stretches the sampler did not observe (`Gap` records).
    gaps: pydeep_format::Gaps,
}

impl Input<BufReader<File>> {
    /// Opens the recording at `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, ViewError> {
        let file = pydeep_format::files::open_input(path).map_err(|reason| ViewError::Missing {
            path: path.to_path_buf(),
            reason,
        })?;
        let open_error = |reason| ViewError::Open {
            path: PathBuf::from(path),
            reason,
        };
        let reader = Reader::new(BufReader::with_capacity(1 << 20, file)).map_err(open_error)?;
        let recording = Recording::new(reader).map_err(open_error)?;
        Ok(Self::new(recording, path.display().to_string()))
    }
}

impl<R: Read> Input<R> {
    /// Wraps an opened recording; `name` names it in warnings.
    pub fn new(recording: Recording<R>, name: String) -> Self {
        Input {
            recording,
            name,
            samples_read: 0,
            damage: None,
            saw_footer: false,
            footer_samples: None,
            process_argv: HashMap::new(),
            finished: false,
            gaps: Default::default(),
        }
    }

    /// The recording's header.
    pub fn header(&self) -> &proto::Header {
        self.recording.header()
    }

    /// The interned tables read so far (they only grow).
    pub fn tables(&self) -> &Tables {
        self.recording.tables()
    }

    /// The next sample, or `None` at the end of what is readable. Other
    /// events (snapshots, trace events, process events) are skipped.
    pub fn next_sample(&mut self) -> Option<Sample> {
        loop {
            match self.next_timed()? {
                Timed::Sample(sample) => return Some(sample),
                Timed::Trace(_) => {}
            }
        }
    }

    /// The next sample or batch of trace events (`pydeep trace`), in
    /// recording order, or `None` at the end of what is readable. Other
    /// events are skipped as by [`Input::next_sample`].
    pub fn next_timed(&mut self) -> Option<Timed> {
        while !self.finished {
            match self.recording.next_event() {
                Ok(Some(Event::Sample(sample))) => {
                    self.samples_read += 1;
                    return Some(Timed::Sample(sample));
                }
                Ok(Some(Event::TraceEvents(batch))) => return Some(Timed::Trace(Box::new(batch))),
                Ok(Some(Event::Footer(footer))) => {
                    self.saw_footer = true;
                    self.footer_samples = Some(footer.sample_count);
                }
                Ok(Some(Event::Process(event))) => {
                    if !event.argv.is_empty() {
                        self.process_argv.insert(event.pid, event.argv);
                    }
                }
                Ok(Some(Event::Gap(gap))) => self.gaps.add(&gap),
                Ok(Some(_)) => {}
                Ok(None) => self.finished = true,
                Err(error) => {
                    self.damage = Some(format!(
                        "{}: unreadable after {} samples ({error}); showing what was readable",
                        self.name, self.samples_read
                    ));
                    self.finished = true;
                }
            }
        }
        None
    }

    /// The next snapshot, or `None` at the end of what is readable. Samples
    /// are counted (for [`Input::damage`]) and skipped.
    pub fn next_snapshot(&mut self) -> Option<Box<proto::Snapshot>> {
        while !self.finished {
            match self.recording.next_event() {
                Ok(Some(Event::Snapshot(snapshot))) => return Some(snapshot),
                Ok(Some(Event::Sample(_))) => self.samples_read += 1,
                Ok(Some(Event::Footer(footer))) => {
                    self.saw_footer = true;
                    self.footer_samples = Some(footer.sample_count);
                }
                Ok(Some(_)) => {}
                Ok(None) => self.finished = true,
                Err(error) => {
                    self.damage = Some(format!(
                        "{}: unreadable after {} samples ({error}); showing what was readable",
                        self.name, self.samples_read
                    ));
                    self.finished = true;
                }
            }
        }
        None
    }

    /// Calls `each` with every remaining sample and the tables as they stand
    /// when the sample is read.
    pub fn for_each_sample(&mut self, mut each: impl FnMut(&Tables, &Sample)) {
        while let Some(sample) = self.next_sample() {
            each(self.recording.tables(), &sample);
        }
    }

    /// The command line of process `pid`: from its latest process event
    /// (spawn, exec) read so far, else the header's for the first target.
    pub fn process_argv(&self, pid: u32) -> &[String] {
        match self.process_argv.get(&pid) {
            Some(argv) => argv,
            None if pid == self.header().pid || self.header().pid == 0 => &self.header().argv,
            None => &[],
        }
    }

    /// Number of samples returned so far.
    pub fn samples_read(&self) -> u64 {
        self.samples_read
    }

    /// After the last sample: the stretches the sampler did not observe,
    /// in words, if there were any. Profiles are shares of the time
    /// observed: no sample stands for a gap.
    pub fn gap_note(&self) -> Option<String> {
        (self.gaps.count > 0).then(|| {
            format!(
                "{}: gaps {}: the profile covers only the time observed",
                self.name, self.gaps
            )
        })
    }

    /// After the last sample: why the recording ended early, if it did
    /// (a read error, or no footer: the recorder stopped without finishing).
    pub fn damage(&self) -> Option<String> {
        if let Some(damage) = &self.damage {
            return Some(damage.clone());
        }
        if let Some(expected) = self.footer_samples {
            if self.finished && expected != self.samples_read {
                return Some(format!(
                    "{}: the footer counts {expected} samples but {} were read",
                    self.name, self.samples_read
                ));
            }
        }
        if self.finished && !self.saw_footer {
            return Some(format!(
                "{}: no footer (the recording was not finished); showing the {} samples readable",
                self.name, self.samples_read
            ));
        }
        None
    }
}
