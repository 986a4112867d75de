//! `/v1/items/{id}/similar`: the items engaged with next to this one.

use crate::error::{ApiError, ErrorBody};
use crate::extract::query_error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(similar_items))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SimilarParams {
    pub n: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SimilarItem {
    pub item_id: String,
    pub score: f32,
    pub title: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SimilarItems {
    pub item_id: String,
    pub model_version: String,
    pub items: Vec<SimilarItem>,
}

/// Items most often engaged with right after or before this one.
#[utoipa::path(get, path = "/v1/items/{id}/similar", params(("id" = String, Path), SimilarParams),
    responses((status = 200, body = SimilarItems), (status = 404, body = ErrorBody)))]
async fn similar_items(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<SimilarParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SimilarItems>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let max_n = s.config.server.max_n;
    let n = q.n.unwrap_or(10);
    if n == 0 || n > max_n {
        return Err(ApiError::bad_request(
            "invalid_value",
            "n",
            format!("must be within 1..={max_n}"),
        ));
    }
    let models = s.engine.env.models.load();
    let g = s.engine.env.state.read();
    let idx = g
        .items
        .get(&id)
        .filter(|&i| g.item(i).is_some())
        .ok_or_else(|| ApiError::not_found("item_not_found", "id", format!("no item `{id}`")))?;
    let (nb, ws) = models.covis.neighbors(idx);
    let items = nb
        .iter()
        .zip(ws)
        .filter(|&(&b, _)| g.item(b).is_some_and(|r| !r.hidden && !r.mature))
        .take(n)
        .map(|(&b, &w)| SimilarItem {
            item_id: g.item_id(b).to_string(),
            score: w,
            title: g.item(b).map(|r| r.title.to_string()).unwrap_or_default(),
        })
        .collect();
    Ok(Json(SimilarItems {
        item_id: id,
        model_version: models.version.clone(),
        items,
    }))
}
