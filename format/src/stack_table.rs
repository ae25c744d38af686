//! [`StackTable`]: a recording's stack definitions, compactly.
//!
//! Each `StackDef` is a prefix-tree node: a parent stack and the frames it
//! adds. Held as messages, each cost a vector of its own (a heap block
//! even for one frame) besides its map entry; here every node is 32 bytes
//! in an [`IdTable`] and its frames sit in one shared vector (issue #14
//! item 9: 2 million one-frame stacks took ~270 MB as messages, ~80 MB
//! so).

use crate::id_table::IdTable;
use crate::proto;

/// One stack definition as the table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    parent: u64,
    start: usize,
    len: usize,
}

/// A stack definition read from a [`StackTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackNode<'a> {
    /// The stack this one extends (0: none).
    pub parent: u64,
    /// The frame ids it adds, outermost first.
    pub frames: &'a [u64],
}

/// Stack definitions by id (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct StackTable {
    nodes: IdTable<Node>,
    frames: Vec<u64>,
}

impl StackTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defines `def.id` (a later definition of the same id replaces it; the
    /// frames of the old one stay in the shared vector, which the file's
    /// own size bounds).
    pub fn insert(&mut self, def: proto::StackDef) {
        let node = Node {
            parent: def.parent,
            start: self.frames.len(),
            len: def.frames.len(),
        };
        self.frames.extend_from_slice(&def.frames);
        self.nodes.insert(def.id, node);
    }

    /// The definition of stack `id`.
    pub fn get(&self, id: &u64) -> Option<StackNode<'_>> {
        let node = self.nodes.get(id)?;
        Some(StackNode {
            parent: node.parent,
            frames: &self.frames[node.start..node.start + node.len],
        })
    }

    /// True if stack `id` is defined.
    pub fn contains_key(&self, id: &u64) -> bool {
        self.nodes.contains_key(id)
    }

    /// Stacks defined.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if no stack is defined.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every stack id defined.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.keys()
    }
}

impl PartialEq for StackTable {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.keys().all(|id| self.get(&id) == other.get(&id))
    }
}

impl FromIterator<proto::StackDef> for StackTable {
    fn from_iter<I: IntoIterator<Item = proto::StackDef>>(defs: I) -> Self {
        let mut table = StackTable::new();
        for def in defs {
            table.insert(def);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: u64, parent: u64, frames: &[u64]) -> proto::StackDef {
        proto::StackDef {
            id,
            parent,
            frames: frames.to_vec(),
        }
    }

    #[test]
    fn definitions_read_back_and_redefinitions_replace() {
        let mut table: StackTable = [def(1, 0, &[10, 11]), def(2, 1, &[12])]
            .into_iter()
            .collect();
        assert_eq!(
            table.get(&2),
            Some(StackNode {
                parent: 1,
                frames: &[12]
            })
        );
        assert_eq!(table.get(&1).unwrap().frames, &[10, 11]);
        assert_eq!(table.get(&3), None);
        table.insert(def(2, 0, &[]));
        assert_eq!(table.get(&2).unwrap().frames, &[] as &[u64]);
        assert_eq!(table.len(), 2);
        let same: StackTable = [def(2, 0, &[]), def(1, 0, &[10, 11])].into_iter().collect();
        assert_eq!(table, same);
    }
}
