//! `/v1/admin/items/{id}/sources`: which candidate sources can produce an item now, and where
//! it stands in each (the dashboard's item page).

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(item_sources))
}

/// A position in a list (1-based) and the list's length; `rank` absent when not in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Standing {
    pub rank: Option<usize>,
    pub of: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryStanding {
    pub category: String,
    pub rank: Option<usize>,
    pub of: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemSources {
    pub item_id: String,
    pub model_version: String,
    /// `popular`: the global list and each of the item's categories.
    pub popular: Standing,
    pub popular_in_category: Vec<CategoryStanding>,
    pub trending: Standing,
    /// `fresh`: the newest servable items.
    pub fresh: Standing,
    /// `similar`: its co-visitation neighbours (lists are symmetric enough that an item with
    /// neighbours is reached from them).
    pub covisitation_neighbors: usize,
    /// `embedding`: a learned vector, in the ANN index.
    pub embedding: bool,
    pub indexed: bool,
    /// `editorial`: curated lists that hold it.
    pub editorial: Vec<String>,
    /// `follows`: its creator (followers get it from that source).
    pub creator_id: Option<String>,
}

fn standing<T>(list: &[(cascade_core::Idx, T)], idx: cascade_core::Idx) -> Standing {
    Standing {
        rank: list.iter().position(|&(i, _)| i == idx).map(|p| p + 1),
        of: list.len(),
    }
}

/// Which sources can produce the item, from the models serving now.
#[utoipa::path(get, path = "/v1/admin/items/{id}/sources", params(("id" = String, Path)),
    responses((status = 200, body = ItemSources), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn item_sources(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ItemSources>, ApiError> {
    let models = s.engine.env.models.load();
    let g = s.engine.env.state.read();
    let (idx, rec) = g
        .items
        .get(&id)
        .and_then(|i| Some((i, g.item(i)?)))
        .ok_or_else(|| ApiError::not_found("item_not_found", "id", format!("no item `{id}`")))?;
    let p = &models.popular;
    let popular_in_category = rec
        .categories
        .iter()
        .map(|&c| {
            let list = p.by_category.get(c as usize).map_or(&[][..], Vec::as_slice);
            let st = standing(list, idx);
            CategoryStanding {
                category: g.categories.name(c).unwrap_or_default().to_string(),
                rank: st.rank,
                of: st.of,
            }
        })
        .collect();
    let out = ItemSources {
        item_id: id.clone(),
        model_version: models.version.clone(),
        popular: standing(&p.global, idx),
        popular_in_category,
        trending: standing(&p.trending, idx),
        fresh: standing(&p.fresh, idx),
        covisitation_neighbors: models.covis.neighbors(idx).0.len(),
        embedding: models
            .embeddings
            .as_ref()
            .is_some_and(|e| e.item(idx).is_some()),
        indexed: models.ann.as_ref().is_some_and(|a| a.contains(idx)),
        editorial: g
            .editorial
            .values()
            .filter(|l| l.items.contains(&id))
            .map(|l| l.id.clone())
            .collect(),
        creator_id: (rec.creator != cascade_core::NONE_IDX)
            .then(|| g.creators.name(rec.creator).unwrap_or_default().to_string()),
    };
    Ok(Json(out))
}
