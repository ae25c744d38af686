//! Interning of call stacks as a prefix tree.
//!
//! A stack is stored as `StackDef { parent, frames }`: the frames of the
//! parent stack followed by its own. Profiles repeat long common prefixes
//! (`main` → event loop → dispatcher → ...), so a new stack that shares a
//! prefix with one already written only spells out the frames after it.
//!
//! Lookup is by a rolling hash over the frames, outermost first: the hash of
//! every prefix of a stack comes out of one pass, so finding the longest
//! interned prefix costs one hash-map probe per frame, and only when a stack is
//! new. Every hash hit is verified frame by frame, so a collision can never
//! return a wrong stack.

use crate::hash::FastMap;
use crate::proto::StackDef;

/// A shared prefix shorter than this is not worth an intermediate StackDef
/// (about 9 bytes) to the stacks after it.
const MIN_SPLIT: usize = 4;

struct Node {
    parent: u64,
    /// Number of frames of the parent chain.
    start: usize,
    frames: Vec<u64>,
}

/// Interns stacks and produces the StackDefs to write.
pub(crate) struct StackInterner {
    /// Node of stack id `i` at index `i - 1`.
    nodes: Vec<Node>,
    /// (length, hash of all frames) → stacks with that key.
    exact: FastMap<(usize, u64), Vec<u64>>,
    /// (length, hash of the first `length` frames) → a stack having that prefix.
    prefixes: FastMap<(usize, u64), u64>,
    /// Hashes of every prefix of the stack interned last (`last`), kept for
    /// the next: consecutive stacks of a sampled thread share most of their
    /// frames, and the hash chain is serial (a multiply per frame, ~2 µs for
    /// a stack of 1,000), so only the frames after the shared prefix are
    /// hashed again.
    hashes: Vec<u64>,
    /// The frames of the stack interned last.
    last: Vec<u64>,
    /// Whether new stacks may reuse the prefix of an interned one.
    pub prefix_sharing: bool,
}

fn mix(hash: u64, frame: u64) -> u64 {
    let x = (hash.rotate_left(26) ^ frame).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// How many leading frames `a` and `b` share (compared 16 at a time: a
/// slice comparison the compiler turns into a memory compare).
fn shared_prefix(a: &[u64], b: &[u64]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n && a[i..i + 16] == b[i..i + 16] {
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

impl StackInterner {
    pub fn new() -> Self {
        StackInterner {
            nodes: Vec::new(),
            exact: FastMap::default(),
            prefixes: FastMap::default(),
            hashes: Vec::new(),
            last: Vec::new(),
            prefix_sharing: true,
        }
    }

    /// Number of stacks interned so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn total_len(&self, id: u64) -> usize {
        let node = self.node(id);
        node.start + node.frames.len()
    }

    /// True if the first `frames.len()` frames of stack `id` are `frames`.
    fn has_prefix(&self, mut id: u64, frames: &[u64]) -> bool {
        if self.total_len(id) < frames.len() {
            return false;
        }
        while id != 0 {
            let node = self.node(id);
            if node.start < frames.len() {
                let end = (node.start + node.frames.len()).min(frames.len());
                if node.frames[..end - node.start] != frames[node.start..end] {
                    return false;
                }
            }
            id = node.parent;
        }
        true
    }

    fn find_exact(&self, len: usize, hash: u64, frames: &[u64]) -> Option<u64> {
        self.exact
            .get(&(len, hash))?
            .iter()
            .copied()
            .find(|&id| self.total_len(id) == len && self.has_prefix(id, frames))
    }

    /// Returns the id of `frames` (outermost first), appending the StackDefs a
    /// new stack needs to `defs`. The empty stack is id 0.
    pub fn intern(&mut self, frames: &[u64], defs: &mut Vec<StackDef>) -> u64 {
        let n = frames.len();
        if n == 0 {
            return 0;
        }
        let mut hashes = std::mem::take(&mut self.hashes);
        // hashes[i] is the hash of the first i frames of `last`; those of
        // the prefix `frames` shares with it stand.
        let shared = if hashes.is_empty() {
            0
        } else {
            shared_prefix(frames, &self.last)
        };
        hashes.truncate(shared + 1);
        if hashes.is_empty() {
            hashes.push(0x5354_4143_4b53_2121); // "STACKS!!"
        }
        for &frame in &frames[shared..] {
            let last = *hashes.last().unwrap_or(&0);
            hashes.push(mix(last, frame));
        }
        let id = match self.find_exact(n, hashes[n], frames) {
            Some(id) => id,
            None => self.insert(frames, &hashes, defs),
        };
        self.hashes = hashes;
        self.last.clear();
        self.last.extend_from_slice(frames);
        id
    }

    fn insert(&mut self, frames: &[u64], hashes: &[u64], defs: &mut Vec<StackDef>) -> u64 {
        let n = frames.len();
        let mut base = 0;
        let mut base_len = 0;
        if self.prefix_sharing {
            // The longest proper prefix that is itself a stack.
            for j in (1..n).rev() {
                if let Some(id) = self.find_exact(j, hashes[j], &frames[..j]) {
                    base = id;
                    base_len = j;
                    break;
                }
            }
            // The longest prefix shared with any stack; worth a node of its own
            // when long enough, so later stacks can hang off it too.
            for k in (base_len + MIN_SPLIT..n).rev() {
                match self.prefixes.get(&(k, hashes[k])) {
                    Some(&other) if self.has_prefix(other, &frames[..k]) => {
                        base = self.define(base, base_len, &frames[..k], hashes, defs);
                        base_len = k;
                        break;
                    }
                    _ => {}
                }
            }
        }
        self.define(base, base_len, frames, hashes, defs)
    }

    /// Defines the stack `frames` as `parent` (which holds `frames[..start]`)
    /// plus `frames[start..]`.
    fn define(
        &mut self,
        parent: u64,
        start: usize,
        frames: &[u64],
        hashes: &[u64],
        defs: &mut Vec<StackDef>,
    ) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let own = frames[start..].to_vec();
        defs.push(StackDef {
            id,
            parent,
            frames: own.clone(),
        });
        self.nodes.push(Node {
            parent,
            start,
            frames: own,
        });
        let n = frames.len();
        self.exact.entry((n, hashes[n])).or_default().push(id);
        for (len, &hash) in hashes.iter().enumerate().take(n + 1).skip(start + 1) {
            self.prefixes.entry((len, hash)).or_insert(id);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(defs: &[StackDef], id: u64) -> Vec<u64> {
        let mut segments = Vec::new();
        let mut id = id;
        while id != 0 {
            let def = defs.iter().find(|d| d.id == id).expect("defined");
            segments.push(def.frames.clone());
            id = def.parent;
        }
        segments.into_iter().rev().flatten().collect()
    }

    #[test]
    fn stacks_sharing_prefixes_with_the_last_one_intern_as_from_scratch() {
        // Each stack against a fresh interner's answer for the same
        // sequence: reusing the last stack's prefix hashes must not change
        // any id.
        let deep: Vec<u64> = (1..=300).collect();
        let mut other = deep.clone();
        other[299] = 999;
        let mut shorter = deep.clone();
        shorter.truncate(150);
        let mut longer = deep.clone();
        longer.extend([7, 8, 9]);
        let sequence = [
            &deep, &other, &deep, &shorter, &longer, &deep, &other, &shorter,
        ];
        let mut reusing = StackInterner::new();
        let mut defs = Vec::new();
        let ids: Vec<u64> = sequence
            .iter()
            .map(|s| reusing.intern(s, &mut defs))
            .collect();
        for (i, stack) in sequence.iter().enumerate() {
            assert_eq!(expand(&defs, ids[i]), **stack, "stack {i}");
            // A fresh interner that saw the same stacks before gives the
            // same answer about which earlier stack this one equals.
            let first = sequence.iter().position(|s| s == stack).unwrap();
            assert_eq!(ids[i], ids[first], "stack {i} equals stack {first}");
        }
        let distinct: std::collections::HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
        assert_eq!(shared_prefix(&deep, &other), 299);
        assert_eq!(shared_prefix(&deep, &shorter), 150);
        assert_eq!(shared_prefix(&[], &deep), 0);
    }

    #[test]
    fn the_same_stack_gets_the_same_id_and_one_definition() {
        let mut interner = StackInterner::new();
        let mut defs = Vec::new();
        let a = interner.intern(&[1, 2, 3], &mut defs);
        let b = interner.intern(&[1, 2, 3], &mut defs);
        assert_eq!(a, b);
        assert_eq!(defs.len(), 1);
        assert_eq!(interner.intern(&[], &mut defs), 0);
    }

    #[test]
    fn a_stack_extending_an_interned_one_lists_only_the_new_frames() {
        let mut interner = StackInterner::new();
        let mut defs = Vec::new();
        let a = interner.intern(&[1, 2, 3], &mut defs);
        let b = interner.intern(&[1, 2, 3, 4, 5], &mut defs);
        assert_eq!(defs[1].parent, a);
        assert_eq!(defs[1].frames, vec![4, 5]);
        assert_eq!(expand(&defs, b), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn siblings_with_a_long_common_prefix_share_an_intermediate_node() {
        let mut interner = StackInterner::new();
        let mut defs = Vec::new();
        let prefix: Vec<u64> = (1..=10).collect();
        let mut first = prefix.clone();
        first.push(100);
        let mut second = prefix.clone();
        second.push(200);
        let a = interner.intern(&first, &mut defs);
        let b = interner.intern(&second, &mut defs);
        // first: flat; then the shared prefix node; then second = prefix + [200].
        assert_eq!(defs.len(), 3);
        assert_eq!(defs[2].frames, vec![200]);
        assert_eq!(expand(&defs, a), first);
        assert_eq!(expand(&defs, b), second);
        // A third sibling reuses the intermediate node directly.
        let mut third = prefix.clone();
        third.push(300);
        let c = interner.intern(&third, &mut defs);
        assert_eq!(defs.len(), 4);
        assert_eq!(defs[3].parent, defs[1].id);
        assert_eq!(expand(&defs, c), third);
    }

    #[test]
    fn without_prefix_sharing_every_stack_is_flat() {
        let mut interner = StackInterner::new();
        interner.prefix_sharing = false;
        let mut defs = Vec::new();
        interner.intern(&[1, 2, 3, 4, 5, 6], &mut defs);
        interner.intern(&[1, 2, 3, 4, 5, 6, 7], &mut defs);
        assert!(defs.iter().all(|d| d.parent == 0));
    }
}
