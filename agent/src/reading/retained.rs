//! Retained sizes over an object graph as read: what would be freed with
//! each object (the sum of `sys.getsizeof` of the objects it dominates),
//! like pympler's `asizeof` and memray's leak view, but exact about
//! sharing.
//!
//! The graph is a part of the heap, so references from outside it are
//! inferred from reference counts: an object whose `ob_refcnt` exceeds the
//! references the graph holds to it (or an immortal one) is kept alive by
//! something else and is freed with nothing in the graph. It and the
//! graph's roots hang off a virtual root; each object's retained size sums
//! its subtree in the dominator tree (Cooper, Harvey & Kennedy, "A Simple,
//! Fast Dominance Algorithm", iterative over reverse postorder).
//!
//! Objects whose references were not read (at the depth limit, past the
//! object budget) count only what the graph holds below them: the retained
//! size is then a lower bound.

use std::collections::HashMap;

/// One object of the graph, as the computation needs it.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    /// `id()`.
    pub address: u64,
    /// Its own bytes (`sys.getsizeof`, plus a separate `__dict__`'s), 0 if
    /// unknown.
    pub bytes: u64,
    /// `ob_refcnt`.
    pub refcount: i64,
    /// Immortal (3.12+): never freed.
    pub immortal: bool,
    /// A root of the walk.
    pub root: bool,
}

/// The retained size of each of `objects` (same order), given the graph's
/// references as (from, to) addresses, one per reference held.
pub fn retained_sizes(objects: &[Object], references: &[(u64, u64)]) -> Vec<u64> {
    let n = objects.len();
    let virtual_root = n;
    let index: HashMap<u64, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.address, i))
        .collect();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut held = vec![0i64; n];
    for &(from, to) in references {
        let (Some(&from), Some(&to)) = (index.get(&from), index.get(&to)) else {
            continue;
        };
        held[to] += 1;
        if from != to {
            successors[from].push(to);
            predecessors[to].push(from);
        }
    }
    for (i, object) in objects.iter().enumerate() {
        if object.root || object.immortal || object.refcount > held[i] {
            successors[virtual_root].push(i);
            predecessors[i].push(virtual_root);
        }
    }
    // Reverse postorder from the virtual root (iterative DFS).
    let mut order = Vec::with_capacity(n + 1);
    let mut visited = vec![false; n + 1];
    let mut stack = vec![(virtual_root, 0usize)];
    visited[virtual_root] = true;
    while let Some((node, next)) = stack.pop() {
        if let Some(&child) = successors[node].get(next) {
            stack.push((node, next + 1));
            if !visited[child] {
                visited[child] = true;
                stack.push((child, 0));
            }
        } else {
            order.push(node);
        }
    }
    order.reverse();
    let mut position = vec![usize::MAX; n + 1];
    for (p, &node) in order.iter().enumerate() {
        position[node] = p;
    }
    let mut idom = vec![usize::MAX; n + 1];
    idom[virtual_root] = virtual_root;
    let intersect = |idom: &[usize], mut a: usize, mut b: usize| {
        while a != b {
            while position[a] > position[b] {
                a = idom[a];
            }
            while position[b] > position[a] {
                b = idom[b];
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        for &node in order.iter().skip(1) {
            let mut new = usize::MAX;
            for &p in &predecessors[node] {
                if idom[p] == usize::MAX {
                    continue;
                }
                new = if new == usize::MAX {
                    p
                } else {
                    intersect(&idom, p, new)
                };
            }
            if new != usize::MAX && idom[node] != new {
                idom[node] = new;
                changed = true;
            }
        }
    }
    let mut retained: Vec<u64> = objects.iter().map(|o| o.bytes).collect();
    retained.push(0);
    for &node in order.iter().rev() {
        if node == virtual_root || idom[node] == usize::MAX {
            continue;
        }
        let parent = idom[node];
        retained[parent] = retained[parent].saturating_add(retained[node]);
    }
    retained.truncate(n);
    retained
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(address: u64, bytes: u64, refcount: i64, root: bool) -> Object {
        Object {
            address,
            bytes,
            refcount,
            immortal: false,
            root,
        }
    }

    #[test]
    fn a_root_retains_what_only_it_reaches() {
        // root -> a -> b; root -> c; c is also held from outside.
        let objects = [
            object(1, 10, 1, true),
            object(2, 20, 1, false),
            object(3, 30, 1, false),
            object(4, 40, 2, false),
        ];
        let references = [(1, 2), (2, 3), (1, 4)];
        assert_eq!(retained_sizes(&objects, &references), vec![60, 50, 30, 40]);
    }

    #[test]
    fn an_object_shared_inside_the_graph_belongs_to_the_common_dominator() {
        // root -> a, root -> b, a -> s, b -> s: s is retained by root only.
        let objects = [
            object(1, 1, 1, true),
            object(2, 10, 1, false),
            object(3, 100, 1, false),
            object(4, 1000, 2, false),
        ];
        let references = [(1, 2), (1, 3), (2, 4), (3, 4)];
        assert_eq!(
            retained_sizes(&objects, &references),
            vec![1111, 10, 100, 1000]
        );
    }

    #[test]
    fn cycles_and_garbage_references_do_not_loop_or_panic() {
        let objects = [object(1, 5, 1, true), object(2, 7, 1, false)];
        let references = [(1, 2), (2, 1), (2, 2), (9, 1), (1, 9)];
        assert_eq!(retained_sizes(&objects, &references), vec![12, 7]);
        assert!(retained_sizes(&[], &[]).is_empty());
    }
}
