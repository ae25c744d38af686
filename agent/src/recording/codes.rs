//! Code objects handed from the sampler to the recording sink.
//!
//! Only the sampler thread reads the target. It resolves the code object of
//! every frame it passes on ([`Resolver`]: the [`CodeId`] the [`Target`]
//! gives each distinct object, read once and cached there), and sends with
//! each tick the address → code mappings the sink has not been told yet.
//! The sink keeps them per process in a [`CodeMirror`], which serves the
//! recorder as its [`CodeSource`]: the recorder never reads the process,
//! so interning, line tables and source files can run on the sink's own
//! thread, behind the sampler. The commands that read and record on one
//! thread (the live views, `pydeep trace`) do the same in one
//! [`ReadThenRecord`]: no recorder is ever given the [`Target`].
//!
//! Why mappings and not ids in every frame: between two samples most of a
//! thread's stack is the same callers, and looking each frame up costs a
//! hash lookup (1,000 per sample at depth 1,000). The resolver finds, once
//! per thread and tick, how many outermost frames did not change since
//! the thread's last stack sent, looks up only the frames below those (and
//! below the ones resolved under another code epoch), and sends the counts
//! with the tick and only the frames below them: the sink rebuilds the
//! stack from the last one it got ([`crate::recording::ticks`]), the
//! recorder reuses the unchanged frames' ids without comparing the stacks
//! again, and asks the sink's mirror only for the frames below.

use crate::process::address_hash::AddressMap;
use std::sync::Arc;

use crate::recording::recorder::CodeSource;
use crate::recording::ticks::TickWriter;
use crate::{CodeId, CodeObject, FrameSample, Target, ThreadSample};

/// What an address now names, as the sink learns it: a code object (new to
/// the sink, or seen before under another address), or nothing (forget
/// it: frames there are recorded as unknown).
pub type CodeMapping = (u64, Option<(CodeId, Arc<CodeObject>)>);

/// How a thread's stack sent to the sink follows the thread's previous
/// one: which of the thread's stacks sent it is (counted from 1 by the
/// [`Resolver`], again from 1 when the resolver forgets), how many of its
/// outermost frames are those of the stack sent just before it (not sent
/// again: the sink keeps the last stack, [`crate::recording::ticks`]), and
/// how many of those were resolved under the same code epoch (their frame
/// ids may be reused). The recorder reuses frame ids only if the stack it
/// recorded last for the thread is that one (`sequence - 1`): so a stack
/// sent but not recorded, or recorded by another recorder, is never taken
/// for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    /// Which of the thread's stacks sent this is; 0: unknown.
    pub sequence: u64,
    /// Outermost frames equal to those of stack `sequence - 1`: the sink
    /// has them, and only the frames below them are sent.
    pub kept: u32,
    /// Of the `kept` frames, the outermost ones resolved under the same
    /// code epoch as stack `sequence - 1`: their ids may be reused.
    pub unchanged: u32,
}

/// Where the [`Resolver`] reads code objects: the [`Target`] (a unit test
/// gives it a table).
pub trait CodeReader {
    /// The code object at `address` and its identity, read once and
    /// cached; `None` if it cannot be read now.
    fn code_object(&mut self, address: u64) -> Option<(CodeId, &CodeObject)>;

    /// Changes whenever an address's code object changes identity.
    fn code_epoch(&self) -> u64;
}

impl CodeReader for Target {
    fn code_object(&mut self, address: u64) -> Option<(CodeId, &CodeObject)> {
        Target::code_object(self, address).ok()
    }

    fn code_epoch(&self) -> u64 {
        Target::code_epoch(self)
    }
}

/// The sampler's half: which mappings the sink has been sent, and each
/// thread's last stack (to skip the frames that did not change).
#[derive(Default)]
pub struct Resolver {
    /// What the sink knows each address to be.
    sent: AddressMap<u64, CodeId>,
    /// Code objects the sink holds, shared with the mappings sent.
    objects: AddressMap<CodeId, Arc<CodeObject>>,
    /// Each thread's last stack sent, by `thread_id`.
    last: AddressMap<u64, LastSent>,
}

/// A thread's last stack sent to the sink.
#[derive(Default)]
struct LastSent {
    /// The OS thread (an ident is reused once its thread is joined).
    native_id: u64,
    /// Its frames, innermost first.
    frames: Vec<FrameSample>,
    /// Which of the thread's stacks sent it was ([`Continuity`]).
    sequence: u64,
    /// The code epoch it was resolved under; `None`: resolve it all next
    /// time, and claim no frame id reusable.
    resolved_under: Option<u64>,
}

impl Resolver {
    /// Resolves the code objects of `threads` (read from `target` just
    /// now, all to be sent) and writes them into `out`: first the mappings
    /// the sink must learn, then each thread with how its stack follows
    /// the thread's last one sent ([`Continuity`]) and the frames below
    /// the outermost ones that did not change. Each thread's frames are
    /// kept as its last stack sent: what `threads` holds after are the
    /// vectors of the stacks sent before, for the next read to fill.
    pub fn resolve<'t>(
        &mut self,
        target: &mut impl CodeReader,
        threads: impl Iterator<Item = &'t mut ThreadSample>,
        out: &mut TickWriter<'_>,
    ) {
        let Resolver {
            sent,
            objects,
            last: lasts,
        } = self;
        for thread in threads {
            let epoch = target.code_epoch();
            let last = lasts.entry(thread.thread_id).or_default();
            let kept = if last.native_id == thread.native_id {
                last.frames
                    .iter()
                    .rev()
                    .zip(thread.frames.iter().rev())
                    .take_while(|(old, new)| old == new)
                    .count()
            } else {
                0
            };
            let unchanged = if last.resolved_under == Some(epoch) {
                kept
            } else {
                0
            };
            last.sequence += 1;
            let mut complete = true;
            for frame in thread.frames.iter().rev().skip(unchanged) {
                complete &= resolve_one(sent, objects, target, frame.code_address, out.mappings());
            }
            out.thread(
                thread.head(),
                Continuity {
                    sequence: last.sequence,
                    kept: kept as u32,
                    unchanged: unchanged as u32,
                },
                &thread.frames[..thread.frames.len() - kept],
            );
            last.native_id = thread.native_id;
            std::mem::swap(&mut last.frames, &mut thread.frames);
            // An unreadable code object is tried again next time, and a
            // code object replaced meanwhile may have changed an address
            // resolved earlier in this stack.
            last.resolved_under = (complete && target.code_epoch() == epoch).then_some(epoch);
        }
    }

    /// Resolves every address of `frames` (a snapshot's), whatever was
    /// resolved before.
    pub fn resolve_frames<'a>(
        &mut self,
        target: &mut impl CodeReader,
        frames: impl IntoIterator<Item = &'a FrameSample>,
        mappings: &mut Vec<CodeMapping>,
    ) {
        self.resolve_addresses(
            target,
            frames.into_iter().map(|frame| frame.code_address),
            mappings,
        );
    }

    /// Resolves each of `addresses` (a trace batch's), whatever was
    /// resolved before.
    pub fn resolve_addresses(
        &mut self,
        target: &mut impl CodeReader,
        addresses: impl IntoIterator<Item = u64>,
        mappings: &mut Vec<CodeMapping>,
    ) {
        for address in addresses {
            resolve_one(&mut self.sent, &mut self.objects, target, address, mappings);
        }
    }

    /// The mappings of a tick the sink never got (its queue was full):
    /// they are sent again when next needed, and no stack is taken as
    /// sent before (the next stack of every thread is sent whole).
    pub fn not_delivered(&mut self, mappings: &[CodeMapping]) {
        for (address, _) in mappings {
            self.sent.remove(address);
        }
        self.last.clear();
    }
}

/// Resolves `address` and, if the sink does not know it as that code
/// object, appends the mapping. False if it could not be read.
fn resolve_one(
    sent: &mut AddressMap<u64, CodeId>,
    objects: &mut AddressMap<CodeId, Arc<CodeObject>>,
    target: &mut impl CodeReader,
    address: u64,
    mappings: &mut Vec<CodeMapping>,
) -> bool {
    match target.code_object(address) {
        Some((id, code)) => {
            if sent.get(&address) != Some(&id) {
                sent.insert(address, id);
                let code = objects
                    .entry(id)
                    .or_insert_with(|| Arc::new(code.clone()))
                    .clone();
                mappings.push((address, Some((id, code))));
            }
            true
        }
        // Unreadable now: frames there are recorded as unknown unless the
        // sink already knows the address. A mapping it knows stays: the
        // target's cache keeps its entry through a failed read, and drops
        // or replaces it only with a new code epoch (then the address is
        // resolved, and sent, again).
        None => false,
    }
}

/// The sink's half: one process's addresses as the sampler resolved them.
#[derive(Default)]
pub struct CodeMirror {
    codes: AddressMap<u64, (CodeId, Arc<CodeObject>)>,
    /// The sampler's code epoch of the last tick (or snapshot, trace batch) learnt.
    target_epoch: Option<u64>,
    /// Changes whenever the target's epoch does or a known address is
    /// remapped: the recorder's [`CodeSource::code_epoch`].
    epoch: u64,
}

impl CodeMirror {
    /// Learns `mappings`, resolved under the target's `target_epoch`.
    pub fn learn(&mut self, target_epoch: u64, mappings: impl IntoIterator<Item = CodeMapping>) {
        if self.target_epoch != Some(target_epoch) {
            self.target_epoch = Some(target_epoch);
            self.epoch += 1;
        }
        for (address, code) in mappings {
            let changed = match code {
                Some(code) => {
                    let id = code.0;
                    self.codes
                        .insert(address, code)
                        .is_some_and(|(old, _)| old != id)
                }
                None => self.codes.remove(&address).is_some(),
            };
            if changed {
                self.epoch += 1;
            }
        }
    }
}

impl CodeSource for CodeMirror {
    fn code_object(&mut self, address: u64) -> Option<(CodeId, &CodeObject)> {
        self.codes.get(&address).map(|(id, code)| (*id, &**code))
    }

    fn code_epoch(&self) -> u64 {
        self.epoch
    }
}

/// Both halves on one thread, for the commands that read a target and
/// record what they read one after the other (the live views, `pydeep
/// trace`): the [`Resolver`] reads the code objects first, and the
/// recorder gets them from the [`CodeMirror`], as a recording's sink does.
#[derive(Default)]
pub struct ReadThenRecord {
    resolver: Resolver,
    mirror: CodeMirror,
}

impl ReadThenRecord {
    /// Resolves `addresses`, read from `target` just now, and gives the
    /// mirror that knows them: the recorder's [`CodeSource`].
    pub fn resolve(
        &mut self,
        target: &mut Target,
        addresses: impl IntoIterator<Item = u64>,
    ) -> &mut CodeMirror {
        let mut mappings = Vec::new();
        self.resolver
            .resolve_addresses(target, addresses, &mut mappings);
        self.mirror.learn(target.code_epoch(), mappings);
        &mut self.mirror
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(name: &str) -> Arc<CodeObject> {
        Arc::new(CodeObject::named(name, "f.py"))
    }

    #[test]
    fn a_remapped_address_changes_the_mirrors_epoch_and_a_new_one_does_not() {
        let mut mirror = CodeMirror::default();
        mirror.learn(0, vec![(0x10, Some((1, code("f"))))]);
        let first = mirror.code_epoch();
        mirror.learn(0, vec![(0x20, Some((2, code("g"))))]);
        assert_eq!(mirror.code_epoch(), first);
        assert_eq!(mirror.code_object(0x20).unwrap().1.name, "g");
        mirror.learn(0, vec![(0x10, Some((3, code("h"))))]);
        assert_ne!(mirror.code_epoch(), first);
        assert_eq!(mirror.code_object(0x10).unwrap().0, 3);
        let second = mirror.code_epoch();
        mirror.learn(1, vec![]);
        assert_ne!(mirror.code_epoch(), second);
        mirror.learn(1, vec![(0x20, None)]);
        assert!(mirror.code_object(0x20).is_none());
    }

    /// The names of the code objects of each sample's stack, outermost
    /// first, as a reader of `bytes` sees them.
    fn stacks_read(bytes: Vec<u8>) -> Vec<Vec<String>> {
        use pydeep_format::{Event, Recording};
        let reader = pydeep_format::Reader::new(std::io::Cursor::new(bytes)).unwrap();
        let mut recording = Recording::new(reader).unwrap();
        let mut stacks = Vec::new();
        while let Some(event) = recording.next_event().unwrap() {
            if let Event::Sample(sample) = event {
                let tables = recording.tables();
                let names = tables
                    .stack_frames(sample.stack)
                    .iter()
                    .map(|frame| {
                        let code = tables.frames[frame].code;
                        tables.string(tables.code_objects[&code].name).to_string()
                    })
                    .collect();
                stacks.push(names);
            }
        }
        stacks
    }

    #[test]
    fn the_recorder_reuses_frames_only_of_the_stack_sent_just_before() {
        let mut mirror = CodeMirror::default();
        mirror.learn(
            0,
            vec![
                (0x10, Some((1, code("f")))),
                (0x20, Some((2, code("g")))),
                (0x30, Some((3, code("h")))),
            ],
        );
        let writer = pydeep_format::Writer::new(
            Vec::new(),
            pydeep_format::proto::Header::default(),
            Default::default(),
        )
        .unwrap();
        let mut recorder = crate::recording::recorder::Recorder::new(writer, false, true);
        let version = crate::PythonVersion::default();
        let tick = crate::recording::recorder::Tick {
            clock_ns: 1,
            weight: 1,
        };
        let head = crate::ThreadHead {
            thread_id: 1,
            native_id: 1,
            active: true,
            ..Default::default()
        };
        let mut record = |addresses: &[u64], sequence: u64, unchanged: u32| {
            // Innermost first, as the walker gives them.
            let frames: Vec<FrameSample> = addresses
                .iter()
                .rev()
                .map(|&code_address| FrameSample {
                    code_address,
                    instruction_offset: 0,
                    is_generator: false,
                    is_shim: false,
                })
                .collect();
            let continuity = Continuity {
                sequence,
                kept: unchanged,
                unchanged,
            };
            recorder
                .sample(
                    &mut mirror,
                    (7, &version),
                    tick,
                    crate::recording::recorder::Stack {
                        thread: &head,
                        frames: &frames,
                    },
                    None,
                    continuity,
                )
                .unwrap();
        };
        // Innermost first: g called f.
        record(&[0x10, 0x20], 1, 0);
        // Stack 2 ([f, h]) was sent but never reached this recorder: the
        // claim that stack 3 shares both frames with it must not reuse
        // stack 1's.
        record(&[0x10, 0x30], 3, 2);
        // Stack 4 is stack 3 again: reused whole.
        record(&[0x10, 0x30], 4, 2);
        // Stack 5 keeps the outermost frame of stack 4.
        record(&[0x20, 0x30], 5, 1);
        let bytes = recorder
            .finish(pydeep_format::proto::Footer::default())
            .unwrap();
        assert_eq!(
            stacks_read(bytes),
            vec![
                vec!["g".to_string(), "f".into()],
                vec!["h".into(), "f".into()],
                vec!["h".into(), "f".into()],
                vec!["h".into(), "g".into()],
            ]
        );
    }
}
