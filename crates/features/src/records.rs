//! The records the state keeps per item and per user: the full item record, the packed hot
//! columns every request reads, a user's bounded histories, and what a request copies out.

use cascade_core::{EventKind, Idx, Millis, NONE_IDX};
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
    /// Whether any feedback of this user on `item` is kept (interaction, impression, hide).
    pub fn has_feedback_on(&self, item: Idx) -> bool {
        self.seen.iter().any(|&(i, _)| i == item)
            || self.history.iter().any(|x| x.item == item)
            || self.shown.iter().any(|&(i, _)| i == item)
            || self.hidden_items.binary_search(&item).is_ok()
    }

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

/// Feedback counts of one item (impressions are counted in `Inner::impressions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
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

pub(crate) fn to_secs(ms: Millis) -> u32 {
    (ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
}
