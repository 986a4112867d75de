//! HTTP API v1: routes, request/response types, auth, and the OpenAPI document.

use crate::engine::Engine;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::observe;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cascade_core::{
    EditorialList, EventIn, Item, ItemPatch, Mutation, TimeInput, User, time::now_millis,
};
use cascade_pipeline::{PipelineResult, RequestContext};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// In-flight requests per route group; read by `/readyz`.
    pub reads: Arc<tokio::sync::Semaphore>,
}

/// Sheds load: a request that finds its route group's permits all taken gets 503 with
/// `Retry-After` at once, instead of queueing into a timeout.
async fn shed(
    State(limit): State<Arc<tokio::sync::Semaphore>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match limit.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            metrics::counter!("cascade_shed_total").increment(1);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight; retry shortly",
            )
            .into_response()
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cascade", description = "Recommendation engine API v1"),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Write,
    Admin,
}

/// Builds the router with every v1 route, auth, metrics, and `/openapi.json`.
pub fn router(engine: Arc<Engine>) -> axum::Router {
    let _ = observe::prometheus();
    let limit = engine.config.server.max_inflight;
    let sem = || Arc::new(tokio::sync::Semaphore::new(limit));
    let (read_limit, write_limit, admin_limit) = (sem(), sem(), sem());
    let state = AppState {
        engine,
        reads: read_limit.clone(),
    };
    // Auth first (outermost), then the in-flight limit: a refused key costs no permit.
    let reads = OpenApiRouter::new()
        .routes(routes!(get_recommendations, post_recommendations))
        .routes(routes!(similar_items))
        .route_layer(middleware::from_fn_with_state(read_limit, shed))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_read));
    let writes = OpenApiRouter::new()
        .routes(routes!(upsert_items))
        .routes(routes!(patch_item, delete_item))
        .routes(routes!(upsert_users))
        .routes(routes!(post_events))
        .route_layer(middleware::from_fn_with_state(write_limit, shed))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_write));
    let admin = OpenApiRouter::new()
        .routes(routes!(list_editorial, upsert_editorial))
        .routes(routes!(delete_editorial))
        .routes(routes!(list_faults, set_fault, clear_faults))
        .routes(routes!(list_models))
        .routes(routes!(list_experiments))
        .routes(routes!(show_experiment))
        .routes(routes!(activate_model))
        .routes(routes!(rollback_model))
        .route_layer(middleware::from_fn_with_state(admin_limit, shed))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let open = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text));
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(reads)
        .merge(writes)
        .merge(admin)
        .merge(open)
        .split_for_parts();
    let api = Arc::new(api);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { Json(api.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").field("path")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
            .field("method")
        })
        .layer(middleware::from_fn(observe::track))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

/// A handler panic becomes a JSON 500; the panic text goes to the log, never to the client.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %msg, "request handler panicked");
    ApiError::internal("internal error").into_response()
}

fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Constant-time comparison so key checks leak no prefix timing.
fn key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authorize(state: &AppState, headers: &HeaderMap, role: Role) -> Result<(), ApiError> {
    let auth = &state.engine.config.auth;
    if auth.read_keys.is_empty() && auth.write_keys.is_empty() && auth.admin_keys.is_empty() {
        return Ok(());
    }
    let Some(key) = api_key(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (Authorization: Bearer <key> or X-API-Key)",
        )
        .field("authorization"));
    };
    let has = |keys: &[String]| keys.iter().any(|k| key_eq(k, key));
    let allowed = match role {
        Role::Read => has(&auth.read_keys) || has(&auth.write_keys) || has(&auth.admin_keys),
        Role::Write => has(&auth.write_keys) || has(&auth.admin_keys),
        Role::Admin => has(&auth.admin_keys),
    };
    if allowed {
        return Ok(());
    }
    let known = has(&auth.read_keys) || has(&auth.write_keys) || has(&auth.admin_keys);
    let (status, code, msg) = if known {
        (
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key may not call this route",
        )
    } else {
        (StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key")
    };
    Err(ApiError::new(status, code, msg).field("authorization"))
}

async fn require_read(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match authorize(&s, req.headers(), Role::Read) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_write(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match authorize(&s, req.headers(), Role::Write) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_admin(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match authorize(&s, req.headers(), Role::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentsOut {
    pub experiments: Vec<String>,
}

/// The configured experiments.
#[utoipa::path(get, path = "/v1/admin/experiments", responses((status = 200, body = ExperimentsOut)))]
async fn list_experiments(State(s): State<AppState>) -> Json<ExperimentsOut> {
    Json(ExperimentsOut {
        experiments: s
            .engine
            .experiments
            .iter()
            .map(|x| x.config.name.clone())
            .collect(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentReport {
    pub name: String,
    pub surface: String,
    pub holdout: f64,
    /// The holdout first, then the arms.
    pub arms: Vec<crate::experiments::ArmReport>,
}

/// Online metrics per arm (impressions joined with later feedback by request id), with 95 %
/// intervals, next to each arm's model and its offline metrics.
#[utoipa::path(get, path = "/v1/admin/experiments/{name}", params(("name" = String, Path)),
    responses((status = 200, body = ExperimentReport), (status = 404, body = ErrorBody)))]
async fn show_experiment(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ExperimentReport>, ApiError> {
    s.engine.experiment_report(&name).map(Json).ok_or_else(|| {
        ApiError::not_found(
            "unknown_experiment",
            "name",
            format!("no experiment `{name}`"),
        )
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsOut {
    pub models: Vec<crate::lifecycle::ModelInfo>,
}

/// The model registry: every trained bundle, the active one marked, with its training data
/// range and offline metrics.
#[utoipa::path(get, path = "/v1/admin/models", responses((status = 200, body = ModelsOut)))]
async fn list_models(State(s): State<AppState>) -> Result<Json<ModelsOut>, ApiError> {
    Ok(Json(ModelsOut {
        models: s.engine.list_models()?,
    }))
}

/// Loads, validates and atomically activates a bundle; in-flight requests finish on the old
/// one. A bundle that fails validation is refused (422) and the active one stays.
#[utoipa::path(post, path = "/v1/admin/models/{version}/activate", params(("version" = String, Path)),
    responses((status = 200, body = crate::lifecycle::Activation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn activate_model(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<crate::lifecycle::Activation>, ApiError> {
    Ok(Json(s.engine.activate(&version).await?))
}

/// Activates the bundle that was active before the current one.
#[utoipa::path(post, path = "/v1/admin/models/rollback",
    responses((status = 200, body = crate::lifecycle::Activation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rollback_model(
    State(s): State<AppState>,
) -> Result<Json<crate::lifecycle::Activation>, ApiError> {
    Ok(Json(s.engine.rollback().await?))
}

/// An injected fault.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultIn {
    /// `features`, `ann`, `ranker` or `bus`.
    pub dependency: String,
    /// `error` or `latency`.
    pub mode: String,
    /// With `latency`: milliseconds added to every call.
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FaultsOut {
    pub faults: Vec<FaultIn>,
}

fn faults_out(f: &cascade_pipeline::Faults) -> FaultsOut {
    use cascade_pipeline::Fault;
    FaultsOut {
        faults: f
            .active()
            .into_iter()
            .map(|(d, fault)| FaultIn {
                dependency: d.as_str().to_string(),
                mode: match fault {
                    Fault::Error => "error".into(),
                    Fault::Latency(_) => "latency".into(),
                },
                latency_ms: match fault {
                    Fault::Error => None,
                    Fault::Latency(l) => Some(l.as_millis() as u64),
                },
            })
            .collect(),
    }
}

fn faults_enabled(s: &AppState) -> Result<(), ApiError> {
    if s.engine.config.faults.enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "faults_disabled",
            "fault injection is off; set faults.enabled = true (CASCADE_FAULTS__ENABLED)",
        )
        .field("faults.enabled"))
    }
}

/// The injected faults in force (admin key; `faults.enabled` required).
#[utoipa::path(get, path = "/v1/admin/faults", responses((status = 200, body = FaultsOut), (status = 403, body = ErrorBody)))]
async fn list_faults(State(s): State<AppState>) -> Result<Json<FaultsOut>, ApiError> {
    faults_enabled(&s)?;
    Ok(Json(faults_out(&s.engine.env.faults)))
}

/// Makes a dependency fail or slow down, for chaos tests and game days.
#[utoipa::path(post, path = "/v1/admin/faults", request_body = FaultIn,
    responses((status = 200, body = FaultsOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn set_fault(
    State(s): State<AppState>,
    JsonBody(f): JsonBody<FaultIn>,
) -> Result<Json<FaultsOut>, ApiError> {
    use cascade_pipeline::{Dependency, Fault};
    faults_enabled(&s)?;
    let dep = Dependency::ALL
        .into_iter()
        .find(|d| d.as_str() == f.dependency)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_value",
                "dependency",
                "one of features, ann, ranker, bus",
            )
        })?;
    let fault = match (f.mode.as_str(), f.latency_ms) {
        ("error", _) => Fault::Error,
        ("latency", Some(ms)) if ms <= 60_000 => {
            Fault::Latency(std::time::Duration::from_millis(ms))
        }
        ("latency", _) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                "latency_ms",
                "latency needs latency_ms within 0..=60000",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_value",
                "mode",
                "one of error, latency",
            ));
        }
    };
    s.engine.env.faults.set(dep, fault);
    tracing::warn!(dependency = dep.as_str(), ?fault, "fault injected");
    Ok(Json(faults_out(&s.engine.env.faults)))
}

/// Clears every injected fault.
#[utoipa::path(delete, path = "/v1/admin/faults", responses((status = 200, body = FaultsOut), (status = 403, body = ErrorBody)))]
async fn clear_faults(State(s): State<AppState>) -> Result<Json<FaultsOut>, ApiError> {
    faults_enabled(&s)?;
    s.engine.env.faults.clear();
    tracing::warn!("faults cleared");
    Ok(Json(faults_out(&s.engine.env.faults)))
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

fn check_batch<T>(state: &AppState, list: &str, v: &[T]) -> Result<(), ApiError> {
    let max = state.engine.config.server.max_batch;
    if v.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_value",
            list,
            "batch is empty",
        ));
    }
    if v.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} entries; at most {max} per request", v.len()),
        )
        .field(list));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemsBatch {
    pub items: Vec<Item>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsersBatch {
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsBatch {
    pub events: Vec<EventIn>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Upserted {
    pub upserted: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
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

/// Record implicit feedback. `accepted` events are durable (they survive a crash) and
/// already visible to the next recommendation request.
#[utoipa::path(post, path = "/v1/events", request_body = EventsBatch,
    responses((status = 200, body = Accepted), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn post_events(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<EventsBatch>,
) -> Result<Json<Accepted>, ApiError> {
    check_batch(&s, "events", &b.events)?;
    let now = now_millis();
    let mut events = Vec::with_capacity(b.events.len());
    for (i, e) in b.events.into_iter().enumerate() {
        events.push(
            e.into_event(now)
                .map_err(|e| ApiError::in_batch("events", i, e))?,
        );
    }
    let n = events.len();
    // The bus: failing, nothing is accepted (the client retries; nothing acknowledged is
    // lost); slow, the acknowledgement waits.
    s.engine
        .env
        .faults
        .before_async(cascade_pipeline::Dependency::Bus)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                e.to_string(),
            )
        })?;
    s.engine.commit(Mutation::Events(events)).await?;
    metrics::counter!("cascade_events_ingested_total").increment(n as u64);
    Ok(Json(Accepted { accepted: n }))
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
    pub user_id: Option<String>,
    pub n: Option<usize>,
    pub explain: Option<bool>,
    /// RFC 3339 or Unix seconds.
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
    let max_n = s.engine.config.server.max_n;
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

/// A bad query string as a 400 naming the parameter. axum reports the serde path first
/// (`n: invalid digit found in string`) or names an unknown parameter.
fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    let msg = e.body_text();
    let rest = msg
        .split_once("query string: ")
        .map_or(msg.as_str(), |(_, r)| r);
    let ident =
        |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let field = match rest.strip_prefix("unknown field `") {
        Some(r) => r.split('`').next().filter(ident),
        None => rest.split_once(": ").map(|(p, _)| p).filter(ident),
    };
    let code = if rest.starts_with("unknown field") {
        "unknown_field"
    } else {
        "invalid_value"
    };
    ApiError::bad_request(code, field.unwrap_or("query"), rest)
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
    let max_n = s.engine.config.server.max_n;
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub items: usize,
    pub users: usize,
    pub events: u64,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz(State(s): State<AppState>) -> Json<Health> {
    let st = s.engine.env.state.stats();
    Json(Health {
        status: "ok".into(),
        items: st.live_items,
        users: st.users,
        events: st.events,
    })
}

/// Readiness: the log is replayed and the models are built (true once the server listens).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(s): State<AppState>) -> Response {
    if !s.engine.writer.is_healthy() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the event log is not accepting writes",
        )
        .into_response();
    }
    if s.engine
        .bus
        .get()
        .is_some_and(|b| !b.replication.is_alive())
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "this replica stopped replicating the event bus",
        )
        .into_response();
    }
    if s.engine.pipelines.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no surface is configured",
        )
        .into_response();
    }
    if s.reads.available_permits() == 0 {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "every recommendation permit is in use",
        )
        .into_response();
    }
    if s.engine.ranker_pending() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "models_loading",
            "the ranker is still training; answers use the pre-ranker meanwhile",
        )
        .into_response();
    }
    healthz(State(s)).await.into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics_text(State(s): State<AppState>) -> Response {
    let st = s.engine.env.state.stats();
    metrics::gauge!("cascade_items").set(st.live_items as f64);
    metrics::gauge!("cascade_users").set(st.users as f64);
    metrics::gauge!("cascade_events_applied").set(st.events as f64);
    match observe::prometheus() {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::internal("metrics recorder unavailable").into_response(),
    }
}
