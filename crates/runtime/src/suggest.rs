//! Instant suggestions over the live catalog: the prefix index built from the state, rebuilt by
//! the data loop when the catalog changed (swapped whole), and every query's safety and
//! personal boost read from the live state, so a hidden or deleted item disappears with the
//! next query, before any rebuild.

use arc_swap::ArcSwap;
use cascade_features::{Inner, State};
use cascade_policy::BlocklistConfig;
use cascade_suggest::catalog::item_entry;
use cascade_suggest::{Entry, Hit, Kind, SuggestIndex};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most distinct items the delta index holds; past it the full index is rebuilt at once.
const MAX_DELTA: usize = 20_000;
/// Most item edits a query matches one by one (those the delta does not hold yet: normally
/// a tick's worth); beyond, the newest are taken.
const MAX_TAIL: usize = 2_000;
/// Pending edits older than this are folded into a full rebuild.
const FOLD_AFTER: Duration = Duration::from_secs(60);

/// The index over the catalog, and a small index over the items edited since it was built
/// (the delta, rebuilt every data-loop tick); edits newer than the delta are matched one by
/// one at query time. Each is swapped whole.
#[derive(Debug)]
pub struct Suggestions {
    index: ArcSwap<Built>,
    delta: ArcSwap<Delta>,
    /// Set when the delta could not hold the pending edits: rebuild without waiting.
    overflow: AtomicBool,
}

#[derive(Debug)]
struct Built {
    index: SuggestIndex,
    /// Item edits the index holds (a sequence number of the state's journal).
    edits_at: u64,
    /// Scores are relative to this popularity (log space).
    top: f64,
    /// Categories, creators and curated lists as indexed: their change needs a rebuild.
    shape: Shape,
    at: Instant,
    took: Duration,
}

#[derive(Debug, Default)]
struct Delta {
    index: SuggestIndex,
    /// Item slots it holds, sorted: the full index's entries for them are stale.
    items: Vec<u32>,
    /// It holds the edits `[built_on, upto)`.
    built_on: u64,
    upto: u64,
}

/// What besides items the index holds, cheaply compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    categories: usize,
    creators: usize,
    editorial: u64,
}

impl Shape {
    fn of(g: &Inner) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (id, list) in &g.editorial {
            (id, &list.title, &list.items).hash(&mut h);
        }
        Self {
            categories: g.categories.len(),
            creators: g.creators.len(),
            editorial: h.finish(),
        }
    }
}

impl Suggestions {
    /// Builds the index over the state's catalog now.
    pub fn build(state: &State) -> Self {
        let s = Self {
            index: ArcSwap::from_pointee(Self::full(state)),
            delta: ArcSwap::from_pointee(Delta::default()),
            overflow: AtomicBool::new(false),
        };
        s.forget(state);
        s
    }

    fn full(state: &State) -> Built {
        let t = Instant::now();
        let (entries, top, edits_at, shape) = {
            let g = state.read();
            let (entries, top) = cascade_suggest::catalog::entries(&g);
            (entries, top, g.item_edit_seq(), Shape::of(&g))
        };
        let index = SuggestIndex::build(entries);
        let took = t.elapsed();
        metrics::gauge!("cascade_suggest_keys").set(index.keys() as f64);
        metrics::gauge!("cascade_suggest_bytes").set(index.memory_bytes() as f64);
        metrics::histogram!("cascade_suggest_build_seconds").record(took.as_secs_f64());
        Built {
            index,
            edits_at,
            top,
            shape,
            at: Instant::now(),
            took,
        }
    }

    /// Drops the journal the current index no longer needs. Queries read the index under
    /// the state's read lock, so none still holds an older one once the write lock is taken.
    fn forget(&self, state: &State) {
        let at = self.index.load().edits_at;
        state.forget_item_edits(at);
    }

    /// Whether the full index should be rebuilt now: categories, creators or lists changed,
    /// the delta overflowed or the journal was cut, or edits waited [`FOLD_AFTER`]; never
    /// more than a third of the time (at 10M titles a build takes ~20 s).
    pub fn wants_rebuild(&self, state: &State) -> bool {
        let built = self.index.load();
        if built.at.elapsed() < 2 * built.took {
            return false;
        }
        let g = state.read();
        let pending = g.item_edit_seq() > built.edits_at;
        Shape::of(&g) != built.shape
            || self.overflow.load(Ordering::Acquire)
            || g.item_edits_since(built.edits_at).is_none()
            || (pending && built.at.elapsed() >= FOLD_AFTER)
    }

    /// Rebuilds the full index from the catalog and swaps it in.
    pub fn rebuild(&self, state: &State) {
        let built = Self::full(state);
        self.index.store(Arc::new(built));
        self.overflow.store(false, Ordering::Release);
        self.refresh_delta(state);
        self.forget(state);
    }

    /// Rebuilds the delta over the items edited since the full build when edits arrived
    /// since it was built; returns whether it did (the data loop calls this every tick).
    pub fn refresh_delta(&self, state: &State) -> bool {
        let built = self.index.load_full();
        let old = self.delta.load();
        let (entries, items, upto) = {
            let g = state.read();
            let upto = g.item_edit_seq();
            if old.built_on == built.edits_at && old.upto == upto {
                return false;
            }
            let Some(edits) = g.item_edits_since(built.edits_at) else {
                self.overflow.store(true, Ordering::Release);
                return false;
            };
            let mut items = edits.to_vec();
            items.sort_unstable();
            items.dedup();
            if items.len() > MAX_DELTA {
                self.overflow.store(true, Ordering::Release);
                return false;
            }
            let entries: Vec<Entry> = items
                .iter()
                .filter_map(|&i| item_entry(&g, i as usize, built.top))
                .collect();
            (entries, items, upto)
        };
        self.delta.store(Arc::new(Delta {
            index: SuggestIndex::build(entries),
            items,
            built_on: built.edits_at,
            upto,
        }));
        true
    }

    /// Keys (distinct words) of the current index.
    pub fn keys(&self) -> usize {
        self.index.load().index.keys()
    }

    /// Items the delta holds now.
    pub fn delta_items(&self) -> usize {
        self.delta.load().items.len()
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
        // The lock first, then the indexes: the journal they need is kept while it is held.
        let g = state.read();
        let built = self.index.load_full();
        let current = self.delta.load_full();
        let delta = (current.built_on == built.edits_at).then_some(&*current);
        // Edits the delta does not hold yet, matched one by one.
        let from = delta.map_or(built.edits_at, |d| d.upto);
        let mut tail: Vec<u32> = g.item_edits_since(from).unwrap_or_default().to_vec();
        if tail.len() > MAX_TAIL {
            tail.drain(..tail.len() - MAX_TAIL);
        }
        tail.sort_unstable();
        tail.dedup();
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
        let edited =
            |e: &Entry, held: &[u32]| e.kind == Kind::Item && held.binary_search(&e.target).is_ok();
        let max_boost = if user.is_some() { AFFINITY_BOOST } else { 0.0 };
        let (n, kinds) = (query.n, &query.kinds[..]);
        // The full index, without the items edited since it was built...
        let main = built.index.search(&query.q, n, kinds, max_boost, &|e| {
            let newer = edited(e, &tail) || delta.is_some_and(|d| edited(e, &d.items));
            if newer { None } else { admit(e) }
        });
        // ...which the delta holds as they are now (but for the newest edits)...
        let recent = delta.map(|d| {
            d.index.search(&query.q, n, kinds, max_boost, &|e| {
                if edited(e, &tail) { None } else { admit(e) }
            })
        });
        // ...and the newest, one by one.
        let fresh: Vec<Entry> = tail
            .iter()
            .filter_map(|&i| item_entry(&g, i as usize, built.top))
            .collect();
        let newest = cascade_suggest::brute_force(&fresh, &query.q, n, kinds, &admit);
        drop(g);
        let mut all: Vec<(Hit, &Entry)> = Vec::with_capacity(3 * n);
        let held = built.index.entries();
        all.extend(main.into_iter().map(|h| {
            let e = &held[h.entry as usize];
            (h, e)
        }));
        if let (Some(d), Some(hits)) = (delta, recent) {
            let held = d.index.entries();
            all.extend(hits.into_iter().map(|h| {
                let e = &held[h.entry as usize];
                (h, e)
            }));
        }
        all.extend(newest.into_iter().map(|h| {
            let e = &fresh[h.entry as usize];
            (h, e)
        }));
        all.sort_by(|a, b| cascade_suggest::order(&a.0, a.1, &b.0, b.1));
        all.truncate(n);
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
