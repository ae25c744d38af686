//! The report's flame graph data: the profile's stacks merged into one tree,
//! "all" at the root, one node per thread under it, then the frames.
//!
//! The tree is flat arrays (node `i` has `parent[i]`, `name[i]`,
//! `value[i]`; node 0 is the root and parents precede their children), so
//! the page builds it in one pass. Names are the short labels (frames) and
//! titles the full ones (tooltips, search): [`crate::labels`].

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::aggregate::Profile;
use crate::labels::Labels;

/// The tree of `profile` as JSON: `names`, `titles` (indexed by name),
/// `parent`, `name`, `value` (ticks) per node, and `threads`: the node of
/// each thread.
pub fn tree_json(profile: &Profile) -> Value {
    let labels = Labels::new(profile);
    let symbols = profile.symbols.all().len() as u32;
    let mut names: Vec<&str> = (0..symbols).map(|id| labels.short(id)).collect();
    let mut titles: Vec<&str> = (0..symbols).map(|id| labels.full(id)).collect();
    let descriptions: Vec<String> = profile.threads.values().map(|t| t.describe()).collect();
    let mut thread_name: HashMap<u32, u32> = HashMap::new();
    for (thread, description) in profile.threads.keys().zip(&descriptions) {
        thread_name.insert(*thread, names.len() as u32);
        names.push(description);
        titles.push(description);
    }
    let root_name = names.len() as u32;
    names.push("all");
    titles.push("all");

    let mut tree = Tree {
        parent: vec![0],
        name: vec![root_name],
        value: vec![0],
        children: HashMap::new(),
    };
    let mut thread_nodes: Vec<Value> = Vec::new();
    for stack in &profile.stacks {
        tree.value[0] += stack.count;
        let label = thread_name[&stack.thread];
        let mut node = tree.child(0, label);
        tree.value[node as usize] += stack.count;
        for &frame in &stack.frames {
            node = tree.child(node, frame);
            tree.value[node as usize] += stack.count;
        }
    }
    for (thread, info) in &profile.threads {
        let label = thread_name[thread];
        let node = tree.children.get(&(0, label));
        thread_nodes.push(json!({
            "thread": thread,
            "describe": info.describe(),
            "node": node,
            "ticks": info.samples,
        }));
    }
    json!({
        "names": names,
        "titles": titles,
        "parent": tree.parent,
        "name": tree.name,
        "value": tree.value,
        "threads": thread_nodes,
    })
}

struct Tree {
    parent: Vec<u32>,
    name: Vec<u32>,
    value: Vec<u64>,
    children: HashMap<(u32, u32), u32>,
}

impl Tree {
    /// The child of `node` named `label`, added if new.
    fn child(&mut self, node: u32, label: u32) -> u32 {
        if let Some(&child) = self.children.get(&(node, label)) {
            return child;
        }
        let child = self.name.len() as u32;
        self.parent.push(node);
        self.name.push(label);
        self.value.push(0);
        self.children.insert((node, label), child);
        child
    }
}
