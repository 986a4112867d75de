//! Instant suggestions over the live catalog: the prefix index built from the state, rebuilt by
//! the data loop when the catalog changed (swapped whole), and every query's safety and
//! personal boost read from the live state, so a hidden or deleted item disappears with the
//! next query, before any rebuild.

use arc_swap::ArcSwap;
use cascade_features::{Inner, State};
use cascade_policy::BlocklistConfig;
use cascade_suggest::{Entry, Kind, SuggestIndex};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The index, the catalog generation it was built from, and how many item slots it covers:
/// items added since are matched at query time (the delta), until the next build.
#[derive(Debug)]
pub struct Suggestions {
    index: ArcSwap<Built>,
    built: AtomicU64,
}

#[derive(Debug, Default)]
struct Built {
    index: SuggestIndex,
    items: usize,
}

impl Suggestions {
    /// Builds the index over the state's catalog now.
    pub fn build(state: &State) -> Self {
        let s = Self {
            index: ArcSwap::from_pointee(Built::default()),
            built: AtomicU64::new(u64::MAX),
        };
        s.refresh(state);
        s
    }

    /// Rebuilds when the catalog changed since the last build; returns whether it did. The
    /// entries are copied under the read lock, the FST is built without it.
    pub fn refresh(&self, state: &State) -> bool {
        let t = Instant::now();
        let (generation, items, entries) = {
            let g = state.read();
            if g.catalog_generation == self.built.load(Ordering::Acquire) {
                return false;
            }
            let entries = cascade_suggest::catalog::entries(&g);
            (g.catalog_generation, g.item_recs.len(), entries)
        };
        let index = SuggestIndex::build(entries);
        metrics::gauge!("cascade_suggest_keys").set(index.keys() as f64);
        metrics::gauge!("cascade_suggest_bytes").set(index.memory_bytes() as f64);
        metrics::histogram!("cascade_suggest_build_seconds").record(t.elapsed().as_secs_f64());
        self.index.store(Arc::new(Built { index, items }));
        self.built.store(generation, Ordering::Release);
        true
    }

    /// Keys (distinct words) of the current index.
    pub fn keys(&self) -> usize {
        self.index.load().index.keys()
    }
}

/// One suggestion as the API returns it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub text: String,
    /// `item`, `category`, `creator` or `collection`.
    pub kind: String,
    pub id: String,
    pub score: f32,
    /// How it matched: `exact`, `prefix` or `fuzzy`.
    #[serde(rename = "match")]
    pub class: String,
    /// `[start, end)` character spans of `text` that matched the query.
    pub highlight: Vec<[u32; 2]>,
}

/// What a suggestion query asks.
#[derive(Debug, Clone)]
pub struct SuggestQuery {
    pub q: String,
    pub n: usize,
    pub kinds: Vec<Kind>,
    pub user_id: Option<String>,
    /// A surface whose blocklist applies too.
    pub blocklist: Option<BlocklistConfig>,
}

/// Boost added for the user's affinity to what an entry stands for (its share of the user's
/// recent interactions, times this).
const AFFINITY_BOOST: f32 = 0.5;

impl Suggestions {
    /// Suggestions for a query over `state`: never what the feed would not show this user
    /// (hidden or deleted items, mature items without `allow_mature`, what the user hid, the
    /// surface's blocklist), boosted by the user's category and creator affinity.
    pub fn suggest(&self, state: &State, query: &SuggestQuery) -> Vec<Suggestion> {
        let t = Instant::now();
        let built = self.index.load_full();
        let index = &built.index;
        let g = state.read();
        let user = query
            .user_id
            .as_deref()
            .and_then(|u| g.users.get(u))
            .and_then(|u| g.user(u));
        let allow_mature = user
            .and_then(|u| u.attributes.as_ref())
            .and_then(|a| a.get("allow_mature"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let affinity = Affinity::of(&g, user);
        let blocked = query.blocklist.as_ref().map(|b| Blocked::resolve(&g, b));
        let admit = |e: &Entry| -> Option<f32> {
            match e.kind {
                Kind::Item => {
                    let h = g.hot(e.target);
                    if !g.is_servable(e.target) || (h.mature() && !allow_mature) {
                        return None;
                    }
                    if let Some(u) = user
                        && (u.hidden_items.binary_search(&e.target).is_ok()
                            || u.hidden_creators.binary_search(&h.creator).is_ok())
                    {
                        return None;
                    }
                    if blocked.as_ref().is_some_and(|b| b.item(&g, e.target)) {
                        return None;
                    }
                    let cat = h
                        .cats
                        .iter()
                        .map(|&c| affinity.category(c))
                        .fold(0.0, f32::max);
                    Some(AFFINITY_BOOST * cat.max(affinity.creator(h.creator)))
                }
                Kind::Creator => {
                    if user.is_some_and(|u| u.hidden_creators.binary_search(&e.target).is_ok())
                        || blocked
                            .as_ref()
                            .is_some_and(|b| b.creators.contains(&e.target))
                    {
                        return None;
                    }
                    Some(AFFINITY_BOOST * affinity.creator(e.target))
                }
                Kind::Category => {
                    if blocked
                        .as_ref()
                        .is_some_and(|b| b.categories.contains(&e.target))
                    {
                        return None;
                    }
                    Some(AFFINITY_BOOST * affinity.category(e.target))
                }
                Kind::Collection => g.editorial.contains_key(&e.id).then_some(0.0),
            }
        };
        let max_boost = if user.is_some() { AFFINITY_BOOST } else { 0.0 };
        let hits = index.search(&query.q, query.n, &query.kinds, max_boost, &admit);
        // Items added since the build: matched one by one (few: the data loop rebuilds within
        // a second of a catalog change).
        let delta: Vec<Entry> = (built.items..g.item_recs.len())
            .filter_map(|i| {
                let rec = g.item(i as u32)?;
                let id = g.item_id(i as u32);
                Some(Entry::new(Kind::Item, id, &rec.title, i as u32, 0.0))
            })
            .collect();
        let fresh = cascade_suggest::brute_force(&delta, &query.q, query.n, &query.kinds, &admit);
        drop(g);
        let mut all: Vec<(cascade_suggest::Hit, &Entry)> = hits
            .into_iter()
            .map(|h| {
                let e = &index.entries()[h.entry as usize];
                (h, e)
            })
            .chain(fresh.into_iter().map(|h| {
                let e = &delta[h.entry as usize];
                (h, e)
            }))
            .collect();
        all.sort_by(|a, b| cascade_suggest::order(&a.0, a.1, &b.0, b.1));
        all.truncate(query.n);
        let out = all
            .into_iter()
            .map(|(h, e)| Suggestion {
                text: e.text.clone(),
                kind: e.kind.as_str().to_string(),
                id: e.id.clone(),
                score: h.score,
                class: h.class.as_str().to_string(),
                highlight: h.highlight,
            })
            .collect();
        metrics::histogram!("cascade_suggest_seconds").record(t.elapsed().as_secs_f64());
        out
    }
}

/// The user's share of recent interactions by category and by creator.
struct Affinity {
    categories: HashMap<u32, f32>,
    creators: HashMap<u32, f32>,
}

impl Affinity {
    fn of(g: &Inner, user: Option<&cascade_features::UserState>) -> Self {
        let mut categories: HashMap<u32, f32> = HashMap::new();
        let mut creators: HashMap<u32, f32> = HashMap::new();
        let history = user.map_or(&[][..], |u| &u.history[..]);
        let share = 1.0 / history.len().max(1) as f32;
        for i in history {
            let h = g.hot(i.item);
            for &c in h.cats.iter().filter(|&&c| c != cascade_core::NONE_IDX) {
                *categories.entry(c).or_default() += share;
            }
            *creators.entry(h.creator).or_default() += share;
        }
        Self {
            categories,
            creators,
        }
    }

    fn category(&self, c: u32) -> f32 {
        self.categories.get(&c).copied().unwrap_or(0.0)
    }

    fn creator(&self, k: u32) -> f32 {
        self.creators.get(&k).copied().unwrap_or(0.0)
    }
}

/// A surface's blocklist resolved to catalog indexes.
struct Blocked {
    items: Vec<u32>,
    creators: Vec<u32>,
    categories: Vec<u32>,
    tags: Vec<u32>,
}

impl Blocked {
    fn resolve(g: &Inner, b: &BlocklistConfig) -> Self {
        let ids = |map: &cascade_core::IdMap, names: &[String]| -> Vec<u32> {
            names.iter().filter_map(|n| map.get(n)).collect()
        };
        Self {
            items: ids(&g.items, &b.items),
            creators: ids(&g.creators, &b.creators),
            categories: ids(&g.categories, &b.categories),
            tags: ids(&g.tags, &b.tags),
        }
    }

    fn item(&self, g: &Inner, i: u32) -> bool {
        if self.items.contains(&i) {
            return true;
        }
        let Some(rec) = g.item(i) else { return false };
        self.creators.contains(&rec.creator)
            || rec.categories.iter().any(|c| self.categories.contains(c))
            || rec.tags.iter().any(|t| self.tags.contains(t))
    }
}
