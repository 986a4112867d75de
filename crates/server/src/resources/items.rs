//! `/v1/items`: batch upsert, read-back (one item, or all of them in pages), partial update
//! and deletion of items.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::extract::{check_batch, query_error};
use crate::paging::{PageParams, encode};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use cascade_core::time::now_millis;
use cascade_core::{Item, ItemPatch, Mutation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_items, list_items))
        .routes(routes!(get_item, patch_item, delete_item))
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

/// One item as stored (the shape `POST /v1/items` takes) and its feedback counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemOut {
    pub item: Item,
    /// Impressions, engagements (the positive ones popularity counts), views, clicks, likes,
    /// skips, hides, shares, watches and `watch_fraction` (the sum of watched fractions).
    #[schema(value_type = Object)]
    pub counts: cascade_features::ItemCounts,
}

/// A page of items in a stable order (the order they were first seen).
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsPage {
    pub items: Vec<Item>,
    /// Pass back as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Cursor tag of the item listing.
const ITEMS: char = 'i';

/// Read an item back: its record as stored (hidden and mature items too) and its counts.
#[utoipa::path(get, path = "/v1/items/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ItemOut), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ItemOut>, ApiError> {
    let g = s.engine.env.state.read();
    let found = g
        .items
        .get(&id)
        .and_then(|idx| Some((g.item_record(idx)?, g.item_counts(idx))));
    drop(g);
    match found {
        Some((item, counts)) => Ok(Json(ItemOut { item, counts })),
        None => Err(ApiError::not_found(
            "item_not_found",
            "id",
            format!("no item `{id}`"),
        )),
    }
}

/// Every live item, a page at a time, in the order they were first seen (stable across
/// restarts: the log's order). Deleted items are not listed.
#[utoipa::path(get, path = "/v1/items", params(PageParams),
    responses((status = 200, body = ItemsPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_items(
    State(s): State<AppState>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<ItemsPage>, ApiError> {
    let Query(p) = q.map_err(query_error)?;
    let (n, from) = p.resolve(ITEMS)?;
    let g = s.engine.env.state.read();
    let page = g.items_page(from, n);
    let items = page.rows.iter().filter_map(|&i| g.item_record(i)).collect();
    drop(g);
    Ok(Json(ItemsPage {
        items,
        next_cursor: page.next.map(|at| encode(ITEMS, at)),
    }))
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
