//! `/v1/users`: batch upsert of users.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::extract::check_batch;
use crate::resources::items::Upserted;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use cascade_core::{Mutation, User};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upsert_users))
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
