//! In-memory state built by applying log mutations in order: the `State` (one lock over
//! `Inner`), its configuration and its reads. Applying mutations is in `apply`, the records
//! in `records`, memory accounting in `memory`.

pub use crate::records::{Interaction, ItemHot, ItemRec, ItemStats, UserState, UserView};
use crate::weights::{Decay, EventWeights};
use cascade_core::{IdMap, Idx, Millis, Mutation};
use parking_lot::{RwLock, RwLockReadGuard};
/// Most creators one user follows (the same bound as a user upsert's `follows`).
pub const MAX_FOLLOWS: usize = 10_000;
/// Impressions remembered per user for frequency caps.
pub const MAX_SHOWN: usize = 1000;

/// Tunables of the state.
#[derive(Debug, Clone, Copy)]
pub struct StateConfig {
    pub weights: EventWeights,
    pub popularity_half_life_hours: f64,
    /// Half-life of the short window that trending compares against the long one.
    pub trending_half_life_hours: f64,
    pub history_cap: usize,
    /// Most items in a user's `seen` and `engaged` lists (the oldest first-seen go).
    pub seen_cap: usize,
    /// Most entries in the point-in-time engagement log (the oldest go).
    pub time_log_cap: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            weights: EventWeights::default(),
            popularity_half_life_hours: 168.0,
            trending_half_life_hours: 6.0,
            history_cap: 200,
            seen_cap: 10_000,
            time_log_cap: 10_000_000,
        }
    }
}

/// The state behind the lock. Fields are public for the index builders and components,
/// which only ever see it through a read guard.
#[derive(Debug)]
pub struct Inner {
    pub config: StateConfig,
    /// Online metrics per experiment arm.
    pub experiments: crate::experiments::ExperimentStats,
    pub decay: Decay,
    /// Decay of the short (trending) window.
    pub decay_short: Decay,
    pub items: IdMap,
    /// By item index; `None` for ids only seen in events, or deleted.
    pub item_recs: Vec<Option<ItemRec>>,
    /// Packed hot fields by item index, kept in step with `item_recs`.
    pub item_hot: Vec<ItemHot>,
    /// Items that exist (upserted and not deleted).
    pub live_items: usize,
    pub categories: IdMap,
    pub creators: IdMap,
    /// Live items of each creator, newest first (by `created_at`).
    pub creator_items: Vec<Vec<Idx>>,
    pub tags: IdMap,
    pub users: IdMap,
    pub user_states: Vec<UserState>,
    /// Live decayed popularity per item, in log space (see [`Decay`]).
    pub popularity: Vec<f64>,
    /// The same over the short trending window.
    pub popularity_short: Vec<f64>,
    /// Positive-engagement count per item.
    pub engagements: Vec<u32>,
    /// Feedback counts per item, for smoothed rates (CTR, like, skip, watch completion).
    pub item_stats: Vec<ItemStats>,
    /// Impressions per item.
    pub impressions: Vec<u32>,
    /// Every weighted engagement (unix ms, item, weight), for point-in-time popularity when a
    /// request's `now` lies before the newest event.
    pub time_log: Vec<(Millis, Idx, f32)>,
    /// Curated lists by id (few and small: kept as given, resolved per request).
    pub editorial: std::collections::BTreeMap<String, cascade_core::EditorialList>,
    /// Newest engagement time applied (impressions excluded: they are stamped with the
    /// serving time and say nothing about what users chose).
    pub watermark: Millis,
    pub events_applied: u64,
    /// Items from this index on are newer than the trained embeddings: their positive
    /// engagements are logged in `fold_pairs` as `(item, user)` so the data loop can fold
    /// them into the ANN index without a retrain. `Idx::MAX` (nothing logged) until a model
    /// is trained.
    pub fold_from: Idx,
    pub fold_pairs: Vec<(Idx, Idx)>,
    /// Bumped when `fold_from` moves, so a reader's cursor into `fold_pairs` restarts.
    pub fold_epoch: u64,
    /// User attributes that define segments (e.g. `locale`, `age_band`).
    pub segment_keys: Vec<String>,
    /// Segment names, `key=value`.
    pub segments: IdMap,
    /// Decayed popularity per segment, in log space, only for items engaged in the segment.
    pub segment_popularity: Vec<std::collections::HashMap<Idx, f64>>,
    /// Bumped by every mutation that can change derived models (all but impression-only
    /// batches), so the data loop rebuilds only when something it reads changed.
    pub generation: u64,
    /// Bumped by every catalog or editorial change (items upserted, patched or deleted,
    /// curated lists), so indexes over the catalog rebuild only then. Not snapshotted: it is
    /// compared only within one process.
    pub catalog_generation: u64,
    /// Items whose record changed (upserted, patched or deleted), oldest first, after the
    /// first `item_edits_base` (forgotten): an index over the catalog applies what changed
    /// since its build instead of rebuilding. Not snapshotted, like `catalog_generation`.
    pub item_edits: Vec<Idx>,
    pub item_edits_base: u64,
    /// Log records applied (the sequence number of the next one): where a snapshot of this
    /// state resumes the log.
    pub log_records: u64,
}

/// Counts for `/metrics` and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    pub items: usize,
    pub live_items: usize,
    pub users: usize,
    pub events: u64,
}

/// Shared handle to the state.
#[derive(Debug)]
pub struct State {
    inner: RwLock<Inner>,
}

/// Distinct segments tracked; values beyond are ignored so that an attribute with a value per
/// user cannot grow the state without bound.
pub const MAX_SEGMENTS: usize = 4096;

impl State {
    /// A state that keeps popularity per segment of users, by the given attribute keys.
    pub fn with_segments(config: StateConfig, keys: Vec<String>) -> Self {
        let s = Self::new(config);
        s.inner.write().segment_keys = keys;
        s
    }

    pub fn new(config: StateConfig) -> Self {
        Self {
            inner: RwLock::new(Inner {
                config,
                experiments: Default::default(),
                decay: Decay::from_half_life_hours(config.popularity_half_life_hours),
                decay_short: Decay::from_half_life_hours(config.trending_half_life_hours),
                items: IdMap::new(),
                item_recs: Vec::new(),
                item_hot: Vec::new(),
                live_items: 0,
                editorial: Default::default(),
                categories: IdMap::new(),
                creators: IdMap::new(),
                creator_items: Vec::new(),
                tags: IdMap::new(),
                users: IdMap::new(),
                user_states: Vec::new(),
                popularity: Vec::new(),
                popularity_short: Vec::new(),
                engagements: Vec::new(),
                item_stats: Vec::new(),
                impressions: Vec::new(),
                time_log: Vec::new(),
                fold_from: Idx::MAX,
                fold_pairs: Vec::new(),
                fold_epoch: 0,
                segment_keys: Vec::new(),
                segments: IdMap::new(),
                segment_popularity: Vec::new(),
                watermark: 0,
                events_applied: 0,
                generation: 0,
                catalog_generation: 0,
                item_edits: Vec::new(),
                item_edits_base: 0,
                log_records: 0,
            }),
        }
    }

    /// A read guard: hold it briefly, never across an `.await`.
    /// Marks items from `from` on (default: every item interned from now on) as untrained
    /// (see [`Inner::fold_from`]) and returns the boundary. Engagements already applied with
    /// such items are logged from the users' histories, so a model loaded from an older
    /// bundle folds in what arrived after it was trained.
    pub fn start_fold_log(&self, from: Option<Idx>) -> Idx {
        let mut g = self.inner.write();
        let from = from.unwrap_or(g.items.len() as Idx);
        let g = &mut *g;
        g.fold_from = from;
        g.fold_pairs.clear();
        if (from as usize) < g.items.len() {
            for (u, st) in g.user_states.iter().enumerate() {
                let start = st.engaged.partition_point(|&(i, _)| i < from);
                g.fold_pairs
                    .extend(st.engaged[start..].iter().map(|&(i, _)| (i, u as Idx)));
            }
        }
        g.fold_epoch += 1;
        from
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read()
    }

    /// Applies one committed mutation.
    /// Applies log record `seq`, remembering the position under the same lock, so that a
    /// snapshot taken at any moment knows exactly which records it holds.
    pub fn apply_logged(&self, m: &Mutation, seq: u64) {
        let mut g = self.inner.write();
        g.apply(m);
        g.log_records = seq + 1;
    }

    pub fn into_inner(self) -> Inner {
        self.inner.into_inner()
    }

    /// Replaces the whole state (a restored snapshot).
    pub fn replace(&self, inner: Inner) {
        *self.inner.write() = inner;
    }

    pub fn apply(&self, m: &Mutation) {
        self.inner.write().apply(m);
    }

    /// Forgets the item edits before `upto` (see [`Inner::forget_item_edits`]).
    pub fn forget_item_edits(&self, upto: u64) {
        self.inner.write().forget_item_edits(upto);
    }

    pub fn stats(&self) -> StateStats {
        let g = self.read();
        StateStats {
            items: g.items.len(),
            live_items: g.live_items,
            users: g.users.len(),
            events: g.events_applied,
        }
    }
}

impl Inner {
    pub fn item(&self, idx: Idx) -> Option<&ItemRec> {
        self.item_recs.get(idx as usize).and_then(Option::as_ref)
    }

    pub fn item_id(&self, idx: Idx) -> &str {
        self.items.name(idx).unwrap_or("")
    }

    pub fn user(&self, idx: Idx) -> Option<&UserState> {
        self.user_states.get(idx as usize)
    }

    /// Packed hot fields (all zero, i.e. not existing, for unknown indexes).
    pub fn hot(&self, idx: Idx) -> ItemHot {
        self.item_hot.get(idx as usize).copied().unwrap_or_default()
    }

    /// Whether the item exists and may be shown at all (not hidden, not deleted).
    pub fn is_servable(&self, idx: Idx) -> bool {
        let h = self.hot(idx);
        h.exists() && !h.hidden()
    }

    /// Copies what a request needs about `user_id` as of `now`.
    pub fn user_view(&self, user_id: &str, now: Millis, max_recent: usize) -> UserView {
        let Some(idx) = self.users.get(user_id) else {
            return UserView::default();
        };
        let Some(u) = self.user(idx) else {
            return UserView::default();
        };
        u.view(Some(idx), now, max_recent)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cascade_core::{Event, EventKind, Item, ItemPatch, Target, TimeInput};
    use serde_json::Map;

    pub(crate) fn item(id: &str, cat: &str) -> Item {
        Item {
            id: id.into(),
            title: format!("Title {id}"),
            categories: vec![cat.into()],
            tags: vec![],
            creator_id: Some("c1".into()),
            created_at: Some(TimeInput(0)),
            attributes: Map::new(),
            hidden: false,
            mature: false,
        }
    }

    pub(crate) fn ev(kind: EventKind, user: &str, item: &str, ts: Millis) -> Event {
        Event {
            kind,
            user_id: user.into(),
            target: Target::Item(item.into()),
            value: 1.0,
            fraction: None,
            ts,
            request_id: None,
            surface: None,
            position: None,
            propensity: None,
            experiment: None,
        }
    }

    #[test]
    fn per_user_seen_and_the_engagement_log_stay_within_their_caps() {
        let s = State::new(StateConfig {
            seen_cap: 40,
            time_log_cap: 100,
            history_cap: 10,
            ..Default::default()
        });
        s.apply(&Mutation::UpsertItems(
            (0..300).map(|i| item(&format!("i{i}"), "C")).collect(),
        ));
        // Items visited in a shuffled order, one per second.
        let events: Vec<Event> = (0..300u32)
            .map(|k| {
                let i = (k * 7) % 300;
                ev(
                    EventKind::Click,
                    "u",
                    &format!("i{i}"),
                    1_000 * i64::from(k + 1),
                )
            })
            .collect();
        s.apply(&Mutation::Events(events));
        let g = s.read();
        let u = g.user(g.users.get("u").expect("u")).expect("state");
        assert!(u.seen.len() >= 40 && u.seen.len() <= 45, "{}", u.seen.len());
        assert_eq!(u.engaged.len(), u.seen.len());
        assert_eq!(u.history.len(), 10);
        // The newest stay: every kept first-seen time is newer than every dropped one.
        let oldest_kept = u.seen.iter().map(|&(_, t)| t).min().expect("kept");
        assert!(oldest_kept as usize > 300 - u.seen.len(), "{oldest_kept}");
        assert!(
            u.seen.windows(2).all(|w| w[0].0 < w[1].0),
            "still sorted by item"
        );
        assert!(g.time_log.len() >= 100 && g.time_log.len() <= 112);
        assert_eq!(
            g.time_log.last().map(|e| e.0),
            Some(300_000),
            "the newest kept"
        );
    }

    #[test]
    fn a_users_memory_is_bounded_however_many_events() {
        let cfg = StateConfig::default();
        let s = State::new(cfg);
        s.apply(&Mutation::UpsertItems(
            (0..30_000).map(|i| item(&format!("i{i}"), "C")).collect(),
        ));
        let mut sizes = Vec::new();
        for round in 0..6u32 {
            let events: Vec<Event> = (0..10_000u32)
                .flat_map(|k| {
                    let t = i64::from(round * 10_000 + k) * 1000;
                    let i = format!("i{}", (k * 7 + round * 3_001) % 30_000);
                    [
                        ev(EventKind::Click, "u", &i, t),
                        ev(EventKind::Impression, "u", &i, t),
                    ]
                })
                .collect();
            s.apply(&Mutation::Events(events));
            let g = s.read();
            sizes.push(g.user(0).expect("u").heap_bytes());
        }
        // history 200 × 16 B, seen and engaged ≤ 11,250 × 8 B each, shown 1,000 × 8 B, with
        // Vec growth slack: under 512 KiB whatever the number of events.
        let bound = 512 * 1024;
        assert!(sizes.iter().all(|&b| b < bound), "{sizes:?}");
        assert!(
            sizes[5] <= sizes[2] * 11 / 10,
            "flat once capped: {sizes:?}"
        );
    }

    #[test]
    fn events_build_history_seen_and_popularity() {
        let s = State::new(StateConfig::default());
        s.apply(&Mutation::UpsertItems(vec![
            item("a", "Comedy"),
            item("b", "Drama"),
        ]));
        s.apply(&Mutation::Events(vec![
            ev(EventKind::Click, "u", "a", 1_000),
            ev(EventKind::Like, "u", "b", 5_000),
            ev(EventKind::Impression, "u", "b", 6_000),
            ev(EventKind::Skip, "v", "a", 7_000),
        ]));
        let g = s.read();
        let v = g.user_view("u", 10_000, 10);
        assert_eq!(v.recent.len(), 2);
        assert_eq!(v.recent[1].kind, EventKind::Like);
        // Point in time: at t=3s only the click had happened.
        let early = g.user_view("u", 3_000, 10);
        assert_eq!(early.recent.len(), 1);
        let u = g.user(g.users.get("u").expect("u")).expect("state");
        assert!(u.has_seen(0, 10));
        assert!(!u.has_seen(1, 4), "b was liked at 5s");
        // Models learn from positive engagement only: the skip is seen, not engaged.
        let v = g.user(g.users.get("v").expect("v")).expect("state");
        assert_eq!(v.seen.len(), 1);
        assert!(v.engaged.is_empty());
        // Skips and impressions count no popularity.
        assert_eq!(g.engagements, vec![1, 1]);
        assert_eq!(g.impressions, vec![0, 1]);
        assert!(
            g.popularity[1] > g.popularity[0],
            "a like weighs more than a click"
        );
    }

    #[test]
    fn patch_delete_and_hidden() {
        let s = State::new(StateConfig::default());
        s.apply(&Mutation::UpsertItems(vec![item("a", "Comedy")]));
        s.apply(&Mutation::PatchItem {
            id: "a".into(),
            patch: ItemPatch {
                hidden: Some(true),
                ..Default::default()
            },
        });
        assert!(!s.read().is_servable(0));
        s.apply(&Mutation::DeleteItem { id: "a".into() });
        assert!(s.read().item(0).is_none());
        assert_eq!(s.stats().live_items, 0);
    }

    #[test]
    fn replay_is_deterministic() {
        let muts = [
            Mutation::Events(vec![ev(EventKind::Click, "u", "x", 1)]),
            Mutation::UpsertItems(vec![item("a", "Comedy"), item("x", "Drama")]),
            Mutation::Events(vec![ev(EventKind::Click, "w", "a", 2)]),
        ];
        let a = State::new(StateConfig::default());
        let b = State::new(StateConfig::default());
        muts.iter().for_each(|m| a.apply(m));
        muts.iter().for_each(|m| b.apply(m));
        let (ga, gb) = (a.read(), b.read());
        assert_eq!(ga.items.get("a"), gb.items.get("a"));
        assert_eq!(ga.item_recs, gb.item_recs);
        assert_eq!(ga.user_states, gb.user_states);
    }
}
