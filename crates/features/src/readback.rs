//! What the data API reads back: an item or a user as the state holds them, in the shape they
//! were given, pages of them in a stable order, and a user's newest feedback.
//!
//! Order is the dense index, which replay reproduces (ids are interned in log order), so a
//! cursor stays valid across restarts and replicas. Reads copy out under the caller's read
//! guard; nothing here allocates more than the page it returns.

use crate::state::{Inner, ItemStats};
use cascade_core::time::TimeInput;
use cascade_core::{EventKind, IdMap, Idx, Item, NONE_IDX, User};

/// An item's feedback counts, beside its record: the state's [`ItemStats`] with the two
/// counters kept beside them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ItemCounts {
    pub impressions: u32,
    /// Positive engagements (what popularity counts).
    pub engagements: u32,
    #[serde(flatten)]
    pub stats: ItemStats,
}

/// A user as the state holds them: what was upserted, and what their feedback left.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user: User,
    /// Upserted through the API (a user only seen in events is not).
    pub known: bool,
    /// First interaction, Unix ms (`None` before any).
    pub first_seen_ms: Option<i64>,
    /// Distinct items interacted with.
    pub interacted_items: usize,
    pub hidden_items: Vec<String>,
    pub hidden_creators: Vec<String>,
}

/// One remembered feedback event of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub item_id: String,
    pub kind: EventKind,
    /// Unix ms (the state keeps seconds).
    pub ts_ms: i64,
    /// The weight the event counted with.
    pub weight: f32,
}

/// A page and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next: Option<u64>,
}

fn names(map: &IdMap, idx: &[Idx]) -> Vec<String> {
    idx.iter()
        .filter_map(|&i| map.name(i))
        .map(str::to_string)
        .collect()
}

impl Inner {
    /// The live item `idx` in the shape it is upserted in (`None`: unknown or deleted).
    pub fn item_record(&self, idx: Idx) -> Option<Item> {
        let r = self.item(idx)?;
        Some(Item {
            id: self.item_id(idx).to_string(),
            title: r.title.to_string(),
            categories: names(&self.categories, &r.categories),
            tags: names(&self.tags, &r.tags),
            creator_id: (r.creator != NONE_IDX)
                .then(|| self.creators.name(r.creator).map(str::to_string))
                .flatten(),
            created_at: Some(TimeInput(r.created_at)),
            attributes: r.attributes.as_deref().cloned().unwrap_or_default(),
            hidden: r.hidden,
            mature: r.mature,
        })
    }

    /// The feedback counts of item `idx`.
    pub fn item_counts(&self, idx: Idx) -> ItemCounts {
        let i = idx as usize;
        ItemCounts {
            impressions: self.impressions.get(i).copied().unwrap_or(0),
            stats: self.item_stats.get(i).copied().unwrap_or_default(),
            engagements: self.engagements.get(i).copied().unwrap_or(0),
        }
    }

    /// Live items from index `from` on, at most `n`, in index order.
    pub fn items_page(&self, from: u64, n: usize) -> Page<Idx> {
        let len = self.item_recs.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        let mut live = (start..len).filter(|&i| self.item_recs[i].is_some());
        let rows: Vec<Idx> = live.by_ref().take(n).map(|i| i as Idx).collect();
        // The next page starts at the next live item, so the last page says it is the last.
        let next = live.next().map(|i| i as u64);
        Page { rows, next }
    }

    /// Whether user `idx` exists for the data API: upserted, or left a trace in feedback.
    pub fn user_exists(&self, idx: Idx) -> bool {
        self.user(idx).is_some_and(|u| {
            u.known
                || !u.seen.is_empty()
                || !u.history.is_empty()
                || !u.shown.is_empty()
                || !u.follows.is_empty()
                || !u.hidden_items.is_empty()
                || !u.hidden_creators.is_empty()
        })
    }

    /// Existing users from index `from` on, at most `n`, in index order.
    pub fn users_page(&self, from: u64, n: usize) -> Page<Idx> {
        let len = self.user_states.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        let mut live = (start..len).filter(|&i| self.user_exists(i as Idx));
        let rows: Vec<Idx> = live.by_ref().take(n).map(|i| i as Idx).collect();
        let next = live.next().map(|i| i as u64);
        Page { rows, next }
    }

    /// User `idx` as the state holds them (`None`: unknown).
    pub fn user_record(&self, idx: Idx) -> Option<UserRecord> {
        if !self.user_exists(idx) {
            return None;
        }
        let u = self.user(idx)?;
        Some(UserRecord {
            user: User {
                id: self.users.name(idx)?.to_string(),
                attributes: u.attributes.as_deref().cloned().unwrap_or_default(),
                follows: names(&self.creators, &u.follows),
            },
            known: u.known,
            first_seen_ms: (u.first_s > 0).then(|| i64::from(u.first_s) * 1000),
            interacted_items: u.seen.len(),
            hidden_items: u
                .hidden_items
                .iter()
                .map(|&i| self.item_id(i).to_string())
                .collect(),
            hidden_creators: names(&self.creators, &u.hidden_creators),
        })
    }

    /// User `idx`'s remembered feedback, newest first: `skip` rows past the newest, at most
    /// `n`, only of `kind` when given. The state keeps the newest `history_cap` events of a
    /// user (impressions apart: they are counted, not listed); `next` is the `skip` of the
    /// following page.
    pub fn user_feedback(
        &self,
        idx: Idx,
        kind: Option<EventKind>,
        skip: u64,
        n: usize,
    ) -> Page<Feedback> {
        let Some(u) = self.user(idx) else {
            return Page {
                rows: Vec::new(),
                next: None,
            };
        };
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let mut matching = u
            .history
            .iter()
            .rev()
            .filter(|i| kind.is_none_or(|k| i.kind == k))
            .skip(skip);
        let rows: Vec<Feedback> = matching
            .by_ref()
            .take(n)
            .map(|i| Feedback {
                item_id: self.item_id(i.item).to_string(),
                kind: i.kind,
                ts_ms: i64::from(i.ts_s) * 1000,
                weight: i.weight,
            })
            .collect();
        let next = matching
            .next()
            .map(|_| (skip.saturating_add(rows.len())) as u64);
        Page { rows, next }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::tests::{ev, item};
    use crate::state::{State, StateConfig};
    use cascade_core::{EventKind, Item, Mutation, User};

    #[test]
    fn items_read_back_as_upserted_and_page_in_a_stable_order() {
        let s = State::new(StateConfig::default());
        let items: Vec<Item> = (0..7).map(|i| item(&format!("i{i}"), "Drama")).collect();
        s.apply(&Mutation::UpsertItems(items.clone()));
        s.apply(&Mutation::DeleteItem { id: "i3".into() });
        let g = s.read();
        let i1 = g.items.get("i1").expect("i1");
        assert_eq!(g.item_record(i1), Some(items[1].clone()));
        assert_eq!(g.item_record(g.items.get("i3").expect("i3")), None);
        // Pages of two to the end: every live item once, in order, the deleted one skipped.
        let (mut seen, mut from, mut pages) = (Vec::new(), 0, 0);
        loop {
            let p = g.items_page(from, 2);
            pages += 1;
            seen.extend(p.rows.iter().map(|&i| g.item_id(i).to_string()));
            match p.next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(seen, ["i0", "i1", "i2", "i4", "i5", "i6"]);
        assert_eq!(pages, 3, "the last full page says it is the last");
    }

    #[test]
    fn feedback_lists_newest_first_by_type_and_users_include_those_seen_in_events() {
        let s = State::new(StateConfig::default());
        s.apply(&Mutation::UpsertItems(vec![item("a", "X"), item("b", "Y")]));
        s.apply(&Mutation::UpsertUsers(vec![User {
            id: "u1".into(),
            attributes: Default::default(),
            follows: vec!["c1".into()],
        }]));
        s.apply(&Mutation::Events(vec![
            ev(EventKind::Click, "u1", "a", 100_000),
            ev(EventKind::Like, "u1", "b", 200_000),
            ev(EventKind::Like, "u1", "a", 300_000),
            ev(EventKind::Hide, "u2", "b", 400_000),
        ]));
        let g = s.read();
        let u1 = g.users.get("u1").expect("u1");
        let all = g.user_feedback(u1, None, 0, 2);
        let first: Vec<_> = all
            .rows
            .iter()
            .map(|f| (f.item_id.as_str(), f.ts_ms))
            .collect();
        assert_eq!(first, [("a", 300_000), ("b", 200_000)]);
        let rest = g.user_feedback(u1, None, all.next.expect("more"), 2);
        assert_eq!(rest.rows.len(), 1);
        assert_eq!(rest.next, None);
        let likes = g.user_feedback(u1, Some(EventKind::Like), 0, 10);
        assert_eq!(likes.rows.len(), 2);
        assert!(likes.rows.iter().all(|f| f.kind == EventKind::Like));
        let r = g.user_record(u1).expect("u1");
        assert!(r.known);
        assert_eq!(r.user.follows, ["c1"]);
        assert_eq!(r.interacted_items, 2);
        let u2 = g
            .user_record(g.users.get("u2").expect("u2"))
            .expect("u2 exists by events");
        assert!(!u2.known);
        assert_eq!(u2.hidden_items, ["b"]);
        let ids: Vec<_> = g
            .users_page(0, 10)
            .rows
            .iter()
            .filter_map(|&i| g.users.name(i))
            .collect();
        assert_eq!(ids, ["u1", "u2"]);
    }

    #[test]
    fn an_erased_user_is_gone_and_deleted_feedback_is_forgotten_while_aggregates_stay() {
        let s = State::new(StateConfig::default());
        s.apply(&Mutation::UpsertItems(vec![item("a", "X"), item("b", "Y")]));
        s.apply(&Mutation::UpsertUsers(vec![User {
            id: "ana".into(),
            attributes: serde_json::from_str(r#"{"locale":"pt"}"#).expect("attrs"),
            follows: vec!["c1".into()],
        }]));
        s.apply(&Mutation::Events(vec![
            ev(EventKind::Like, "ana", "a", 100_000),
            ev(EventKind::Hide, "ana", "b", 200_000),
            ev(EventKind::Click, "bo", "a", 300_000),
            ev(EventKind::Like, "bo", "b", 400_000),
        ]));
        // One kind first: bo's like of b goes, the rest of b stays.
        s.apply(&Mutation::DeleteFeedback {
            user_id: "bo".into(),
            item_id: "b".into(),
            kind: Some(EventKind::Click),
        });
        s.apply(&Mutation::DeleteFeedback {
            user_id: "bo".into(),
            item_id: "a".into(),
            kind: None,
        });
        s.apply(&Mutation::EraseUser { id: "ana".into() });
        let g = s.read();
        assert_eq!(g.users.get("ana"), None);
        let listed: Vec<_> = g
            .users_page(0, 10)
            .rows
            .iter()
            .filter_map(|&i| g.users.name(i))
            .collect();
        assert_eq!(listed, ["bo"]);
        let bo = g.users.get("bo").expect("bo");
        let left: Vec<_> = g
            .user_feedback(bo, None, 0, 10)
            .rows
            .iter()
            .map(|f| f.item_id.clone())
            .collect();
        assert_eq!(left, ["b"]);
        let r = g.user_record(bo).expect("bo");
        assert_eq!(r.interacted_items, 1);
        assert_eq!(
            r.first_seen_ms,
            Some(400_000),
            "first seen moves to what is left"
        );
        // Item counters hold no user and stay.
        let a = g.items.get("a").expect("a");
        assert_eq!(g.item_counts(a).stats.likes, 1);
        assert_eq!(g.item_counts(a).stats.clicks, 1);
        drop(g);
        // The id, seen again, is a new user with nothing of the old one.
        s.apply(&Mutation::Events(vec![ev(
            EventKind::Click,
            "ana",
            "b",
            500_000,
        )]));
        let g = s.read();
        let again = g
            .user_record(g.users.get("ana").expect("ana"))
            .expect("ana");
        assert!(!again.known && again.user.follows.is_empty() && again.hidden_items.is_empty());
        assert_eq!(again.interacted_items, 1);
    }
}
