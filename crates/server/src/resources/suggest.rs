//! `/v1/suggest`: instant suggestions while the user types — titles (any word of them),
//! categories, creators and curated lists, typo-tolerant, never what the feed would not show.

use crate::error::{ApiError, ErrorBody};
use crate::extract::query_error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use cascade_runtime::suggest::{SuggestQuery, Suggestion};
use cascade_suggest::Kind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(suggest))
}

/// Longest query accepted, in characters.
const MAX_QUERY_CHARS: usize = 200;
/// Most suggestions one query returns.
const MAX_N: usize = 50;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SuggestParams {
    /// What the user typed so far (1 to 200 characters).
    #[param(min_length = 1, max_length = 200, pattern = r"\S")]
    pub q: String,
    /// Suggestions wanted (1 to 50; default 10).
    #[param(minimum = 1, maximum = 50)]
    pub n: Option<usize>,
    /// Comma-separated kinds among `item`, `category`, `creator`, `collection` (default all).
    #[param(
        pattern = r"^(item|category|creator|collection)(,(item|category|creator|collection))*$"
    )]
    pub kinds: Option<String>,
    /// Personalizes the order and applies the user's hides and mature setting.
    pub user_id: Option<String>,
    /// Applies this surface's blocklist too.
    pub surface: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suggestions {
    /// Best first.
    pub suggestions: Vec<Suggestion>,
}

/// Suggestions for a prefix: every word of a title is indexed, the last word of the query
/// matches as a prefix, typos are tolerated (one from 4 characters, two from 8), and exact
/// matches rank above prefixes, prefixes above fuzzy matches.
#[utoipa::path(get, path = "/v1/suggest", params(SuggestParams),
    responses((status = 200, body = Suggestions), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn suggest(
    State(s): State<AppState>,
    q: Result<Query<SuggestParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Suggestions>, ApiError> {
    let Query(p) = q.map_err(query_error)?;
    let chars = p.q.chars().count();
    if p.q.trim().is_empty() || chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "invalid_value",
            "q",
            format!("must hold 1..={MAX_QUERY_CHARS} characters, not only spaces"),
        ));
    }
    let n = p.n.unwrap_or(10);
    if n == 0 || n > MAX_N {
        return Err(ApiError::bad_request(
            "invalid_value",
            "n",
            format!("must be within 1..={MAX_N}"),
        ));
    }
    let kinds = match p.kinds.as_deref() {
        None | Some("") => Kind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|k| {
                Kind::parse(k.trim()).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_value",
                        "kinds",
                        format!("`{k}` is not one of item, category, creator, collection"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let blocklist = match p.surface.as_deref() {
        None => None,
        Some(name) => Some(
            s.engine
                .config
                .surfaces
                .get(name)
                .ok_or_else(|| {
                    ApiError::not_found("unknown_surface", "surface", "no such surface")
                })?
                .blocklist
                .clone(),
        ),
    };
    let query = SuggestQuery {
        q: p.q,
        n,
        kinds,
        user_id: p.user_id,
        blocklist,
    };
    // The search is CPU work: on the pool, not on the async runtime.
    let engine = s.engine.clone();
    let suggestions = s
        .engine
        .env
        .pool
        .run(move || engine.suggest(&query))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "suggestion query failed");
            ApiError::internal("internal error")
        })?;
    Ok(Json(Suggestions { suggestions }))
}
