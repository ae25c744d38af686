//! Code objects handed from the sampler to the recording sink.
//!
//! Only the sampler thread reads the target. It resolves the code object of
//! every frame it passes on ([`Resolver`]: the [`CodeId`] the [`Target`]
//! gives each distinct object, read once and cached there), and sends with
//! each batch the address → code mappings the sink has not been told yet.
//! The sink keeps them per process in a [`CodeMirror`], which serves the
//! recorder as its [`CodeSource`]: the recorder never reads the process,
//! so interning, line tables and source files can run on the sink's own
//! thread, behind the sampler.
//!
//! Why mappings and not ids in every frame: between two samples most of a
//! thread's stack is the same callers, and looking each frame up costs a
//! hash lookup (1,000 per sample at depth 1,000). The resolver, like the
//! recorder, only looks at the frames below the part of the stack that
//! did not change while the target's code epoch stayed the same; the
//! sink's mirror then answers for every address the batch names.

use std::collections::HashMap;
use std::sync::Arc;

use crate::recorder::CodeSource;
use crate::{CodeId, CodeObject, FrameSample, Target, ThreadSample};

/// What an address now names, as the sink learns it: a code object (new to
/// the sink, or seen before under another address), or nothing (forget
/// it: frames there are recorded as unknown).
pub type CodeMapping = (u64, Option<(CodeId, Arc<CodeObject>)>);

/// The sampler's half: which mappings the sink has been sent, and each
/// thread's last stack (to skip the frames that did not change).
#[derive(Default)]
pub struct Resolver {
    /// What the sink knows each address to be.
    sent: HashMap<u64, CodeId>,
    /// Code objects the sink holds, shared with the mappings sent.
    objects: HashMap<CodeId, Arc<CodeObject>>,
    /// Each thread's last stack (innermost first) and the code epoch it
    /// was resolved under; `None`: resolve it all next time.
    last: HashMap<u64, (Vec<FrameSample>, Option<u64>)>,
}

impl Resolver {
    /// Resolves the code objects of `threads` (read from `target` just
    /// now) and appends to `mappings` what the sink must learn first.
    pub fn resolve(
        &mut self,
        target: &mut Target,
        threads: &[ThreadSample],
        mappings: &mut Vec<CodeMapping>,
    ) {
        for thread in threads {
            let epoch = target.code_epoch();
            let (last, resolved_under) = self.last.entry(thread.thread_id).or_default();
            let shared = if *resolved_under == Some(epoch) {
                last.iter()
                    .rev()
                    .zip(thread.frames.iter().rev())
                    .take_while(|(old, new)| old == new)
                    .count()
            } else {
                0
            };
            let mut complete = true;
            for frame in thread.frames.iter().rev().skip(shared) {
                complete &= resolve_one(
                    &mut self.sent,
                    &mut self.objects,
                    target,
                    frame.code_address,
                    mappings,
                );
            }
            let (last, resolved_under) = self.last.get_mut(&thread.thread_id).expect("entered");
            last.clear();
            last.extend_from_slice(&thread.frames);
            // An unreadable code object is tried again next time, and a
            // code object replaced meanwhile may have changed an address
            // resolved earlier in this stack.
            *resolved_under = (complete && target.code_epoch() == epoch).then_some(epoch);
        }
    }

    /// Resolves every address of `frames` (a snapshot's), whatever was
    /// resolved before.
    pub fn resolve_frames<'a>(
        &mut self,
        target: &mut Target,
        frames: impl IntoIterator<Item = &'a FrameSample>,
        mappings: &mut Vec<CodeMapping>,
    ) {
        for frame in frames {
            resolve_one(
                &mut self.sent,
                &mut self.objects,
                target,
                frame.code_address,
                mappings,
            );
        }
    }

    /// The mappings of a batch the sink never got (its queue was full):
    /// they are sent again when next needed, and no stack is taken as
    /// resolved before.
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
    sent: &mut HashMap<u64, CodeId>,
    objects: &mut HashMap<CodeId, Arc<CodeObject>>,
    target: &mut Target,
    address: u64,
    mappings: &mut Vec<CodeMapping>,
) -> bool {
    match target.code_object(address) {
        Ok((id, code)) => {
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
        Err(_) => false,
    }
}

/// The sink's half: one process's addresses as the sampler resolved them.
#[derive(Default)]
pub struct CodeMirror {
    codes: HashMap<u64, (CodeId, Arc<CodeObject>)>,
    /// The sampler's code epoch of the last batch.
    target_epoch: Option<u64>,
    /// Changes whenever the target's epoch does or a known address is
    /// remapped: the recorder's [`CodeSource::code_epoch`].
    epoch: u64,
}

impl CodeMirror {
    /// Learns `mappings`, resolved under the target's `target_epoch`.
    pub fn learn(&mut self, target_epoch: u64, mappings: Vec<CodeMapping>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(name: &str) -> Arc<CodeObject> {
        Arc::new(CodeObject {
            address: 0,
            filename: "f.py".into(),
            name: name.into(),
            qualname: name.into(),
            first_line: 1,
            bytecode: Vec::new(),
            bytecode_deoptimized: Vec::new(),
            line_table: Vec::new(),
            line_table_kind: crate::LineTableKind::Locations,
            varnames: Vec::new(),
            cellvars: Vec::new(),
            freevars: Vec::new(),
            names: Vec::new(),
            consts: Vec::new(),
            const_code_addresses: Vec::new(),
            argcount: 0,
            posonlyargcount: 0,
            kwonlyargcount: 0,
            flags: 0,
            stacksize: 0,
            localspluskinds: Vec::new(),
            frame_size: None,
        })
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
}
