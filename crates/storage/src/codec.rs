//! Binary encoding of one [`Mutation`] as a log record payload.
//!
//! Events, the high-volume record, use postcard (compact, no field names). Catalog and user
//! records carry free-form JSON attributes, so they stay JSON: postcard cannot carry a
//! self-describing `serde_json::Value`.

use crate::{Result, StorageError};
use cascade_core::{EditorialList, Event, Item, ItemPatch, Mutation, User};
use serde::{Deserialize, Serialize};

/// Events before impressions carried a propensity; still read, never written.
const EVENTS_V1: u8 = 1;
/// Events before impressions carried an experiment arm; still read, never written.
const EVENTS_V2: u8 = 8;
const EVENTS_V3: u8 = 9;
const UPSERT_ITEMS_V1: u8 = 2;
const PATCH_ITEM_V1: u8 = 3;
const DELETE_ITEM_V1: u8 = 4;
const UPSERT_USERS_V1: u8 = 5;
const UPSERT_EDITORIAL_V1: u8 = 6;
const DELETE_EDITORIAL_V1: u8 = 7;
const ERASE_USER_V1: u8 = 10;
const DELETE_FEEDBACK_V1: u8 = 11;

/// The event layout written under [`EVENTS_V1`].
#[derive(Serialize, Deserialize)]
struct EventV1 {
    kind: cascade_core::EventKind,
    user_id: String,
    target: cascade_core::Target,
    value: f32,
    fraction: Option<f32>,
    ts: cascade_core::Millis,
    request_id: Option<String>,
    surface: Option<String>,
    position: Option<u32>,
}

/// The event layout written under [`EVENTS_V2`].
#[derive(Serialize, Deserialize)]
struct EventV2 {
    v1: EventV1,
    propensity: Option<f32>,
}

impl From<EventV2> for Event {
    fn from(e: EventV2) -> Self {
        let mut out = Event::from(e.v1);
        out.propensity = e.propensity;
        out
    }
}

impl From<EventV1> for Event {
    fn from(e: EventV1) -> Self {
        Event {
            kind: e.kind,
            user_id: e.user_id,
            target: e.target,
            value: e.value,
            fraction: e.fraction,
            ts: e.ts,
            request_id: e.request_id,
            surface: e.surface,
            position: e.position,
            propensity: None,
            experiment: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct UserItem {
    user_id: String,
    item_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<cascade_core::EventKind>,
}

#[derive(Serialize, Deserialize)]
struct Patch {
    id: String,
    patch: ItemPatch,
}

fn json<T: Serialize>(kind: u8, v: &T, out: &mut Vec<u8>) -> Result<()> {
    out.push(kind);
    serde_json::to_writer(&mut *out, v).map_err(|e| StorageError::Encode(e.to_string()))
}

/// Appends `m`, encoded, to `out` (the log's record payload; also the bus message body).
pub fn encode(m: &Mutation, out: &mut Vec<u8>) -> Result<()> {
    match m {
        Mutation::Events(evs) => {
            out.push(EVENTS_V3);
            let bytes = postcard::to_extend(evs, std::mem::take(out))
                .map_err(|e| StorageError::Encode(e.to_string()))?;
            *out = bytes;
            Ok(())
        }
        Mutation::UpsertItems(items) => json(UPSERT_ITEMS_V1, items, out),
        Mutation::PatchItem { id, patch } => json(
            PATCH_ITEM_V1,
            &Patch {
                id: id.clone(),
                patch: patch.clone(),
            },
            out,
        ),
        Mutation::DeleteItem { id } => json(DELETE_ITEM_V1, id, out),
        Mutation::UpsertEditorial(list) => json(UPSERT_EDITORIAL_V1, list, out),
        Mutation::DeleteEditorial { id } => json(DELETE_EDITORIAL_V1, id, out),
        Mutation::UpsertUsers(users) => json(UPSERT_USERS_V1, users, out),
        Mutation::EraseUser { id } => json(ERASE_USER_V1, id, out),
        Mutation::DeleteFeedback {
            user_id,
            item_id,
            kind,
        } => json(
            DELETE_FEEDBACK_V1,
            &UserItem {
                user_id: user_id.clone(),
                item_id: item_id.clone(),
                kind: *kind,
            },
            out,
        ),
    }
}

/// Whether a record kind byte is an events batch (any version).
pub(crate) fn is_events(kind: u8) -> bool {
    matches!(kind, EVENTS_V1 | EVENTS_V2 | EVENTS_V3)
}

/// Whether a payload is a user erasure or a feedback deletion (read from its kind byte).
pub(crate) fn is_erasure(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(&(ERASE_USER_V1 | DELETE_FEEDBACK_V1)))
}

/// Decodes one payload; an error here means a record with a valid checksum that this
/// version cannot read, which is never silently skipped. Also the bus message body.
pub fn decode(payload: &[u8]) -> std::result::Result<Mutation, String> {
    let (&kind, body) = payload.split_first().ok_or("empty record")?;
    let m = match kind {
        EVENTS_V3 => {
            Mutation::Events(postcard::from_bytes::<Vec<Event>>(body).map_err(|e| e.to_string())?)
        }
        EVENTS_V2 => Mutation::Events(
            postcard::from_bytes::<Vec<EventV2>>(body)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(Event::from)
                .collect(),
        ),
        EVENTS_V1 => Mutation::Events(
            postcard::from_bytes::<Vec<EventV1>>(body)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(Event::from)
                .collect(),
        ),
        UPSERT_ITEMS_V1 => Mutation::UpsertItems(
            serde_json::from_slice::<Vec<Item>>(body).map_err(|e| e.to_string())?,
        ),
        PATCH_ITEM_V1 => {
            let p: Patch = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            Mutation::PatchItem {
                id: p.id,
                patch: p.patch,
            }
        }
        DELETE_ITEM_V1 => Mutation::DeleteItem {
            id: serde_json::from_slice(body).map_err(|e| e.to_string())?,
        },
        UPSERT_USERS_V1 => Mutation::UpsertUsers(
            serde_json::from_slice::<Vec<User>>(body).map_err(|e| e.to_string())?,
        ),
        UPSERT_EDITORIAL_V1 => Mutation::UpsertEditorial(
            serde_json::from_slice::<EditorialList>(body).map_err(|e| e.to_string())?,
        ),
        DELETE_EDITORIAL_V1 => Mutation::DeleteEditorial {
            id: serde_json::from_slice(body).map_err(|e| e.to_string())?,
        },
        ERASE_USER_V1 => Mutation::EraseUser {
            id: serde_json::from_slice(body).map_err(|e| e.to_string())?,
        },
        DELETE_FEEDBACK_V1 => {
            let p: UserItem = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            Mutation::DeleteFeedback {
                user_id: p.user_id,
                item_id: p.item_id,
                kind: p.kind,
            }
        }
        k => return Err(format!("unknown record kind {k}")),
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{EventKind, Target};

    fn v1() -> EventV1 {
        EventV1 {
            kind: EventKind::Impression,
            user_id: "u1".into(),
            target: Target::Item("i9".into()),
            value: 1.0,
            fraction: None,
            ts: 1_700_000_000_000,
            request_id: Some("r1".into()),
            surface: Some("home".into()),
            position: Some(3),
        }
    }

    #[test]
    fn events_written_before_propensities_still_decode() {
        let mut payload = vec![EVENTS_V1];
        payload.extend(postcard::to_allocvec(&vec![v1()]).expect("encode"));
        let Mutation::Events(evs) = decode(&payload).expect("decode") else {
            panic!("not events");
        };
        assert_eq!(evs, vec![Event::from(v1())]);
        assert_eq!(evs[0].position, Some(3));
        assert_eq!(evs[0].propensity, None);
    }

    #[test]
    fn events_written_before_experiment_arms_still_decode() {
        let mut payload = vec![EVENTS_V2];
        let v2 = EventV2 {
            v1: v1(),
            propensity: Some(0.5),
        };
        payload.extend(postcard::to_allocvec(&vec![v2]).expect("encode"));
        let Mutation::Events(evs) = decode(&payload).expect("decode") else {
            panic!("not events");
        };
        assert_eq!(evs[0].propensity, Some(0.5));
        assert_eq!(evs[0].experiment, None);
        assert_eq!(evs[0].position, Some(3));
    }

    #[test]
    fn erasures_round_trip() {
        for m in [
            Mutation::EraseUser { id: "ana".into() },
            Mutation::DeleteFeedback {
                user_id: "ana".into(),
                item_id: "up".into(),
                kind: None,
            },
            Mutation::DeleteFeedback {
                user_id: "ana".into(),
                item_id: "up".into(),
                kind: Some(cascade_core::EventKind::Like),
            },
        ] {
            let mut out = Vec::new();
            encode(&m, &mut out).expect("encode");
            assert_eq!(decode(&out).expect("decode"), m);
        }
    }

    #[test]
    fn propensity_round_trips() {
        let mut e = Event::from(v1());
        e.propensity = Some(0.25);
        e.experiment = Some("ranker-v2:treatment".into());
        let mut out = Vec::new();
        encode(&Mutation::Events(vec![e.clone()]), &mut out).expect("encode");
        assert_eq!(out[0], EVENTS_V3);
        let Mutation::Events(evs) = decode(&out).expect("decode") else {
            panic!("not events");
        };
        assert_eq!(evs, vec![e]);
    }
}
