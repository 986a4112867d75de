//! Gorse's feedback: `POST /api/feedback` (accumulate), `PUT /api/feedback` (overwrite),
//! `GET /api/feedback?n&cursor`, `GET /api/user/{id}/feedback[/{type}]`,
//! `DELETE /api/feedback/{user}/{item}`.
//!
//! Gorse keeps one record per (type, user, item); Cascade keeps events. A Gorse record is the
//! user's kept events (`features.history_cap`, newest) of one kind on one item: `Value` their
//! summed values (as Cascade counts them: a value of 0 or less counts 1), `Timestamp` the
//! first, `Updated` the last. POST adds events (values accumulate, the first time stays); PUT
//! first forgets that kind on that item (`DeleteFeedback` with its kind), so the new event
//! is the whole record. Records time-stamped after now are not listed yet, as in Gorse.

use super::{Params, both, format_time, kind_of, name_of, parse_time, records, rows, unknown_type};
use crate::error::ApiError;
use crate::extract::{JsonBody, check_batch};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cascade_core::time::now_millis;
use cascade_core::types::check_id;
use cascade_core::{Event, EventKind, Idx, Millis, Mutation, Target};
use cascade_features::state::Inner;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(super) fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = both(
        r,
        "/api/feedback",
        post(insert_accumulate).put(insert_overwrite).get(list_all),
    );
    let r = both(r, "/api/feedback/{user_id}/{item_id}", delete(delete_pair));
    let r = both(r, "/api/user/{id}/feedback", get(list_user));
    both(r, "/api/user/{id}/feedback/{expr}", get(list_user_typed))
}

/// A Gorse feedback as given (keys lower-cased).
#[derive(Debug, Deserialize)]
pub(super) struct FeedbackIn {
    pub feedbacktype: String,
    pub userid: String,
    pub itemid: String,
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// A Gorse feedback record as answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct FeedbackOut {
    feedback_type: String,
    user_id: String,
    item_id: String,
    value: f64,
    timestamp: String,
    updated: String,
    comment: String,
}

/// The events a batch of Gorse feedback stands for, validated (fields named by index), the
/// first of each (type, user, item) kept as Gorse does.
pub(super) fn to_events(
    s: &AppState,
    list: Vec<FeedbackIn>,
    now: Millis,
) -> Result<Vec<Event>, ApiError> {
    let cfg = &s.config.gorse;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, f) in list.into_iter().enumerate() {
        let at = |k: &str| format!("feedback[{i}].{k}");
        let kind = kind_of(cfg, &f.feedbacktype)
            .ok_or_else(|| unknown_type(&at("FeedbackType"), &f.feedbacktype))?;
        check_id(&at("UserId"), &f.userid).map_err(ApiError::from)?;
        check_id(&at("ItemId"), &f.itemid).map_err(ApiError::from)?;
        // The bound of v1's `value`, so no value overflows the weights.
        if !f.value.is_finite() || f.value.abs() > 1e9 {
            return Err(ApiError::bad_request(
                "invalid_value",
                at("Value"),
                "must be a finite number within ±1e9",
            ));
        }
        let ts = match f.timestamp.as_deref() {
            Some(t) => parse_time(t)
                .map_err(|m| ApiError::bad_request("invalid_value", at("Timestamp"), m))?,
            None => None,
        };
        if !seen.insert((kind, f.userid.clone(), f.itemid.clone())) {
            continue;
        }
        out.push(Event {
            kind,
            user_id: f.userid,
            target: Target::Item(f.itemid),
            value: f.value as f32,
            fraction: None,
            // Gorse's zero time (no timestamp) is "now" in Cascade, which has no such time.
            ts: ts.unwrap_or(now),
            request_id: None,
            surface: None,
            position: None,
            propensity: None,
            experiment: None,
        });
    }
    Ok(out)
}

async fn insert(s: &AppState, v: Value, overwrite: bool) -> Result<Json<super::Success>, ApiError> {
    let list: Vec<FeedbackIn> = records("feedback", v)?;
    check_batch(s, "feedback", &list)?;
    let n = list.len();
    let events = to_events(s, list, now_millis())?;
    if events.is_empty() {
        return Ok(rows(n));
    }
    // An overwrite is its deletions and the new events in one commit: never the old feedback
    // gone without the new.
    let mut ms: Vec<Mutation> = Vec::new();
    if overwrite {
        ms.extend(events.iter().filter_map(|e| match &e.target {
            Target::Item(item) => Some(Mutation::DeleteFeedback {
                user_id: e.user_id.clone(),
                item_id: item.clone(),
                kind: Some(e.kind),
            }),
            Target::Creator(_) => None,
        }));
    }
    ms.push(Mutation::Events(events));
    s.engine.commit_all(ms).await?;
    Ok(rows(n))
}

async fn insert_accumulate(
    State(s): State<AppState>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    insert(&s, v, false).await
}

async fn insert_overwrite(
    State(s): State<AppState>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    insert(&s, v, true).await
}

/// One Gorse record in the making: one kind of feedback on one item.
struct Group {
    kind: EventKind,
    item: Idx,
    value: f64,
    /// Seconds of the first and the last event.
    first: u32,
    last: u32,
}

/// The Gorse records of user `u` as of `now`, in the order first given.
fn records_of(
    g: &Inner,
    cfg: &crate::config::GorseSection,
    u: Idx,
    now: Millis,
) -> Vec<FeedbackOut> {
    let Some(st) = g.user(u) else {
        return Vec::new();
    };
    let now_s = now.div_euclid(1000);
    let mut groups: Vec<Group> = Vec::new();
    for x in st.history.iter().filter(|x| i64::from(x.ts_s) <= now_s) {
        let base = g.config.weights.weight(x.kind, 1.0, None);
        let value = if base > 0.0 {
            f64::from(x.weight / base)
        } else {
            1.0
        };
        match groups
            .iter_mut()
            .find(|r| (r.kind, r.item) == (x.kind, x.item))
        {
            Some(r) => {
                r.value += value;
                r.first = r.first.min(x.ts_s);
                r.last = r.last.max(x.ts_s);
            }
            None => groups.push(Group {
                kind: x.kind,
                item: x.item,
                value,
                first: x.ts_s,
                last: x.ts_s,
            }),
        }
    }
    let user_id = g.users.name(u).unwrap_or_default().to_string();
    groups
        .into_iter()
        .map(|r| FeedbackOut {
            feedback_type: name_of(cfg, r.kind),
            user_id: user_id.clone(),
            item_id: g.item_id(r.item).to_string(),
            value: r.value,
            timestamp: format_time(Some(i64::from(r.first) * 1000)),
            updated: format_time(Some(i64::from(r.last) * 1000)),
            comment: String::new(),
        })
        .collect()
}

async fn list_user(State(s): State<AppState>, Path(id): Path<String>) -> Json<Vec<FeedbackOut>> {
    let g = s.engine.env.state.read();
    let out = g
        .users
        .get(&id)
        .map(|u| records_of(&g, &s.config.gorse, u, now_millis()))
        .unwrap_or_default();
    Json(out)
}

/// `type`, or `type` compared with a value: `star>3`, `like<=1`, `read=2`.
fn parse_expr(expr: &str) -> Option<(&str, Option<(&str, f64)>)> {
    for op in ["<=", ">=", "<", ">", "="] {
        if let Some((t, v)) = expr.split_once(op) {
            return Some((t, Some((op, v.trim().parse().ok()?))));
        }
    }
    Some((expr, None))
}

async fn list_user_typed(
    State(s): State<AppState>,
    Path((id, expr)): Path<(String, String)>,
) -> Result<Json<Vec<FeedbackOut>>, ApiError> {
    let (t, cmp) = parse_expr(&expr).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_value",
            "type",
            format!("`{expr}` is not `type[<|<=|>|>=|=]value`"),
        )
    })?;
    let cfg = &s.config.gorse;
    let kind = kind_of(cfg, t).ok_or_else(|| unknown_type("type", t))?;
    let g = s.engine.env.state.read();
    let all = g
        .users
        .get(&id)
        .map(|u| records_of(&g, cfg, u, now_millis()))
        .unwrap_or_default();
    drop(g);
    let name = name_of(cfg, kind);
    let out = all
        .into_iter()
        .filter(|r| r.feedback_type == name)
        .filter(|r| match cmp {
            None => true,
            Some(("<=", v)) => r.value <= v,
            Some((">=", v)) => r.value >= v,
            Some(("<", v)) => r.value < v,
            Some((">", v)) => r.value > v,
            Some((_, v)) => r.value == v,
        })
        // A type of a list answers with the name it was asked by.
        .map(|mut r| {
            r.feedback_type = t.to_string();
            r
        })
        .collect();
    Ok(Json(out))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct FeedbackPage {
    cursor: String,
    feedback: Vec<FeedbackOut>,
}

/// Cursor tag of Gorse's feedback listing; the position is `user << 24 | record`.
const FEEDBACK: char = 'F';
const RECORD_BITS: u32 = 24;

/// Every user's records, users in the order first seen, a page at a time.
async fn list_all(State(s): State<AppState>, p: Params) -> Result<Json<FeedbackPage>, ApiError> {
    let (n, at) = (p.page_n()?, p.cursor(FEEDBACK)?);
    let (mut u, mut k) = (at >> RECORD_BITS, (at & ((1 << RECORD_BITS) - 1)) as usize);
    let now = now_millis();
    let g = s.engine.env.state.read();
    let users = g.users.len() as u64;
    let mut out = Vec::with_capacity(n);
    let mut next = None;
    while u < users {
        let recs = records_of(&g, &s.config.gorse, u as Idx, now);
        for r in recs.into_iter().skip(k) {
            if out.len() == n {
                next = Some((u << RECORD_BITS) | k as u64);
                break;
            }
            out.push(r);
            k += 1;
        }
        if next.is_some() {
            break;
        }
        u += 1;
        k = 0;
    }
    drop(g);
    Ok(Json(FeedbackPage {
        cursor: next
            .map(|at| crate::paging::encode(FEEDBACK, at))
            .unwrap_or_default(),
        feedback: out,
    }))
}

/// Forgets every type of feedback between the two; `RowAffected` counts the records that went.
async fn delete_pair(
    State(s): State<AppState>,
    Path((user_id, item_id)): Path<(String, String)>,
) -> Result<Json<super::Success>, ApiError> {
    let (known, n) = {
        let g = s.engine.env.state.read();
        let n = g.users.get(&user_id).map(|u| {
            records_of(&g, &s.config.gorse, u, Millis::MAX)
                .iter()
                .filter(|r| r.item_id == item_id)
                .count()
        });
        (n.is_some(), n.unwrap_or(0))
    };
    // Committed whatever the count: the state's history is capped, the log may still hold
    // older feedback on the pair, which the deletion purges at the next compaction.
    if known {
        s.engine
            .commit(Mutation::DeleteFeedback {
                user_id,
                item_id,
                kind: None,
            })
            .await?;
    }
    Ok(rows(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_expressions_parse() {
        assert_eq!(parse_expr("star"), Some(("star", None)));
        assert_eq!(parse_expr("star>=3"), Some(("star", Some((">=", 3.0)))));
        assert_eq!(parse_expr("like<1.5"), Some(("like", Some(("<", 1.5)))));
        assert_eq!(parse_expr("like<x"), None);
    }
}
