//! Gorse's users: `POST /api/user`, `POST /api/users`, `GET|DELETE /api/user/{id}`,
//! `GET /api/users?n&cursor`. `Labels` and `Comment` live in the user's attributes (`labels`,
//! `comment`); follows and other attributes set through v1 are kept.

use super::{Params, both, check_labels, record, records, rows};
use crate::error::ApiError;
use crate::extract::{JsonBody, check_batch};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cascade_core::{Mutation, User};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(super) fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = both(r, "/api/user", post(insert_user));
    let r = both(r, "/api/users", post(insert_users).get(list_users));
    both(r, "/api/user/{id}", get(get_user).delete(delete_user))
}

/// A Gorse user as given (keys lower-cased).
#[derive(Debug, Deserialize)]
struct UserIn {
    userid: String,
    #[serde(default)]
    labels: Value,
    #[serde(default)]
    comment: Option<String>,
}

/// A Gorse user as answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UserOut {
    user_id: String,
    labels: Value,
    comment: String,
}

/// The Cascade user a Gorse one stands for: the stored user's follows and other attributes,
/// with `labels` and `comment` replaced.
fn to_user(s: &AppState, u: UserIn, field: &str) -> Result<User, ApiError> {
    check_labels(&format!("{field}.Labels"), &u.labels)?;
    let (mut attributes, follows) = {
        let g = s.engine.env.state.read();
        g.users
            .get(&u.userid)
            .and_then(|i| g.user_record(i))
            .map(|r| (r.user.attributes, r.user.follows))
            .unwrap_or_default()
    };
    for (k, v) in [
        ("labels", u.labels),
        ("comment", u.comment.map_or(Value::Null, Value::String)),
    ] {
        if v.is_null() {
            attributes.remove(k);
        } else {
            attributes.insert(k.to_string(), v);
        }
    }
    let user = User {
        id: u.userid,
        attributes,
        follows,
    };
    user.validate().map_err(ApiError::from)?;
    Ok(user)
}

fn from_user(u: User) -> UserOut {
    let attr = |m: &Map<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    UserOut {
        labels: attr(&u.attributes, "labels"),
        comment: attr(&u.attributes, "comment")
            .as_str()
            .unwrap_or_default()
            .to_string(),
        user_id: u.id,
    }
}

async fn insert_user(
    State(s): State<AppState>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    let u = to_user(&s, record("user", None, v)?, "user")?;
    s.engine.commit(Mutation::UpsertUsers(vec![u])).await?;
    Ok(rows(1))
}

async fn insert_users(
    State(s): State<AppState>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    let list: Vec<UserIn> = records("users", v)?;
    check_batch(&s, "users", &list)?;
    let users = list
        .into_iter()
        .enumerate()
        .map(|(i, u)| to_user(&s, u, &format!("users[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = users.len();
    s.engine.commit(Mutation::UpsertUsers(users)).await?;
    Ok(rows(n))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("user_not_found", "id", format!("user {id} not found"))
}

async fn get_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    let g = s.engine.env.state.read();
    let rec = g.users.get(&id).and_then(|u| g.user_record(u));
    drop(g);
    rec.map(|r| Json(from_user(r.user)))
        .ok_or_else(|| not_found(&id))
}

/// Gorse deletes a user and their feedback: Cascade erases them (see `DELETE /v1/users/{id}`).
/// `{"RowAffected": 1}` whether or not they existed, as Gorse answers.
async fn delete_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<super::Success>, ApiError> {
    let exists = {
        let g = s.engine.env.state.read();
        g.users.get(&id).is_some_and(|u| g.user_exists(u))
    };
    if exists {
        s.engine.commit(Mutation::EraseUser { id }).await?;
    }
    Ok(rows(1))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UsersPage {
    cursor: String,
    users: Vec<UserOut>,
}

/// Cursor tag of Gorse's user listing.
const USERS: char = 'U';

async fn list_users(State(s): State<AppState>, p: Params) -> Result<Json<UsersPage>, ApiError> {
    let (n, from) = (p.page_n()?, p.cursor(USERS)?);
    let g = s.engine.env.state.read();
    let page = g.users_page(from, n);
    let users = page
        .rows
        .iter()
        .filter_map(|&u| g.user_record(u).map(|r| from_user(r.user)))
        .collect();
    drop(g);
    Ok(Json(UsersPage {
        cursor: page
            .next
            .map(|at| crate::paging::encode(USERS, at))
            .unwrap_or_default(),
        users,
    }))
}
