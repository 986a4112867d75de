//! Dense integer ids: strings on the API, `u32` indexes inside.

use indexmap::IndexSet;

/// Dense index of an item, user, creator or category.
pub type Idx = u32;
/// Sentinel for "no index".
pub const NONE_IDX: Idx = u32::MAX;

/// Interns external string ids into dense `u32`s in first-seen order, so that replaying
/// the same log always yields the same assignment.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    set: IndexSet<Box<str>, foldhash::fast::FixedState>,
}

impl IdMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            set: IndexSet::with_capacity_and_hasher(n, foldhash::fast::FixedState::default()),
        }
    }

    /// Returns the index of `id`, assigning the next one if it is new.
    pub fn intern(&mut self, id: &str) -> Idx {
        if let Some(i) = self.set.get_index_of(id) {
            return i as Idx;
        }
        let (i, _) = self.set.insert_full(id.into());
        i as Idx
    }

    pub fn get(&self, id: &str) -> Option<Idx> {
        self.set.get_index_of(id).map(|i| i as Idx)
    }

    pub fn name(&self, idx: Idx) -> Option<&str> {
        self.set.get_index(idx as usize).map(|s| &**s)
    }

    /// Forgets the id at `idx` while keeping the index allocated (later indexes keep their
    /// meaning): its name becomes one no API id can equal, since ids never hold control
    /// characters (see `check_id`). The id, if seen again, gets a new index.
    pub fn forget(&mut self, idx: Idx) {
        let tomb: Box<str> = format!("\u{0}{idx}").into();
        // Each tombstone names its own index, so the name is new unless already forgotten.
        let _ = self.set.replace_index(idx as usize, tomb);
    }

    /// Whether `idx` was forgotten (see [`IdMap::forget`]).
    pub fn is_forgotten(&self, idx: Idx) -> bool {
        self.name(idx).is_some_and(|n| n.starts_with('\u{0}'))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_dense_and_stable() {
        let mut m = IdMap::new();
        assert_eq!(m.intern("b"), 0);
        assert_eq!(m.intern("a"), 1);
        assert_eq!(m.intern("b"), 0);
        assert_eq!(m.get("a"), Some(1));
        assert_eq!(m.get("zz"), None);
        assert_eq!(m.name(1), Some("a"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_forgotten_id_keeps_its_index_but_not_its_name() {
        let mut m = IdMap::new();
        m.intern("ana");
        m.intern("bo");
        m.forget(0);
        m.forget(0);
        assert_eq!(m.get("ana"), None);
        assert!(m.is_forgotten(0) && !m.is_forgotten(1));
        assert_eq!(m.get("bo"), Some(1));
        assert!(!m.name(0).unwrap_or("ana").contains("ana"));
        // Seen again, the id starts over at a new index.
        assert_eq!(m.intern("ana"), 2);
        assert_eq!(m.len(), 3);
    }
}
