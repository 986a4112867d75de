//! Memory accounting: estimated heap bytes of the state by part (`cascade bench memory`).

use crate::records::UserState;
use crate::state::Inner;
use cascade_core::{IdMap, Idx};
use serde_json::{Map, Value};

/// Heap bytes of a vector's buffer.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Heap bytes of an id map: the strings, their boxes and the hash index (an estimate of
/// `indexmap`'s layout: a bucket of hash + key, and one index slot per entry).
fn idmap_bytes(m: &IdMap) -> usize {
    let strings: usize = (0..m.len() as Idx)
        .map(|i| m.name(i).map_or(0, str::len))
        .sum();
    strings + m.len() * (16 + 8 + 8)
}

fn json_bytes(a: &Option<Box<Map<String, Value>>>) -> usize {
    // Parsed JSON takes about twice its text in maps, strings and values.
    a.as_ref()
        .map_or(0, |m| 2 * serde_json::to_string(m).map_or(0, |s| s.len()))
}

impl UserState {
    /// Heap bytes this user's state holds (bounded by the caps: history, seen, shown,
    /// follows).
    pub fn heap_bytes(&self) -> usize {
        vec_bytes(&self.follows)
            + vec_bytes(&self.history)
            + vec_bytes(&self.seen)
            + vec_bytes(&self.engaged)
            + vec_bytes(&self.hidden_items)
            + vec_bytes(&self.hidden_creators)
            + vec_bytes(&self.shown)
            + vec_bytes(&self.segments)
            + json_bytes(&self.attributes)
    }
}

impl Inner {
    /// Estimated heap bytes by part: what `cascade bench memory` reports and the budget in
    /// `docs/benchmarks.md` is stated in.
    pub fn memory(&self) -> Vec<(&'static str, usize)> {
        let recs: usize = self
            .item_recs
            .iter()
            .flatten()
            .map(|r| {
                r.title.len() + 4 * (r.categories.len() + r.tags.len()) + json_bytes(&r.attributes)
            })
            .sum();
        let per_item = vec_bytes(&self.item_recs)
            + vec_bytes(&self.item_hot)
            + vec_bytes(&self.popularity)
            + vec_bytes(&self.popularity_short)
            + vec_bytes(&self.engagements)
            + vec_bytes(&self.item_stats)
            + vec_bytes(&self.impressions);
        let creators: usize = self.creator_items.iter().map(vec_bytes).sum::<usize>()
            + vec_bytes(&self.creator_items);
        let users: usize = vec_bytes(&self.user_states)
            + self
                .user_states
                .iter()
                .map(UserState::heap_bytes)
                .sum::<usize>();
        let segments: usize = self
            .segment_popularity
            .iter()
            .map(|m| m.capacity() * (4 + 8 + 1))
            .sum();
        vec![
            ("item ids", idmap_bytes(&self.items)),
            ("item records (title, labels, attributes)", recs),
            ("item columns (hot fields, popularity, counters)", per_item),
            ("creators' item lists", creators),
            (
                "labels (categories, creators, tags, segments)",
                idmap_bytes(&self.categories)
                    + idmap_bytes(&self.creators)
                    + idmap_bytes(&self.tags)
                    + idmap_bytes(&self.segments),
            ),
            ("user ids", idmap_bytes(&self.users)),
            (
                "user states (history, seen, engaged, hidden, shown, follows)",
                users,
            ),
            ("engagement log (point in time)", vec_bytes(&self.time_log)),
            ("segment popularity", segments),
            ("fold log", vec_bytes(&self.fold_pairs)),
        ]
    }
}
