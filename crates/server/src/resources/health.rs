//! `/healthz`, `/readyz` and `/metrics`: liveness, readiness and Prometheus metrics.

use crate::error::{ApiError, ErrorBody};
use crate::observe;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub items: usize,
    pub users: usize,
    pub events: u64,
    /// The configured surfaces, by name.
    pub surfaces: Vec<String>,
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
        surfaces: {
            let mut v: Vec<String> = s.engine.pipelines.keys().cloned().collect();
            v.sort();
            v
        },
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
