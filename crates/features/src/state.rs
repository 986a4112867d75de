//! In-memory state built by applying log mutations in order.

use crate::weights::{Decay, EventWeights, log_add};
use cascade_core::{
    EventKind, IdMap, Idx, Item, ItemPatch, Millis, Mutation, NONE_IDX, Target, User,
};
use parking_lot::{RwLock, RwLockReadGuard};
use serde_json::{Map, Value};

/// A catalog item in its compact, interned form.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRec {
    pub title: Box<str>,
    pub categories: Box<[Idx]>,
    pub tags: Box<[Idx]>,
    pub creator: Idx,
    pub created_at: Millis,
    pub hidden: bool,
    pub mature: bool,
    pub attributes: Option<Box<Map<String, Value>>>,
}

/// The fields every request reads for every candidate, packed (20 bytes) so that hydrating
/// and filtering a thousand candidates stays in cache instead of chasing `ItemRec` pointers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemHot {
    /// First two categories (`NONE_IDX` when absent).
    pub cats: [Idx; 2],
    pub creator: Idx,
    /// Unix seconds.
    pub created_s: u32,
    pub flags: u8,
}

impl ItemHot {
    pub const EXISTS: u8 = 1;
    pub const HIDDEN: u8 = 2;
    pub const MATURE: u8 = 4;
    /// `attributes.sponsored = true`.
    pub const SPONSORED: u8 = 8;

    pub(crate) fn of(rec: &ItemRec) -> Self {
        let cat = |k: usize| rec.categories.get(k).copied().unwrap_or(NONE_IDX);
        let mut flags = Self::EXISTS;
        if rec.hidden {
            flags |= Self::HIDDEN;
        }
        if rec.mature {
            flags |= Self::MATURE;
        }
        let sponsored = rec
            .attributes
            .as_ref()
            .and_then(|a| a.get("sponsored"))
            .and_then(Value::as_bool);
        if sponsored == Some(true) {
            flags |= Self::SPONSORED;
        }
        Self {
            cats: [cat(0), cat(1)],
            creator: rec.creator,
            created_s: to_secs(rec.created_at),
            flags,
        }
    }

    pub fn exists(&self) -> bool {
        self.flags & Self::EXISTS != 0
    }

    pub fn hidden(&self) -> bool {
        self.flags & Self::HIDDEN != 0
    }

    pub fn mature(&self) -> bool {
        self.flags & Self::MATURE != 0
    }

    pub fn sponsored(&self) -> bool {
        self.flags & Self::SPONSORED != 0
    }
}

/// One remembered interaction of a user (16 bytes; histories are bounded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    pub item: Idx,
    /// Unix seconds.
    pub ts_s: u32,
    pub kind: EventKind,
    pub weight: f32,
}

/// Everything known about one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    /// Upserted through the API (not only seen in events).
    pub known: bool,
    /// Time of the first interaction (seconds; 0 before any): the account's age for ranking.
    pub first_s: u32,
    pub attributes: Option<Box<Map<String, Value>>>,
    pub follows: Vec<Idx>,
    /// The most recent interactions, oldest first, at most `history_cap`.
    pub history: Vec<Interaction>,
    /// Every item the user interacted with and the first time, sorted by item.
    pub seen: Vec<(Idx, u32)>,
    /// Items the user engaged with positively (view, click, like, watch, share, purchase) and
    /// the first time, sorted by item: what models learn from (skips and hides are not taste).
    pub engaged: Vec<(Idx, u32)>,
    /// Items the user hid, sorted.
    pub hidden_items: Vec<Idx>,
    /// Creators the user hid (directly, or by hiding one of their items), sorted.
    pub hidden_creators: Vec<Idx>,
    /// Impressions (item, time in seconds), oldest first, the newest `MAX_SHOWN` kept: what
    /// frequency caps count.
    pub shown: Vec<(Idx, u32)>,
    /// Segments (`key=value` of the configured attributes, e.g. `locale=fr`) the user is in.
    pub segments: Vec<Idx>,
}

impl UserState {
    /// What a request needs of this user as of `now` (`Millis::MAX`: everything applied).
    pub fn view(&self, idx: Option<Idx>, now: Millis, max_recent: usize) -> UserView {
        let u = self;
        let now_s = to_secs(now);
        let before = if now == Millis::MAX {
            u.history.len()
        } else {
            u.history.partition_point(|i| i.ts_s < now_s)
        };
        let start = before.saturating_sub(max_recent);
        UserView {
            idx,
            recent: u.history[start..before].to_vec(),
            follows: u.follows.clone(),
            interactions: u
                .seen
                .iter()
                .filter(|&&(_, t)| now == Millis::MAX || t < now_s)
                .count(),
            attributes: u.attributes.clone(),
            segments: u.segments.clone(),
            first_s: if now == Millis::MAX || u.first_s < now_s {
                u.first_s
            } else {
                0
            },
        }
    }

    /// Whether the user interacted with `item` before `now_s`.
    pub fn has_seen(&self, item: Idx, now_s: u32) -> bool {
        match self.seen.binary_search_by_key(&item, |&(i, _)| i) {
            Ok(p) => self.seen[p].1 < now_s,
            Err(_) => false,
        }
    }
}

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

/// What a request needs to know about its user, copied out under a short read lock.
#[derive(Debug, Clone, Default)]
pub struct UserView {
    pub idx: Option<Idx>,
    /// Interactions before `now`, oldest first.
    pub recent: Vec<Interaction>,
    pub follows: Vec<Idx>,
    pub interactions: usize,
    pub attributes: Option<Box<Map<String, Value>>>,
    pub segments: Vec<Idx>,
    /// First interaction before `now` (seconds; 0 when none).
    pub first_s: u32,
}

/// Shared handle to the state.
#[derive(Debug)]
pub struct State {
    inner: RwLock<Inner>,
}

fn to_secs(ms: Millis) -> u32 {
    (ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
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

    fn set_rec(&mut self, idx: Idx, rec: Option<ItemRec>) {
        let old = self.item_hot[idx as usize];
        if old.exists()
            && old.creator != NONE_IDX
            && let Some(list) = self.creator_items.get_mut(old.creator as usize)
        {
            list.retain(|&i| i != idx);
        }
        let hot = rec.as_ref().map(ItemHot::of).unwrap_or_default();
        if hot.exists() && hot.creator != NONE_IDX {
            let c = hot.creator as usize;
            if self.creator_items.len() <= c {
                self.creator_items.resize_with(c + 1, Vec::new);
            }
            let created = |i: &Idx| std::cmp::Reverse(self.item_hot[*i as usize].created_s);
            let list = &self.creator_items[c];
            let pos = list.partition_point(|i| created(i) <= std::cmp::Reverse(hot.created_s));
            self.creator_items[c].insert(pos, idx);
        }
        self.live_items = self.live_items + usize::from(hot.exists()) - usize::from(old.exists());
        self.item_hot[idx as usize] = hot;
        self.item_recs[idx as usize] = rec;
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

    fn intern_item(&mut self, id: &str) -> Idx {
        let idx = self.items.intern(id);
        if idx as usize >= self.item_recs.len() {
            self.item_recs.push(None);
            self.item_hot.push(ItemHot::default());
            self.popularity.push(f64::NEG_INFINITY);
            self.popularity_short.push(f64::NEG_INFINITY);
            self.engagements.push(0);
            self.item_stats.push(ItemStats::default());
            self.impressions.push(0);
        }
        idx
    }

    fn intern_user(&mut self, id: &str) -> Idx {
        let idx = self.users.intern(id);
        if idx as usize >= self.user_states.len() {
            self.user_states.push(UserState::default());
        }
        idx
    }

    fn labels(map: &mut IdMap, names: &[String]) -> Box<[Idx]> {
        names.iter().map(|n| map.intern(n)).collect()
    }

    fn item_rec(&mut self, it: &Item) -> ItemRec {
        ItemRec {
            title: it.title.as_str().into(),
            categories: Self::labels(&mut self.categories, &it.categories),
            tags: Self::labels(&mut self.tags, &it.tags),
            creator: it
                .creator_id
                .as_deref()
                .map_or(NONE_IDX, |c| self.creators.intern(c)),
            created_at: it.created_at.map_or(0, |t| t.0),
            hidden: it.hidden,
            mature: it.mature,
            attributes: (!it.attributes.is_empty()).then(|| Box::new(it.attributes.clone())),
        }
    }

    fn patch(&mut self, id: &str, p: &ItemPatch) {
        let Some(idx) = self.items.get(id) else {
            return;
        };
        let Some(mut rec) = self.item_recs[idx as usize].take() else {
            return;
        };
        if let Some(t) = &p.title {
            rec.title = t.as_str().into();
        }
        if let Some(c) = &p.categories {
            rec.categories = Self::labels(&mut self.categories, c);
        }
        if let Some(t) = &p.tags {
            rec.tags = Self::labels(&mut self.tags, t);
        }
        if let Some(c) = &p.creator_id {
            rec.creator = self.creators.intern(c);
        }
        if let Some(t) = p.created_at {
            rec.created_at = t.0;
        }
        if let Some(a) = &p.attributes {
            let attrs = rec.attributes.get_or_insert_with(Default::default);
            for (k, v) in a {
                attrs.insert(k.clone(), v.clone());
            }
        }
        if let Some(h) = p.hidden {
            rec.hidden = h;
        }
        if let Some(m) = p.mature {
            rec.mature = m;
        }
        self.set_rec(idx, Some(rec));
    }

    /// The segment named `name`, created if there is room.
    fn segment(&mut self, name: &str) -> Option<Idx> {
        match self.segments.get(name) {
            Some(s) => Some(s),
            None if self.segments.len() < MAX_SEGMENTS => {
                self.segment_popularity.push(Default::default());
                Some(self.segments.intern(name))
            }
            None => None,
        }
    }

    fn upsert_user(&mut self, u: &User) {
        let idx = self.intern_user(&u.id);
        let follows: Vec<Idx> = u.follows.iter().map(|c| self.creators.intern(c)).collect();
        let st = &mut self.user_states[idx as usize];
        st.follows = follows;
        st.known = true;
        st.attributes = (!u.attributes.is_empty()).then(|| Box::new(u.attributes.clone()));
        let names: Vec<String> = self
            .segment_keys
            .iter()
            .filter_map(|key| match u.attributes.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Some(format!("{key}={s}")),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(format!("{key}={v}")),
                _ => None,
            })
            .collect();
        let segments: Vec<Idx> = names.iter().filter_map(|n| self.segment(n)).collect();
        let st = &mut self.user_states[idx as usize];
        st.segments = segments;
        st.follows.sort_unstable();
        st.follows.dedup();
    }

    /// Applies one mutation; the only way state changes.
    pub fn apply(&mut self, m: &Mutation) {
        let impressions_only =
            matches!(m, Mutation::Events(v) if v.iter().all(|e| e.kind == EventKind::Impression));
        if !impressions_only {
            self.generation += 1;
        }
        match m {
            Mutation::UpsertItems(items) => {
                for it in items {
                    let idx = self.intern_item(&it.id);
                    let rec = self.item_rec(it);
                    self.set_rec(idx, Some(rec));
                }
            }
            Mutation::PatchItem { id, patch } => self.patch(id, patch),
            Mutation::DeleteItem { id } => {
                if let Some(idx) = self.items.get(id) {
                    self.set_rec(idx, None);
                }
            }
            Mutation::UpsertUsers(users) => users.iter().for_each(|u| self.upsert_user(u)),
            Mutation::UpsertEditorial(list) => {
                self.editorial.insert(list.id.clone(), list.clone());
            }
            Mutation::DeleteEditorial { id } => {
                self.editorial.remove(id);
            }
            Mutation::Events(events) => {
                for e in events {
                    self.experiments.apply(e);
                    self.apply_event(e);
                }
            }
        }
    }

    fn apply_event(&mut self, e: &cascade_core::Event) {
        self.events_applied += 1;
        if e.kind != EventKind::Impression {
            self.watermark = self.watermark.max(e.ts);
        }
        let user = self.intern_user(&e.user_id);
        match &e.target {
            Target::Creator(c) => {
                if e.kind == EventKind::Hide {
                    let c = self.creators.intern(c);
                    insert_sorted(&mut self.user_states[user as usize].hidden_creators, c);
                }
                if e.kind == EventKind::Follow {
                    let c = self.creators.intern(c);
                    let f = &mut self.user_states[user as usize].follows;
                    if let Err(p) = f.binary_search(&c)
                        && f.len() < MAX_FOLLOWS
                    {
                        f.insert(p, c);
                    }
                }
            }
            Target::Item(id) => {
                let item = self.intern_item(id);
                let ts_s = to_secs(e.ts);
                let w = self.config.weights.weight(e.kind, e.value, e.fraction);
                if e.kind == EventKind::Impression {
                    self.impressions[item as usize] += 1;
                    let shown = &mut self.user_states[user as usize].shown;
                    let pos = shown.partition_point(|&(_, t)| t <= ts_s);
                    shown.insert(pos, (item, ts_s));
                    if shown.len() > MAX_SHOWN {
                        let extra = shown.len() - MAX_SHOWN;
                        shown.drain(..extra);
                    }
                    return;
                }
                if w > 0.0 {
                    let i = item as usize;
                    self.popularity[i] = log_add(self.popularity[i], self.decay.log_term(w, e.ts));
                    self.popularity_short[i] =
                        log_add(self.popularity_short[i], self.decay_short.log_term(w, e.ts));
                    self.engagements[i] += 1;
                    self.time_log.push((e.ts, item, w));
                    let cap = self.config.time_log_cap.max(1);
                    // Amortized: trimmed by an eighth at a time.
                    if self.time_log.len() > cap + cap / 8 {
                        let extra = self.time_log.len() - cap;
                        self.time_log.drain(..extra);
                    }
                    let term = self.decay.log_term(w, e.ts);
                    let surface = e
                        .surface
                        .as_deref()
                        .and_then(|s| self.segment(&format!("surface={s}")));
                    let segs = &self.user_states[user as usize].segments;
                    for s in segs.iter().copied().chain(surface) {
                        let p = self.segment_popularity[s as usize]
                            .entry(item)
                            .or_insert(f64::NEG_INFINITY);
                        *p = log_add(*p, term);
                    }
                }
                let stats = &mut self.item_stats[item as usize];
                match e.kind {
                    EventKind::View => stats.views += 1,
                    EventKind::Click => stats.clicks += 1,
                    EventKind::Like => stats.likes += 1,
                    EventKind::Skip => stats.skips += 1,
                    EventKind::Hide => stats.hides += 1,
                    EventKind::Share | EventKind::Purchase => stats.shares += 1,
                    EventKind::Watch => {
                        stats.watches += 1;
                        stats.watch_fraction += e.fraction.unwrap_or(0.5).clamp(0.0, 1.0);
                    }
                    EventKind::Impression | EventKind::Follow => {}
                }
                if e.kind.is_positive() && item >= self.fold_from {
                    self.fold_pairs.push((item, user));
                }
                let cap = self.config.history_cap;
                let creator = self
                    .item_hot
                    .get(item as usize)
                    .map_or(NONE_IDX, |h| h.creator);
                let st = &mut self.user_states[user as usize];
                if e.kind == EventKind::Hide {
                    // Hiding an item says "not this, and not from them": its creator goes too.
                    insert_sorted(&mut st.hidden_items, item);
                    if creator != NONE_IDX {
                        insert_sorted(&mut st.hidden_creators, creator);
                    }
                }
                let seen_cap = self.config.seen_cap;
                if e.kind.is_positive() {
                    first_time(&mut st.engaged, item, ts_s);
                    cap_oldest(&mut st.engaged, seen_cap);
                }
                if e.kind.is_interaction() {
                    if st.first_s == 0 || ts_s < st.first_s {
                        st.first_s = ts_s;
                    }
                    first_time(&mut st.seen, item, ts_s);
                    cap_oldest(&mut st.seen, seen_cap);
                    let rec = Interaction {
                        item,
                        ts_s,
                        kind: e.kind,
                        weight: w,
                    };
                    // Events mostly arrive in time order; keep history sorted anyway.
                    let pos = st.history.partition_point(|x| x.ts_s <= ts_s);
                    st.history.insert(pos, rec);
                    if st.history.len() > cap {
                        let extra = st.history.len() - cap;
                        st.history.drain(..extra);
                    }
                }
            }
        }
    }
}

/// Feedback counts of one item (impressions are counted in `Inner::impressions`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ItemStats {
    pub views: u32,
    pub clicks: u32,
    pub likes: u32,
    pub skips: u32,
    pub hides: u32,
    /// Shares and purchases.
    pub shares: u32,
    pub watches: u32,
    /// Sum of watched fractions over `watches`.
    pub watch_fraction: f32,
}

/// Inserts `x` into a sorted list unless present.
fn insert_sorted(v: &mut Vec<Idx>, x: Idx) {
    if let Err(p) = v.binary_search(&x) {
        v.insert(p, x);
    }
}

/// Records `item` at `ts_s` in a by-item list, keeping the earliest time.
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

/// Past `cap` (+ an eighth, amortized), keeps the `cap` items with the newest first time.
fn cap_oldest(list: &mut Vec<(Idx, u32)>, cap: usize) {
    let cap = cap.max(1);
    if list.len() <= cap + cap / 8 {
        return;
    }
    let mut times: Vec<u32> = list.iter().map(|&(_, t)| t).collect();
    let cut = list.len() - cap;
    let (_, &mut threshold, _) = times.select_nth_unstable(cut);
    // Strictly older than the threshold go; ties at it are kept in item order until `cap`.
    let mut keep_at = cap - list.iter().filter(|&&(_, t)| t > threshold).count();
    list.retain(|&(_, t)| {
        t > threshold
            || (t == threshold && keep_at > 0 && {
                keep_at -= 1;
                true
            })
    });
}

fn first_time(list: &mut Vec<(Idx, u32)>, item: Idx, ts_s: u32) {
    match list.binary_search_by_key(&item, |&(i, _)| i) {
        Ok(p) => list[p].1 = list[p].1.min(ts_s),
        Err(p) => list.insert(p, (item, ts_s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Event, TimeInput};

    fn item(id: &str, cat: &str) -> Item {
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

    fn ev(kind: EventKind, user: &str, item: &str, ts: Millis) -> Event {
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
