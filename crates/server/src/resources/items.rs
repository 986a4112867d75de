//! `/v1/items`: batch upsert, partial update and deletion of items.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::extract::check_batch;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use cascade_core::time::now_millis;
use cascade_core::{Item, ItemPatch, Mutation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_items))
        .routes(routes!(patch_item, delete_item))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemsBatch {
    pub items: Vec<Item>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Upserted {
    pub upserted: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemChanged {
    pub item_id: String,
    pub status: String,
}

/// Upsert a batch of items. A batch with any invalid item is rejected whole.
#[utoipa::path(post, path = "/v1/items", request_body = ItemsBatch,
    responses((status = 200, body = Upserted), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upsert_items(
    State(s): State<AppState>,
    JsonBody(mut b): JsonBody<ItemsBatch>,
) -> Result<Json<Upserted>, ApiError> {
    check_batch(&s, "items", &b.items)?;
    let now = now_millis();
    for (i, it) in b.items.iter_mut().enumerate() {
        it.validate(now)
            .map_err(|e| ApiError::in_batch("items", i, e))?;
    }
    let n = b.items.len();
    s.engine.commit(Mutation::UpsertItems(b.items)).await?;
    Ok(Json(Upserted { upserted: n }))
}

fn require_item(s: &AppState, id: &str) -> Result<(), ApiError> {
    let g = s.engine.env.state.read();
    match g.items.get(id) {
        Some(idx) if g.item(idx).is_some() => Ok(()),
        _ => Err(ApiError::not_found(
            "item_not_found",
            "id",
            format!("no item `{id}`"),
        )),
    }
}

/// Update some fields of an item; `attributes` merge key by key.
#[utoipa::path(patch, path = "/v1/items/{id}", request_body = ItemPatch, params(("id" = String, Path)),
    responses((status = 200, body = ItemChanged), (status = 404, body = ErrorBody)))]
async fn patch_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<ItemPatch>,
) -> Result<Json<ItemChanged>, ApiError> {
    patch.validate()?;
    require_item(&s, &id)?;
    s.engine
        .commit(Mutation::PatchItem {
            id: id.clone(),
            patch,
        })
        .await?;
    Ok(Json(ItemChanged {
        item_id: id,
        status: "updated".into(),
    }))
}

/// Delete an item: it is never recommended again.
#[utoipa::path(delete, path = "/v1/items/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ItemChanged), (status = 404, body = ErrorBody)))]
async fn delete_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ItemChanged>, ApiError> {
    require_item(&s, &id)?;
    s.engine
        .commit(Mutation::DeleteItem { id: id.clone() })
        .await?;
    Ok(Json(ItemChanged {
        item_id: id,
        status: "deleted".into(),
    }))
}
