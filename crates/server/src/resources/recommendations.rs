//! `/v1/recommendations/{surface}`: a surface's pipeline run for one request (GET with a
//! query string, POST with full context), rendered with reasons, explain traces and
//! what degraded.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, query_error};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use cascade_core::TimeInput;
use cascade_core::time::now_millis;
use cascade_pipeline::{PipelineResult, RequestContext};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_recommendations, post_recommendations))
}

/// Context of a recommendation request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextIn {
    pub device: Option<String>,
    pub locale: Option<String>,
    /// "Now" for the whole pipeline (RFC 3339 or Unix seconds); features read only what
    /// happened before it. Defaults to the server clock.
    pub time: Option<TimeInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    pub user_id: String,
    pub n: Option<usize>,
    #[serde(default)]
    pub context: ContextIn,
    #[serde(default)]
    pub session_item_ids: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub explain: bool,
    /// The caller's id for this request (a new one when absent): it attributes the logged
    /// impressions and seeds exploration, so the same id replays the same draws.
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecommendParams {
    /// Required (an `Option` only so that its absence is a 400 naming it).
    #[param(required = true)]
    pub user_id: Option<String>,
    pub n: Option<usize>,
    pub explain: Option<bool>,
    /// RFC 3339 or Unix seconds.
    #[param(
        pattern = r"^([0-9]{1,11}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    pub time: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReasonOut {
    pub code: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecommendedItem {
    pub item_id: String,
    pub rank: usize,
    pub score: f32,
    pub sources: Vec<String>,
    /// The policy rule that gave the item its slot: `ranked`, `pinned`, `exploring`,
    /// `new_item` or `fallback`.
    pub placed_by: String,
    pub reason: ReasonOut,
    /// With `explain=true`: per-source scores and ranks, the seed item and features.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub explain: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExperimentOut {
    pub name: String,
    pub arm: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RemovedItem {
    pub item_id: String,
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Recommendations {
    pub request_id: String,
    pub surface: String,
    pub user_id: String,
    pub model_version: String,
    /// The experiment and arm that served this response (also logged with its impressions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentOut>,
    pub degraded: Vec<String>,
    pub items: Vec<RecommendedItem>,
    pub timings_ms: BTreeMap<String, f64>,
    /// With `explain=true`: candidates removed by filters and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<RemovedItem>>,
}

fn request_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

async fn recommend(
    s: &AppState,
    surface: String,
    body: RecommendBody,
) -> Result<Json<Recommendations>, ApiError> {
    let started = std::time::Instant::now();
    if !s.engine.pipelines.contains_key(&surface) {
        return Err(ApiError::not_found(
            "unknown_surface",
            "surface",
            format!("no surface `{surface}`"),
        ));
    }
    if body.user_id.is_empty() || body.user_id.len() > cascade_core::types::MAX_ID_LEN {
        return Err(ApiError::bad_request(
            "invalid_value",
            "user_id",
            "must be 1..=256 bytes",
        ));
    }
    let max_n = s.config.server.max_n;
    let n = body.n.unwrap_or(20);
    if n == 0 || n > max_n {
        return Err(ApiError::bad_request(
            "invalid_value",
            "n",
            format!("must be within 1..={max_n}"),
        ));
    }
    for (name, list) in [
        ("session_item_ids", &body.session_item_ids),
        ("exclude", &body.exclude),
    ] {
        if list.len() > 1000 {
            return Err(ApiError::bad_request(
                "invalid_value",
                name,
                "at most 1000 ids",
            ));
        }
    }
    let (now, now_from_client) = match body.context.time {
        Some(t) => (t.millis(), true),
        None => (now_millis(), false),
    };
    if let Some(id) = &body.request_id {
        cascade_core::types::check_id("request_id", id).map_err(ApiError::from)?;
    }
    let query = cascade_pipeline::Query {
        request_id: body.request_id.unwrap_or_else(request_id),
        surface: surface.clone(),
        user_id: body.user_id,
        n,
        now,
        now_from_client,
        context: RequestContext {
            device: body.context.device,
            locale: body.context.locale,
        },
        session_item_ids: body.session_item_ids,
        exclude: body.exclude,
        explain: body.explain,
        experiment: None,
    };
    let result = s.engine.serve(&surface, query).await.ok_or_else(|| {
        ApiError::not_found(
            "unknown_surface",
            "surface",
            format!("no surface `{surface}`"),
        )
    })?;
    s.history.recommendation(
        &surface,
        started.elapsed().as_secs_f64() * 1e3,
        &result.timings,
        &result.degraded,
    );
    metrics::counter!("cascade_recommendations_total", "surface" => surface).increment(1);
    Ok(Json(render(&result)))
}

/// Turns the pipeline's result into the API response (item ids, names of sources, reasons).
fn render(r: &PipelineResult) -> Recommendations {
    let q = &r.ctx.query;
    // The ranker's strongest feature contributions per item (explain only): items the
    // ranker scored have a hydrated row; padding does not.
    let attributions: Option<Vec<Option<cascade_ranking::Attribution>>> = q.explain.then(|| {
        let (Some(model), Some(block)) = (r.ctx.models.ranker.as_deref(), r.features.as_ref())
        else {
            return vec![None; r.items.len()];
        };
        let scored: Vec<bool> = r
            .items
            .iter()
            .map(|c| {
                r.trace
                    .iter()
                    .any(|t| t.item == c.item && t.stage == "gbdt")
            })
            .collect();
        let rows: Vec<u32> = r.items.iter().map(|c| c.row).collect();
        match cascade_ranking::attributions(model, block, &rows, 8) {
            Some(a) => a
                .into_iter()
                .zip(scored)
                .map(|(a, s)| s.then_some(a))
                .collect(),
            None => vec![None; r.items.len()],
        }
    });
    let g = r.ctx.state.read();
    let items = r
        .items
        .iter()
        .zip(&r.reasons)
        .enumerate()
        .map(|(i, (c, reason))| {
            let sources: Vec<String> = c.source_slots().filter_map(|s| r.source_names.get(s).cloned()).collect();
            let sources = if sources.is_empty() { vec!["fallback_popular".to_string()] } else { sources };
            let explain = q.explain.then(|| {
                let per_source: serde_json::Map<String, serde_json::Value> = c
                    .source_slots()
                    .filter_map(|s| {
                        let name = r.source_names.get(s)?;
                        Some((name.clone(), serde_json::json!({"score": c.source_scores[s], "rank": c.source_ranks[s]})))
                    })
                    .collect();
                let features: serde_json::Map<String, serde_json::Value> = r
                    .features
                    .as_ref()
                    .filter(|f| (c.row as usize) < f.values.len() / f.schema.len().max(1) && c.sources != 0)
                    .map(|f| {
                        f.schema
                            .defs()
                            .iter()
                            .zip(f.row(c.row))
                            .map(|(d, v)| (d.name.to_string(), serde_json::json!(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let stages: Vec<serde_json::Value> = r
                    .trace
                    .iter()
                    .filter(|t| t.item == c.item)
                    .map(|t| serde_json::json!({"stage": t.stage, "score": t.score, "rank": t.rank, "of": t.of}))
                    .collect();
                let ranker = attributions.as_ref().and_then(|a| a.get(i)).and_then(Option::as_ref).map(|a| {
                    serde_json::json!({
                        "bias": a.bias,
                        "other": a.other,
                        "contributions": a.top.iter().map(|(f, v)| serde_json::json!({"feature": f, "value": v})).collect::<Vec<_>>(),
                    })
                });
                serde_json::json!({
                    "sources": per_source,
                    "seed_item_id": (c.seed != cascade_core::NONE_IDX).then(|| g.item_id(c.seed)),
                    "stages": stages,
                    "ranker": ranker,
                    "filters_passed": r.filters_passed,
                    "placed_by": c.placed.as_str(),
                    "propensity": c.propensity,
                    "features": features,
                })
            });
            RecommendedItem {
                item_id: g.item_id(c.item).to_string(),
                rank: i + 1,
                score: c.score,
                sources,
                placed_by: c.placed.as_str().to_string(),
                reason: ReasonOut { code: reason.code.to_string(), text: reason.text.clone() },
                explain,
            }
        })
        .collect();
    let removed = q.explain.then(|| {
        r.removed
            .iter()
            .map(|(item, by, reason)| RemovedItem {
                item_id: g.item_id(*item).to_string(),
                by: by.clone(),
                reason: (*reason).to_string(),
            })
            .collect()
    });
    Recommendations {
        request_id: q.request_id.clone(),
        surface: q.surface.clone(),
        user_id: q.user_id.clone(),
        model_version: r.model_version().to_string(),
        experiment: q.experiment.as_deref().and_then(|e| {
            let (name, arm) = e.split_once(':')?;
            Some(ExperimentOut {
                name: name.to_string(),
                arm: arm.to_string(),
            })
        }),
        degraded: r.degraded.clone(),
        items,
        timings_ms: r
            .timings
            .iter()
            .map(|&(k, v)| (k.to_string(), (v * 1000.0).round() / 1000.0))
            .collect(),
        removed,
    }
}

/// Recommendations for a user on a surface (query-string form).
#[utoipa::path(get, path = "/v1/recommendations/{surface}", params(("surface" = String, Path), RecommendParams),
    responses((status = 200, body = Recommendations), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_recommendations(
    State(s): State<AppState>,
    Path(surface): Path<String>,
    q: Result<Query<RecommendParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Recommendations>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let user_id = q.user_id.ok_or_else(|| {
        ApiError::bad_request("missing_field", "user_id", "`user_id` is required")
    })?;
    let time = match q.time {
        None => None,
        Some(t) => Some(
            crate::extract::parse::<TimeInput>(
                if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    t.clone()
                } else {
                    format!("\"{t}\"")
                }
                .as_bytes(),
            )
            .map_err(|e| ApiError::bad_request("invalid_value", "time", e.message))?,
        ),
    };
    let body = RecommendBody {
        user_id,
        n: q.n,
        context: ContextIn {
            time,
            ..Default::default()
        },
        session_item_ids: Vec::new(),
        exclude: Vec::new(),
        explain: q.explain.unwrap_or(false),
        request_id: None,
    };
    recommend(&s, surface, body).await
}

/// Recommendations with full context: session items, exclusions, device, locale, time.
#[utoipa::path(post, path = "/v1/recommendations/{surface}", params(("surface" = String, Path)), request_body = RecommendBody,
    responses((status = 200, body = Recommendations), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn post_recommendations(
    State(s): State<AppState>,
    Path(surface): Path<String>,
    JsonBody(body): JsonBody<RecommendBody>,
) -> Result<Json<Recommendations>, ApiError> {
    recommend(&s, surface, body).await
}
