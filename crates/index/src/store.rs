//! The swap point between the data loop (writer) and requests (readers).

use crate::{CoVisitation, PopularLists};
use arc_swap::ArcSwap;
use cascade_core::Millis;
use parking_lot::Mutex;
use std::sync::Arc;

/// One consistent set of derived artifacts.
#[derive(Debug, Default)]
pub struct Models {
    /// Named in every response's `model_version`.
    pub version: String,
    pub popular: Arc<PopularLists>,
    pub covis: Arc<CoVisitation>,
    /// Learned user and item vectors, when trained.
    pub embeddings: Option<Arc<crate::Embeddings>>,
    /// HNSW index over the item vectors; items added since training are inserted in place.
    pub ann: Option<Arc<crate::AnnIndex>>,
    /// Nearest items by embedding (cosine), for the `similar` source.
    pub item_neighbors: Arc<CoVisitation>,
    /// The heavy ranker, when trained; without it surfaces keep the pre-ranker's order.
    pub ranker: Option<Arc<cascade_gbdt::Model>>,
}

impl Models {
    /// A new set sharing every artifact with this one (to replace some of them).
    pub fn clone_shallow(&self) -> Self {
        Self {
            version: self.version.clone(),
            popular: self.popular.clone(),
            covis: self.covis.clone(),
            embeddings: self.embeddings.clone(),
            ann: self.ann.clone(),
            item_neighbors: self.item_neighbors.clone(),
            ranker: self.ranker.clone(),
        }
    }
}

/// Holds the current [`Models`] behind an `ArcSwap`: readers load without locking, the data
/// loop publishes a new set atomically; in-flight requests keep the set they started with.
#[derive(Debug, Default)]
pub struct ModelStore {
    current: ArcSwap<Models>,
    /// Point-in-time popular lists for replayed `now`s, newest last (small LRU).
    past: Mutex<Vec<(Millis, Arc<PopularLists>)>>,
    /// Serialises publishers, so a partial update never overwrites a newer full one.
    publishing: Mutex<()>,
}

const PAST_CACHE: usize = 16;

impl ModelStore {
    pub fn new(models: Models) -> Self {
        Self {
            current: ArcSwap::from_pointee(models),
            past: Mutex::new(Vec::new()),
            publishing: Mutex::new(()),
        }
    }

    pub fn load(&self) -> Arc<Models> {
        self.current.load_full()
    }

    /// Publishes a new set. A set without a ranker keeps the current one: the ranker is
    /// trained apart from the other models (from the log, possibly in the background), so a
    /// rebuild of co-visitation or embeddings never drops it.
    pub fn publish(&self, mut models: Models) {
        let _one_at_a_time = self.publishing.lock();
        if models.ranker.is_none() {
            models.ranker = self.load().ranker.clone();
        }
        self.store(models);
    }

    fn store(&self, models: Models) {
        self.current.store(Arc::new(models));
        self.past.lock().clear();
    }

    /// Sets the ranker, keeping the other artifacts.
    pub fn publish_ranker(&self, ranker: Arc<cascade_gbdt::Model>) {
        let _one_at_a_time = self.publishing.lock();
        let mut next = self.load().clone_shallow();
        next.ranker = Some(ranker);
        self.store(next);
    }

    /// Replaces the whole set, ranker included (activating a bundle: what it holds serves).
    pub fn replace(&self, models: Models) {
        let _one_at_a_time = self.publishing.lock();
        self.store(models);
    }

    /// Removes the ranker (a model refused after loading, or a chaos test of a missing one):
    /// surfaces fall back to the pre-ranker's order until one is published.
    pub fn remove_ranker(&self) {
        let _one_at_a_time = self.publishing.lock();
        let mut next = self.load().clone_shallow();
        next.ranker = None;
        self.store(next);
    }

    /// Replaces only the popular lists, keeping the other artifacts (read and replaced under
    /// the publishing lock, so a concurrent full publish is never undone).
    pub fn publish_popular(&self, popular: PopularLists) {
        self.publish_popular_shared(Arc::new(popular));
    }

    /// [`ModelStore::publish_popular`] with lists shared with other stores (experiment arms
    /// that pin their own models still see the live popular lists).
    pub fn publish_popular_shared(&self, popular: Arc<PopularLists>) {
        let _one_at_a_time = self.publishing.lock();
        let cur = self.load();
        self.store(Models {
            version: cur.version.clone(),
            popular,
            covis: cur.covis.clone(),
            embeddings: cur.embeddings.clone(),
            ann: cur.ann.clone(),
            item_neighbors: cur.item_neighbors.clone(),
            ranker: cur.ranker.clone(),
        });
    }

    /// A cached point-in-time list for `key` (a `now` rounded down), or builds it.
    pub fn popular_at(
        &self,
        key: Millis,
        build: impl FnOnce() -> PopularLists,
    ) -> Arc<PopularLists> {
        if let Some((_, p)) = self.past.lock().iter().find(|(k, _)| *k == key) {
            return p.clone();
        }
        let built = Arc::new(build());
        let mut past = self.past.lock();
        if past.len() >= PAST_CACHE {
            past.remove(0);
        }
        past.push((key, built.clone()));
        built
    }
}
