//! Keeps the ANN index current between trainings: items added (or first engaged with) after
//! the embeddings were trained get a vector and are inserted in place, deleted ones removed.
//!
//! A new item's vector is the ALS fold-in from the users who engaged with it (the same
//! normal equations training solves, against the fixed user vectors); an item nobody has
//! engaged with yet borrows the mean vector of its creator's trained items. Only the
//! engagements logged since the last step are read (`Inner::fold_pairs`), so a step costs
//! the new events and the folded items, not the catalog. Folded items that get deleted leave
//! the index; trained items that get deleted stay in it until the next training (the safety
//! filter drops them from every response).

use crate::{Embeddings, Models};
use cascade_core::Idx;
use cascade_features::State;
use cascade_features::state::ItemHot;
use std::collections::HashMap;
use std::sync::Arc;

/// Most engaged users kept per folded item (the solve costs one dot product per user).
const MAX_ENGAGERS: usize = 512;
/// Items of a creator averaged into a cold item's vector.
const CREATOR_SAMPLE: usize = 32;
/// Not-yet-live items remembered for a later upsert.
const MAX_PENDING: usize = 100_000;

/// What one [`ItemFolder::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FoldStats {
    /// Items inserted or re-placed.
    pub upserted: usize,
    pub removed: usize,
    /// The index ran out of spare capacity; the next retrain rebuilds it larger.
    pub full: bool,
    /// Inserts the index refused for another reason (the caller logs and counts them).
    pub failed: usize,
}

/// The data loop's cursor over new items and engagements; one per engine.
#[derive(Debug, Default)]
pub struct ItemFolder {
    /// The index being maintained (by address): a new one restarts the cursor.
    ann: usize,
    epoch: u64,
    cursor: usize,
    next_new: Idx,
    engagers: HashMap<Idx, Vec<(Idx, f32)>>,
    pending: Vec<Idx>,
    /// Items this folder placed in the index, checked every step for deletion.
    folded: std::collections::HashSet<Idx>,
    /// A full index is reported once, not every step until the next retrain.
    full_reported: bool,
}

struct Touched {
    item: Idx,
    live: bool,
    /// New, or new engagements: (re)compute its vector. Otherwise only its liveness is checked.
    changed: bool,
    creator_items: Vec<Idx>,
}

impl ItemFolder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in what arrived since the last step.
    pub fn step(&mut self, state: &State, models: &Models) -> FoldStats {
        let (Some(emb), Some(ann)) = (&models.embeddings, &models.ann) else {
            return FoldStats::default();
        };
        let trained = emb.n_items() as Idx;
        let touched = {
            let g = state.read();
            let ptr = Arc::as_ptr(ann) as usize;
            if ptr != self.ann || g.fold_epoch != self.epoch {
                *self = Self {
                    ann: ptr,
                    epoch: g.fold_epoch,
                    next_new: trained,
                    ..Self::default()
                };
            }
            let mut items = std::mem::take(&mut self.pending);
            let mut changed: Vec<Idx> = Vec::new();
            for &(item, user) in g.fold_pairs.get(self.cursor..).unwrap_or_default() {
                if item < trained {
                    continue;
                }
                let e = self.engagers.entry(item).or_default();
                if e.len() < MAX_ENGAGERS && !e.iter().any(|&(u, _)| u == user) {
                    e.push((user, 1.0));
                    changed.push(item);
                }
            }
            self.cursor = g.fold_pairs.len();
            let n = g.items.len() as Idx;
            changed.extend(self.next_new..n);
            self.next_new = self.next_new.max(n);
            changed.sort_unstable();
            changed.dedup();
            items.extend(&changed);
            items.extend(self.folded.iter().copied());
            items.sort_unstable();
            items.dedup();
            items
                .into_iter()
                .map(|item| {
                    let hot = g.item_hot.get(item as usize).copied().unwrap_or_default();
                    let live = hot.flags & ItemHot::EXISTS != 0 && hot.flags & ItemHot::HIDDEN == 0;
                    let creator_items = g
                        .creator_items
                        .get(hot.creator as usize)
                        .filter(|_| live)
                        .map(|c| {
                            c.iter()
                                .copied()
                                .filter(|&i| i < trained)
                                .take(CREATOR_SAMPLE)
                                .collect()
                        })
                        .unwrap_or_default();
                    Touched {
                        item,
                        live,
                        changed: changed.binary_search(&item).is_ok(),
                        creator_items,
                    }
                })
                .collect::<Vec<_>>()
        };
        // Solves and inserts run without the state lock.
        let mut stats = FoldStats::default();
        for t in touched {
            if !t.live {
                self.folded.remove(&t.item);
                if ann.contains(t.item) && ann.remove(t.item).is_ok() {
                    stats.removed += 1;
                }
                if self.pending.len() < MAX_PENDING {
                    self.pending.push(t.item);
                }
                continue;
            }
            if !t.changed && ann.contains(t.item) {
                continue;
            }
            let v = self
                .engagers
                .get(&t.item)
                .and_then(|e| emb.fold_in_item(e))
                .or_else(|| mean_of(emb, &t.creator_items));
            let Some(v) = v else { continue };
            match ann.upsert(t.item, &v) {
                Ok(()) => {
                    stats.upserted += 1;
                    self.folded.insert(t.item);
                }
                Err(crate::AnnError::Full(_)) => {
                    stats.full = !self.full_reported;
                    self.full_reported = true;
                    break;
                }
                Err(_) => stats.failed += 1,
            }
        }
        stats
    }
}

fn mean_of(emb: &Embeddings, items: &[Idx]) -> Option<Vec<f32>> {
    let mut m = vec![0f32; emb.dim];
    let mut n = 0usize;
    for &i in items {
        if let Some(v) = emb.item(i) {
            m.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            n += 1;
        }
    }
    (n > 0).then(|| {
        m.iter_mut().for_each(|x| *x /= n as f32);
        m
    })
}
