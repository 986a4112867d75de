//! What every handler shares: the engine, the whole configuration, the read permits, and the
//! ranked lists Gorse's `/api/recommend` pages through.

use crate::config::Config;
use cascade_core::Idx;
use cascade_runtime::Engine;
use std::sync::Arc;

/// How long a ranked list serves the offsets of a user's pages.
const LIST_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Lists kept at most (all dropped past it: a cache, not a store).
const MAX_LISTS: usize = 10_000;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The whole configuration, the HTTP sections included.
    pub config: Arc<Config>,
    /// In-flight requests per route group; read by `/readyz`.
    pub reads: Arc<tokio::sync::Semaphore>,
    /// Ranked lists `/api/recommend` pages through (Gorse serves offsets from its cache).
    pub gorse_lists: Arc<Lists>,
    /// The metrics history the dashboard charts.
    pub history: Arc<crate::history::History>,
}

/// The ranked lists of recent `/api/recommend` calls by (user, categories): Gorse answers
/// offsets from its cache, so page 2 follows page 1; here page 2 is the same list, less what
/// the user has given feedback on since (the write-back).
#[derive(Debug, Default)]
pub struct Lists(parking_lot::Mutex<std::collections::HashMap<(String, Vec<String>), List>>);

#[derive(Debug, Clone)]
pub(crate) struct List {
    pub at: std::time::Instant,
    pub items: Vec<(Idx, f32)>,
    /// The list was as deep as the pipeline could go (fewer than asked).
    pub complete: bool,
}

impl Lists {
    pub(crate) fn get(&self, key: &(String, Vec<String>)) -> Option<List> {
        let g = self.0.lock();
        g.get(key).filter(|l| l.at.elapsed() < LIST_TTL).cloned()
    }

    pub(crate) fn put(&self, key: (String, Vec<String>), list: List) {
        let mut g = self.0.lock();
        if g.len() >= MAX_LISTS {
            g.clear();
        }
        g.insert(key, list);
    }
}
