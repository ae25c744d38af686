//! [`IdTable`]: definitions by id, stored densely where the ids are dense.
//!
//! A writer numbers its frames and stacks 1, 2, 3, … so the reader's
//! tables can be plain vectors indexed by id: a hash map of 2 million
//! frame definitions cost ~170 MB (buckets at a load under 7/8, rounded up
//! to a power of two), the same frames in a vector 64 MB (issue #14 item
//! 9). Ids a file makes up (sparse, huge, hostile) go to a hash map beside
//! the vector, so no id makes the vector longer than twice the entries it
//! holds plus [`DENSE_SLACK`].

use std::collections::HashMap;

/// Ids up to this far past twice the entries held are stored densely.
pub const DENSE_SLACK: u64 = 1024;

/// Definitions by id: a vector for ids near the ones held, a hash map for
/// the rest. Lookups, iteration and equality behave like a
/// `HashMap<u64, T>` (iteration order aside).
#[derive(Debug, Clone)]
pub struct IdTable<T> {
    dense: Vec<Option<T>>,
    dense_len: usize,
    sparse: HashMap<u64, T>,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            dense: Vec::new(),
            dense_len: 0,
            sparse: HashMap::new(),
        }
    }
}

impl<T> IdTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The definition with id `id`.
    pub fn get(&self, id: &u64) -> Option<&T> {
        match usize::try_from(*id).ok().and_then(|i| self.dense.get(i)) {
            Some(Some(value)) => Some(value),
            // Placed in the map before the vector reached it.
            _ => self.sparse.get(id),
        }
    }

    /// True if `id` is defined.
    pub fn contains_key(&self, id: &u64) -> bool {
        self.get(id).is_some()
    }

    /// Defines `id` as `value`; returns the definition it replaces.
    pub fn insert(&mut self, id: u64, value: T) -> Option<T> {
        if let Some(old) = self.sparse.get_mut(&id) {
            return Some(std::mem::replace(old, value));
        }
        if let Some(slot) = usize::try_from(id).ok().and_then(|i| self.dense.get_mut(i)) {
            let old = slot.replace(value);
            if old.is_none() {
                self.dense_len += 1;
            }
            return old;
        }
        let limit = (self.len() as u64)
            .saturating_mul(2)
            .saturating_add(DENSE_SLACK);
        if id <= limit {
            let index = id as usize;
            self.dense.resize_with(index + 1, || None);
            self.dense[index] = Some(value);
            self.dense_len += 1;
            return None;
        }
        self.sparse.insert(id, value)
    }

    /// Definitions held.
    pub fn len(&self) -> usize {
        self.dense_len + self.sparse.len()
    }

    /// True if nothing is defined.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (id, definition), dense ids first in order, then the others.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> + '_ {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| slot.as_ref().map(|value| (id as u64, value)));
        dense.chain(self.sparse.iter().map(|(id, value)| (*id, value)))
    }

    /// Every id defined.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// Every definition.
    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter().map(|(_, value)| value)
    }
}

impl<T> std::ops::Index<&u64> for IdTable<T> {
    type Output = T;

    /// The definition of `id`; panics if there is none, like `HashMap`.
    fn index(&self, id: &u64) -> &T {
        self.get(id)
            .unwrap_or_else(|| panic!("no definition with id {id}"))
    }
}

impl<T: PartialEq> PartialEq for IdTable<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(id, value)| other.get(&id) == Some(value))
    }
}

impl<T: PartialEq> PartialEq<HashMap<u64, T>> for IdTable<T> {
    fn eq(&self, other: &HashMap<u64, T>) -> bool {
        self.len() == other.len() && self.iter().all(|(id, value)| other.get(&id) == Some(value))
    }
}

impl<T> FromIterator<(u64, T)> for IdTable<T> {
    fn from_iter<I: IntoIterator<Item = (u64, T)>>(entries: I) -> Self {
        let mut table = IdTable::new();
        for (id, value) in entries {
            table.insert(id, value);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_ids_live_in_the_vector_and_read_back() {
        let table: IdTable<u32> = (1..=5000u64).map(|id| (id, id as u32 * 2)).collect();
        assert_eq!(table.len(), 5000);
        assert!(table.sparse.is_empty());
        assert_eq!(table.get(&4321), Some(&8642));
        assert_eq!(table[&1], 2);
        assert_eq!(table.get(&0), None);
        assert_eq!(table.get(&5001), None);
        assert_eq!(table.keys().count(), 5000);
    }

    #[test]
    fn hostile_ids_cannot_grow_the_vector_past_twice_the_entries() {
        let mut table = IdTable::new();
        // Each id just inside the dense limit of the one before: the
        // vector would double per entry if the limit followed its length.
        let mut id = 0u64;
        for _ in 0..40 {
            id = id * 2 + DENSE_SLACK;
            table.insert(id, ());
        }
        table.insert(u64::MAX, ());
        assert_eq!(table.len(), 41);
        assert!(table.dense.len() as u64 <= 2 * 41 + DENSE_SLACK + 1);
        assert!(table.contains_key(&u64::MAX));
        assert!(table.contains_key(&id));
    }

    #[test]
    fn an_id_kept_in_the_map_is_found_after_the_vector_grows_past_it() {
        let mut table = IdTable::new();
        table.insert(5000, "early");
        for id in (1..=6000u64).filter(|id| *id != 5000) {
            table.insert(id, "dense");
        }
        assert!(table.dense.len() > 5000);
        assert_eq!(table.get(&5000), Some(&"early"));
        assert_eq!(table.insert(5000, "again"), Some("early"));
        assert_eq!(table.get(&5000), Some(&"again"));
        assert_eq!(table.len(), 6000);
    }

    #[test]
    fn redefinitions_replace_and_equality_ignores_where_ids_live() {
        let mut table = IdTable::new();
        assert_eq!(table.insert(3, "a"), None);
        assert_eq!(table.insert(3, "b"), Some("a"));
        table.insert(1 << 40, "far");
        assert_eq!(table.len(), 2);
        let map: HashMap<u64, &str> = [(3, "b"), (1 << 40, "far")].into_iter().collect();
        assert!(table == map);
        let same: IdTable<&str> = [(1 << 40, "far"), (3, "b")].into_iter().collect();
        assert_eq!(table, same);
    }
}
