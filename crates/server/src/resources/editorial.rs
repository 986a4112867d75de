//! `/v1/admin/editorial`: curated lists, their schedule, surfaces, boosts and pins.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use cascade_core::{EditorialList, Mutation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_editorial, upsert_editorial))
        .routes(routes!(delete_editorial))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EditorialLists {
    pub lists: Vec<EditorialList>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EditorialChanged {
    pub id: String,
    pub status: String,
}

/// Curated lists (admin key required).
#[utoipa::path(get, path = "/v1/admin/editorial", responses((status = 200, body = EditorialLists)))]
async fn list_editorial(State(s): State<AppState>) -> Json<EditorialLists> {
    let g = s.engine.env.state.read();
    Json(EditorialLists {
        lists: g.editorial.values().cloned().collect(),
    })
}

/// Create or replace a curated list: its items become candidates of the `editorial` source on
/// the targeted surfaces between `starts_at` and `ends_at`.
#[utoipa::path(post, path = "/v1/admin/editorial", request_body = EditorialList,
    responses((status = 200, body = EditorialChanged), (status = 400, body = ErrorBody)))]
async fn upsert_editorial(
    State(s): State<AppState>,
    JsonBody(list): JsonBody<EditorialList>,
) -> Result<Json<EditorialChanged>, ApiError> {
    list.validate()?;
    let id = list.id.clone();
    s.engine.commit(Mutation::UpsertEditorial(list)).await?;
    Ok(Json(EditorialChanged {
        id,
        status: "upserted".into(),
    }))
}

/// Delete a curated list.
#[utoipa::path(delete, path = "/v1/admin/editorial/{id}", params(("id" = String, Path)),
    responses((status = 200, body = EditorialChanged), (status = 404, body = ErrorBody)))]
async fn delete_editorial(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EditorialChanged>, ApiError> {
    if !s.engine.env.state.read().editorial.contains_key(&id) {
        return Err(ApiError::not_found(
            "list_not_found",
            "id",
            format!("no editorial list `{id}`"),
        ));
    }
    s.engine
        .commit(Mutation::DeleteEditorial { id: id.clone() })
        .await?;
    Ok(Json(EditorialChanged {
        id,
        status: "deleted".into(),
    }))
}
