//! `/v1/users`: batch upsert of users, read-back (one user, all of them in pages) and a
//! user's feedback, newest first.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::extract::{check_batch, query_error};
use crate::paging::{PageParams, encode};
use crate::resources::items::Upserted;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use cascade_core::time::TimeInput;
use cascade_core::{EventKind, Mutation, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_users, list_users))
        .routes(routes!(get_user, erase_user))
        .routes(routes!(user_events))
        .routes(routes!(delete_feedback))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsersBatch {
    pub users: Vec<User>,
}

/// Upsert a batch of users.
#[utoipa::path(post, path = "/v1/users", request_body = UsersBatch,
    responses((status = 200, body = Upserted), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upsert_users(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<UsersBatch>,
) -> Result<Json<Upserted>, ApiError> {
    check_batch(&s, "users", &b.users)?;
    for (i, u) in b.users.iter().enumerate() {
        u.validate()
            .map_err(|e| ApiError::in_batch("users", i, e))?;
    }
    let n = b.users.len();
    s.engine.commit(Mutation::UpsertUsers(b.users)).await?;
    Ok(Json(Upserted { upserted: n }))
}

/// One user as stored (the shape `POST /v1/users` takes, follows from events included) and
/// what their feedback left.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    pub user: User,
    /// Upserted through the API (`false`: only seen in events).
    pub known: bool,
    /// First interaction (absent before any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<TimeInput>,
    /// Distinct items the user interacted with.
    pub interacted_items: usize,
    pub hidden_items: Vec<String>,
    pub hidden_creators: Vec<String>,
}

/// A page of users in a stable order (the order they were first seen).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<User>,
    /// Pass back as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// One feedback event of a user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedbackOut {
    pub item_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// To the second (the state keeps seconds).
    pub ts: TimeInput,
    /// The weight the event counted with (`features.weights`).
    pub weight: f32,
}

/// A page of a user's feedback, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackPage {
    pub events: Vec<FeedbackOut>,
    pub next_cursor: Option<String>,
    /// How many events of a user the state keeps (`features.history_cap`): the listing
    /// holds at most that many, the newest. Impressions are counted, never listed.
    pub kept: usize,
}

/// `?type=&n=&cursor=` of a user's feedback.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedbackParams {
    /// Only events of this type.
    #[serde(rename = "type")]
    pub kind: Option<EventKind>,
    #[param(minimum = 1, maximum = 1000)]
    pub n: Option<usize>,
    pub cursor: Option<String>,
}

/// Cursor tags of the user listing and of a user's feedback.
const USERS: char = 'u';
const FEEDBACK: char = 'f';

fn user_not_found(id: &str) -> ApiError {
    ApiError::not_found("user_not_found", "id", format!("no user `{id}`"))
}

/// Read a user back: attributes, follows, hidden items and creators.
#[utoipa::path(get, path = "/v1/users/{id}", params(("id" = String, Path)),
    responses((status = 200, body = UserOut), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    let g = s.engine.env.state.read();
    let rec = g.users.get(&id).and_then(|u| g.user_record(u));
    drop(g);
    let r = rec.ok_or_else(|| user_not_found(&id))?;
    Ok(Json(UserOut {
        user: r.user,
        known: r.known,
        first_seen: r.first_seen_ms.map(TimeInput),
        interacted_items: r.interacted_items,
        hidden_items: r.hidden_items,
        hidden_creators: r.hidden_creators,
    }))
}

/// What an erasure or a feedback deletion did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Forgotten {
    pub user_id: String,
    /// The item whose feedback went (a feedback deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// `erased`; `deleted`; or `not_held` when the state held no feedback of the user on the
    /// item (the deletion is still committed: any older record of it in the log goes at the
    /// next compaction).
    pub status: String,
    /// Seconds within which the records go from the local log and its snapshots too (the
    /// next compaction); absent on the `nats` bus, whose stream keeps them by its own limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged_within_s: Option<u64>,
}

fn purge_bound(s: &AppState) -> Option<u64> {
    let c = &s.engine.config;
    (c.bus.backend == cascade_runtime::config::BusBackend::Embedded)
        .then_some(c.storage.compaction_interval_s)
}

/// Erase a user: their attributes, follows, history, seen and hidden items, impressions and
/// feature-store keys go at once; their log records and snapshots at the next compaction.
/// Item aggregates (popularity, counters) keep what they counted, which names no user.
#[utoipa::path(delete, path = "/v1/users/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Forgotten), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn erase_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Forgotten>, ApiError> {
    let known = {
        let g = s.engine.env.state.read();
        g.users.get(&id).is_some_and(|u| g.user_exists(u))
    };
    if !known {
        return Err(user_not_found(&id));
    }
    s.engine
        .commit(Mutation::EraseUser { id: id.clone() })
        .await?;
    Ok(Json(Forgotten {
        user_id: id,
        item_id: None,
        status: "erased".into(),
        purged_within_s: purge_bound(&s),
    }))
}

/// Delete every feedback event of a user on one item (history, seen, impressions, its hide).
/// `404` only for an unknown user: a known user's deletion is always committed, since the log
/// may hold feedback on the item older than what the state keeps (`found` says whether the
/// state held any).
#[utoipa::path(delete, path = "/v1/users/{id}/events/{item_id}",
    params(("id" = String, Path), ("item_id" = String, Path)),
    responses((status = 200, body = Forgotten), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn delete_feedback(
    State(s): State<AppState>,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<Json<Forgotten>, ApiError> {
    let found = {
        let g = s.engine.env.state.read();
        match (g.users.get(&id), g.items.get(&item_id)) {
            (Some(u), Some(i)) => Some(g.user(u).is_some_and(|st| st.has_feedback_on(i))),
            (Some(_), None) => Some(false),
            _ => None,
        }
    };
    let Some(found) = found else {
        return Err(user_not_found(&id));
    };
    s.engine
        .commit(Mutation::DeleteFeedback {
            user_id: id.clone(),
            item_id: item_id.clone(),
            kind: None,
        })
        .await?;
    Ok(Json(Forgotten {
        user_id: id,
        item_id: Some(item_id),
        status: if found { "deleted" } else { "not_held" }.into(),
        purged_within_s: purge_bound(&s),
    }))
}

/// Every user (upserted, or seen in events), a page at a time, in the order they were first
/// seen (stable across restarts).
#[utoipa::path(get, path = "/v1/users", params(PageParams),
    responses((status = 200, body = UsersPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(s): State<AppState>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<UsersPage>, ApiError> {
    let Query(p) = q.map_err(query_error)?;
    let (n, from) = p.resolve(USERS)?;
    let g = s.engine.env.state.read();
    let page = g.users_page(from, n);
    let users = page
        .rows
        .iter()
        .filter_map(|&u| g.user_record(u).map(|r| r.user))
        .collect();
    drop(g);
    Ok(Json(UsersPage {
        users,
        next_cursor: page.next.map(|at| encode(USERS, at)),
    }))
}

/// A user's feedback, newest first (the newest `features.history_cap` events are kept),
/// optionally of one type.
#[utoipa::path(get, path = "/v1/users/{id}/events", params(("id" = String, Path), FeedbackParams),
    responses((status = 200, body = FeedbackPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn user_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<FeedbackParams>, QueryRejection>,
) -> Result<Json<FeedbackPage>, ApiError> {
    let Query(p) = q.map_err(query_error)?;
    if p.kind == Some(EventKind::Impression) {
        return Err(ApiError::bad_request(
            "invalid_value",
            "type",
            "impressions are counted, not listed",
        ));
    }
    let (n, from) = PageParams {
        n: p.n,
        cursor: p.cursor,
    }
    .resolve(FEEDBACK)?;
    let g = s.engine.env.state.read();
    let Some(u) = g.users.get(&id).filter(|&u| g.user_exists(u)) else {
        return Err(user_not_found(&id));
    };
    let page = g.user_feedback(u, p.kind, from, n);
    let kept = g.config.history_cap;
    drop(g);
    Ok(Json(FeedbackPage {
        events: page
            .rows
            .into_iter()
            .map(|f| FeedbackOut {
                item_id: f.item_id,
                kind: f.kind,
                ts: TimeInput(f.ts_ms),
                weight: f.weight,
            })
            .collect(),
        next_cursor: page.next.map(|at| encode(FEEDBACK, at)),
        kept,
    }))
}
