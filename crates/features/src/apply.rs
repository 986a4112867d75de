//! Applying mutations to the state in log order: catalog upserts, patches and deletes, user
//! upserts, and events (histories, seen and engaged sets, popularity, counters, segments).

use crate::records::{Interaction, ItemHot, ItemRec, ItemStats, UserState, to_secs};
use crate::state::{Inner, MAX_FOLLOWS, MAX_SEGMENTS, MAX_SHOWN};
use crate::weights::log_add;
use cascade_core::{EventKind, IdMap, Idx, Item, ItemPatch, Mutation, NONE_IDX, Target, User};
use serde_json::Value;

/// Item edits journaled at most (4 bytes each) before the older half is forgotten.
pub const MAX_ITEM_EDITS: usize = 1 << 22;

impl Inner {
    pub(crate) fn set_rec(&mut self, idx: Idx, rec: Option<ItemRec>) {
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
        self.record_item_edit(idx);
    }

    /// Journals an item change; past [`MAX_ITEM_EDITS`] the older half is forgotten (a reader
    /// that still needed it rebuilds from the catalog).
    fn record_item_edit(&mut self, idx: Idx) {
        if self.item_edits.len() >= MAX_ITEM_EDITS {
            let drop = self.item_edits.len() / 2;
            self.item_edits.drain(..drop);
            self.item_edits_base += drop as u64;
        }
        self.item_edits.push(idx);
    }

    /// Item edits so far: the sequence number of the next one.
    pub fn item_edit_seq(&self) -> u64 {
        self.item_edits_base + self.item_edits.len() as u64
    }

    /// The items edited from sequence number `from` on (repeats included), or `None` when
    /// some of them were forgotten.
    pub fn item_edits_since(&self, from: u64) -> Option<&[Idx]> {
        let at = usize::try_from(from.checked_sub(self.item_edits_base)?).ok()?;
        self.item_edits.get(at..)
    }

    /// Forgets the edits before sequence number `upto` (what every reader has applied).
    pub fn forget_item_edits(&mut self, upto: u64) {
        let n = upto.saturating_sub(self.item_edits_base) as usize;
        let n = n.min(self.item_edits.len());
        self.item_edits.drain(..n);
        self.item_edits_base += n as u64;
    }

    pub(crate) fn intern_item(&mut self, id: &str) -> Idx {
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

    pub(crate) fn intern_user(&mut self, id: &str) -> Idx {
        let idx = self.users.intern(id);
        if idx as usize >= self.user_states.len() {
            self.user_states.push(UserState::default());
        }
        idx
    }

    pub(crate) fn labels(map: &mut IdMap, names: &[String]) -> Box<[Idx]> {
        names.iter().map(|n| map.intern(n)).collect()
    }

    pub(crate) fn item_rec(&mut self, it: &Item) -> ItemRec {
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

    pub(crate) fn patch(&mut self, id: &str, p: &ItemPatch) {
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
    pub(crate) fn segment(&mut self, name: &str) -> Option<Idx> {
        match self.segments.get(name) {
            Some(s) => Some(s),
            None if self.segments.len() < MAX_SEGMENTS => {
                self.segment_popularity.push(Default::default());
                Some(self.segments.intern(name))
            }
            None => None,
        }
    }

    pub(crate) fn upsert_user(&mut self, u: &User) {
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
        if !matches!(
            m,
            Mutation::Events(_)
                | Mutation::UpsertUsers(_)
                | Mutation::EraseUser { .. }
                | Mutation::DeleteFeedback { .. }
        ) {
            self.catalog_generation += 1;
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
            Mutation::EraseUser { id } => self.erase_user(id),
            Mutation::DeleteFeedback {
                user_id,
                item_id,
                kind,
            } => self.delete_feedback(user_id, item_id, *kind),
        }
    }

    /// Forgets user `id`: their state (attributes, follows, history, seen, engaged, hidden,
    /// impressions, segments) and their id. What their events added to item aggregates
    /// (popularity, counters, co-visitation) stays: it holds no user.
    fn erase_user(&mut self, id: &str) {
        let Some(u) = self.users.get(id) else {
            return;
        };
        self.user_states[u as usize] = UserState::default();
        self.fold_pairs.retain(|&(_, x)| x != u);
        self.users.forget(u);
    }

    /// Forgets every feedback event of user `user_id` on item `item_id`: history, seen,
    /// engaged, impressions and the item's hide (a creator hidden through it stays hidden:
    /// other feedback may have hidden them too).
    ///
    /// With a `kind`, only that kind's history entries go (and the impressions, or the hide,
    /// for those kinds); seen and engaged times stay.
    fn delete_feedback(&mut self, user_id: &str, item_id: &str, kind: Option<EventKind>) {
        let (Some(u), Some(i)) = (self.users.get(user_id), self.items.get(item_id)) else {
            return;
        };
        let st = &mut self.user_states[u as usize];
        if let Some(k) = kind {
            st.history.retain(|x| x.item != i || x.kind != k);
            match k {
                EventKind::Impression => st.shown.retain(|&(x, _)| x != i),
                EventKind::Hide => st.hidden_items.retain(|&x| x != i),
                _ => {}
            }
            return;
        }
        st.history.retain(|x| x.item != i);
        let first = st.seen.iter().find(|&&(x, _)| x == i).map(|&(_, t)| t);
        st.seen.retain(|&(x, _)| x != i);
        st.engaged.retain(|&(x, _)| x != i);
        st.shown.retain(|&(x, _)| x != i);
        st.hidden_items.retain(|&x| x != i);
        if first == Some(st.first_s) {
            st.first_s = st.seen.iter().map(|&(_, t)| t).min().unwrap_or(0);
        }
        self.fold_pairs.retain(|&p| p != (i, u));
    }

    pub(crate) fn apply_event(&mut self, e: &cascade_core::Event) {
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

/// Inserts `x` into a sorted list unless present.
fn insert_sorted(v: &mut Vec<Idx>, x: Idx) {
    if let Err(p) = v.binary_search(&x) {
        v.insert(p, x);
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

/// Records `item` at `ts_s` in a by-item list, keeping the earliest time.
fn first_time(list: &mut Vec<(Idx, u32)>, item: Idx, ts_s: u32) {
    match list.binary_search_by_key(&item, |&(i, _)| i) {
        Ok(p) => list[p].1 = list[p].1.min(ts_s),
        Err(p) => list.insert(p, (item, ts_s)),
    }
}
