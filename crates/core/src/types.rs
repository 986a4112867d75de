//! The JSON contract (items, users, events) and the validated forms that reach the log. One
//! file: it is the contract, read whole (every type a client sends, with its checks, and the
//! `Mutation` they become).

use crate::error::FieldError;
use crate::time::{Millis, TimeInput};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Longest accepted external id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest accepted title, in bytes.
pub const MAX_TITLE_LEN: usize = 2048;
/// How far in the future an event timestamp may lie (client clock skew).
pub const MAX_CLOCK_SKEW_MS: Millis = 3_600_000;
/// Most categories or tags on one item.
pub const MAX_LABELS: usize = 64;

/// Checks an id field: non-empty, bounded, no control characters.
pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() {
        return Err(FieldError::new("invalid_value", field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            "invalid_value",
            field,
            format!("longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(FieldError::new(
            "invalid_value",
            field,
            "contains control characters",
        ));
    }
    Ok(())
}

fn check_labels(field: &str, labels: &[String]) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            "invalid_value",
            field,
            format!("more than {MAX_LABELS} entries"),
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        check_id(&format!("{field}[{i}]"), l)?;
    }
    Ok(())
}

/// A catalog item. Field names are part of the API contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
    /// Server time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<TimeInput>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub mature: bool,
}

impl Item {
    /// Checks every field and fills `created_at` with `now` when absent.
    pub fn validate(&mut self, now: Millis) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        if self.title.len() > MAX_TITLE_LEN {
            return Err(FieldError::new(
                "invalid_value",
                "title",
                format!("longer than {MAX_TITLE_LEN} bytes"),
            ));
        }
        check_labels("categories", &self.categories)?;
        check_labels("tags", &self.tags)?;
        if let Some(c) = &self.creator_id {
            check_id("creator_id", c)?;
        }
        self.created_at.get_or_insert(TimeInput(now));
        Ok(())
    }
}

/// A partial update of an item: present fields replace, `attributes` merge key by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<TimeInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mature: Option<bool>,
}

impl ItemPatch {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(t) = &self.title
            && t.len() > MAX_TITLE_LEN
        {
            return Err(FieldError::new("invalid_value", "title", "too long"));
        }
        if let Some(c) = &self.categories {
            check_labels("categories", c)?;
        }
        if let Some(t) = &self.tags {
            check_labels("tags", t)?;
        }
        if let Some(c) = &self.creator_id {
            check_id("creator_id", c)?;
        }
        Ok(())
    }

    /// Applies the patch to a full item.
    pub fn apply_to(&self, item: &mut Item) {
        if let Some(v) = &self.title {
            item.title.clone_from(v);
        }
        if let Some(v) = &self.categories {
            item.categories.clone_from(v);
        }
        if let Some(v) = &self.tags {
            item.tags.clone_from(v);
        }
        if let Some(v) = &self.creator_id {
            item.creator_id = Some(v.clone());
        }
        if let Some(v) = self.created_at {
            item.created_at = Some(v);
        }
        if let Some(attrs) = &self.attributes {
            for (k, v) in attrs {
                item.attributes.insert(k.clone(), v.clone());
            }
        }
        if let Some(v) = self.hidden {
            item.hidden = v;
        }
        if let Some(v) = self.mature {
            item.mature = v;
        }
    }
}

/// A user profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Creator ids the user follows.
    #[serde(default)]
    pub follows: Vec<String>,
}

impl User {
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        if self.follows.len() > 10_000 {
            return Err(FieldError::new(
                "invalid_value",
                "follows",
                "more than 10000 creators",
            ));
        }
        for (i, c) in self.follows.iter().enumerate() {
            check_id(&format!("follows[{i}]"), c)?;
        }
        Ok(())
    }
}

/// The kinds of implicit feedback Cascade understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Impression,
    View,
    Click,
    Like,
    Watch,
    Skip,
    Follow,
    Hide,
    Share,
    Purchase,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Impression,
        EventKind::View,
        EventKind::Click,
        EventKind::Like,
        EventKind::Watch,
        EventKind::Skip,
        EventKind::Follow,
        EventKind::Hide,
        EventKind::Share,
        EventKind::Purchase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::Like => "like",
            EventKind::Watch => "watch",
            EventKind::Skip => "skip",
            EventKind::Follow => "follow",
            EventKind::Hide => "hide",
            EventKind::Share => "share",
            EventKind::Purchase => "purchase",
        }
    }

    /// Whether the event means the user consumed or rejected the item, so it should not be
    /// recommended again (impressions and follows do not).
    pub fn is_interaction(self) -> bool {
        !matches!(self, EventKind::Impression | EventKind::Follow)
    }

    /// Whether the event is a positive engagement signal (counts toward popularity and
    /// co-visitation).
    pub fn is_positive(self) -> bool {
        matches!(
            self,
            EventKind::View
                | EventKind::Click
                | EventKind::Like
                | EventKind::Watch
                | EventKind::Share
                | EventKind::Purchase
        )
    }
}

/// An event as posted to `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// Required for `follow` instead of `item_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
    /// Watch: seconds watched; otherwise an optional weight (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Watch: share of the item watched, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Server time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimeInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Impressions: the probability that the serving policy showed this item in this slot
    /// (0 < p <= 1), for off-policy evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propensity: Option<f64>,
    /// Impressions: the experiment and arm that served them, `name:arm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Item(String),
    Creator(String),
}

/// A validated event, as stored in the log. Compact on purpose: it is the highest-volume record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub user_id: String,
    pub target: Target,
    pub value: f32,
    pub fraction: Option<f32>,
    pub ts: Millis,
    pub request_id: Option<String>,
    pub surface: Option<String>,
    pub position: Option<u32>,
    /// Impressions: probability that the policy showed the item in this slot.
    pub propensity: Option<f32>,
    /// Impressions: the experiment and arm that served them, `name:arm`.
    pub experiment: Option<String>,
}

impl EventIn {
    /// Validates and converts to the stored form; `now` stamps events without a timestamp.
    pub fn into_event(self, now: Millis) -> Result<Event, FieldError> {
        check_id("user_id", &self.user_id)?;
        // A follow names a creator; a hide may name one instead of an item.
        let creator_target = self.kind == EventKind::Follow
            || (self.kind == EventKind::Hide
                && self.item_id.is_none()
                && self.creator_id.is_some());
        let target = if creator_target {
            match (self.creator_id, self.item_id) {
                (Some(c), _) => {
                    check_id("creator_id", &c)?;
                    Target::Creator(c)
                }
                (None, _) => {
                    return Err(FieldError::new(
                        "missing_field",
                        "creator_id",
                        "a follow event needs `creator_id`",
                    ));
                }
            }
        } else {
            match self.item_id {
                Some(i) => {
                    check_id("item_id", &i)?;
                    Target::Item(i)
                }
                None => {
                    return Err(FieldError::new(
                        "missing_field",
                        "item_id",
                        format!("a {} event needs `item_id`", self.kind.as_str()),
                    ));
                }
            }
        };
        if let Some(v) = self.value
            && (!v.is_finite() || !(0.0..=1e9).contains(&v))
        {
            return Err(FieldError::new(
                "invalid_value",
                "value",
                "must be a finite number between 0 and 1e9",
            ));
        }
        if let Some(f) = self.fraction
            && !(0.0..=1.0).contains(&f)
        {
            return Err(FieldError::new(
                "invalid_value",
                "fraction",
                "must be within 0..1",
            ));
        }
        if let Some(p) = self.propensity
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(FieldError::new(
                "invalid_value",
                "propensity",
                "must be within (0, 1]",
            ));
        }
        if self.kind == EventKind::Watch && self.value.is_none() && self.fraction.is_none() {
            return Err(FieldError::new(
                "missing_field",
                "value",
                "a watch event needs `value` (seconds watched) or `fraction`",
            ));
        }
        if let Some(t) = self.timestamp
            && t.millis() > now + MAX_CLOCK_SKEW_MS
        {
            return Err(FieldError::new(
                "invalid_value",
                "timestamp",
                "more than one hour in the future",
            ));
        }
        for (name, v) in [
            ("request_id", &self.request_id),
            ("surface", &self.surface),
            ("experiment", &self.experiment),
        ] {
            if let Some(s) = v {
                check_id(name, s)?;
            }
        }
        Ok(Event {
            kind: self.kind,
            user_id: self.user_id,
            target,
            value: self.value.unwrap_or(if self.kind == EventKind::Watch {
                0.0
            } else {
                1.0
            }) as f32,
            fraction: self.fraction.map(|f| f as f32),
            ts: self.timestamp.map_or(now, TimeInput::millis),
            request_id: self.request_id,
            surface: self.surface,
            position: self.position,
            propensity: self.propensity.map(|p| p as f32),
            experiment: self.experiment,
        })
    }
}

/// A curated list managed through `/v1/admin/editorial`: its items are candidates on the
/// targeted surfaces while the list is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditorialList {
    pub id: String,
    /// Shown in explanations ("From our editors: {title}").
    #[serde(default)]
    pub title: String,
    /// Item ids, best first.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<String>,
    /// Surfaces the list applies to; empty means every surface.
    #[serde(default)]
    pub surfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<TimeInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<TimeInput>,
    /// Multiplies the list's retrieval scores (default 1).
    #[serde(default = "one")]
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub boost: f32,
    /// Pins the list's first qualifying item (one that passes every filter, best first) to
    /// this 0-based position of the response, on surfaces whose policy has `pinned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub pin: Option<u32>,
}

fn one() -> f32 {
    1.0
}

impl EditorialList {
    /// Whether the list applies to `surface` at `now`.
    pub fn is_active(&self, surface: &str, now: Millis) -> bool {
        self.starts_at.is_none_or(|t| t.0 <= now)
            && self.ends_at.is_none_or(|t| now < t.0)
            && (self.surfaces.is_empty() || self.surfaces.iter().any(|s| s == surface))
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        if self.title.len() > MAX_TITLE_LEN {
            return Err(FieldError::new("invalid_value", "title", "too long"));
        }
        if self.items.is_empty() || self.items.len() > 1000 {
            return Err(FieldError::new(
                "invalid_value",
                "items",
                "needs 1..=1000 item ids",
            ));
        }
        for (i, id) in self.items.iter().enumerate() {
            check_id(&format!("items[{i}]"), id)?;
        }
        check_labels("surfaces", &self.surfaces)?;
        if let (Some(s), Some(e)) = (self.starts_at, self.ends_at)
            && e.0 <= s.0
        {
            return Err(FieldError::new(
                "invalid_value",
                "ends_at",
                "must be after starts_at",
            ));
        }
        if !self.boost.is_finite() || self.boost <= 0.0 || self.boost > 100.0 {
            return Err(FieldError::new(
                "invalid_value",
                "boost",
                "must be within (0, 100]",
            ));
        }
        Ok(())
    }
}

/// A durable change to Cascade's state: the unit the event log stores and replays.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    UpsertItems(Vec<Item>),
    PatchItem {
        id: String,
        patch: ItemPatch,
    },
    DeleteItem {
        id: String,
    },
    UpsertUsers(Vec<User>),
    UpsertEditorial(EditorialList),
    DeleteEditorial {
        id: String,
    },
    Events(Vec<Event>),
    /// Forgets a user: their per-user state and every event of theirs so far (aggregates
    /// that cannot identify them stay). Log compaction drops their earlier records.
    EraseUser {
        id: String,
    },
    /// Forgets the feedback between one user and one item so far: every event (`kind`
    /// `None`), or the events of one kind (their seen and engaged times stay).
    DeleteFeedback {
        user_id: String,
        item_id: String,
        kind: Option<EventKind>,
    },
}

impl Mutation {
    /// Number of entities the mutation touches.
    pub fn len(&self) -> usize {
        match self {
            Mutation::UpsertItems(v) => v.len(),
            Mutation::UpsertUsers(v) => v.len(),
            Mutation::UpsertEditorial(_) | Mutation::DeleteEditorial { .. } => 1,
            Mutation::Events(v) => v.len(),
            Mutation::PatchItem { .. } | Mutation::DeleteItem { .. } => 1,
            Mutation::EraseUser { .. } | Mutation::DeleteFeedback { .. } => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Result<Event, FieldError> {
        let e: EventIn = serde_json::from_str(json).expect("parse");
        e.into_event(5_000)
    }

    #[test]
    fn event_validation_names_fields() {
        assert_eq!(
            ev(r#"{"type":"click","user_id":"u"}"#).unwrap_err().field,
            "item_id"
        );
        assert_eq!(
            ev(r#"{"type":"follow","user_id":"u"}"#).unwrap_err().field,
            "creator_id"
        );
        assert_eq!(
            ev(r#"{"type":"watch","user_id":"u","item_id":"i","fraction":1.5}"#)
                .unwrap_err()
                .field,
            "fraction"
        );
        assert_eq!(
            ev(r#"{"type":"click","user_id":"","item_id":"i"}"#)
                .unwrap_err()
                .field,
            "user_id"
        );
        let e = ev(r#"{"type":"like","user_id":"u","item_id":"i"}"#).expect("ok");
        assert_eq!(e.ts, 5_000);
        assert_eq!(e.value, 1.0);
        assert!(serde_json::from_str::<EventIn>(r#"{"type":"poke","user_id":"u"}"#).is_err());
    }

    #[test]
    fn item_patch_merges_attributes() {
        let mut item: Item =
            serde_json::from_str(r#"{"id":"a","attributes":{"x":1,"y":2}}"#).expect("item");
        let patch: ItemPatch =
            serde_json::from_str(r#"{"hidden":true,"attributes":{"y":3}}"#).expect("patch");
        patch.apply_to(&mut item);
        assert!(item.hidden);
        assert_eq!(item.attributes["x"], 1);
        assert_eq!(item.attributes["y"], 3);
    }
}
