//! Gorse's `GET /api/health/live` and `/api/health/ready` (no key, as in Gorse): the data
//! store is the event log (or the bus), the cache store the online state and feature store.

use super::both;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub(super) fn routes() -> Router<AppState> {
    let r = both(Router::new(), "/api/health/live", get(live));
    both(r, "/api/health/ready", get(ready))
}

/// Gorse's health record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Health {
    ready: bool,
    data_store_error: Option<String>,
    cache_store_error: Option<String>,
    data_store_connected: bool,
    cache_store_connected: bool,
}

fn health(s: &AppState) -> Health {
    let log = s.engine.writer.is_healthy();
    let bus = s.engine.bus.get().is_none_or(|b| b.replication.is_alive());
    let data_ok = log && bus;
    Health {
        ready: data_ok && !s.engine.pipelines.is_empty(),
        data_store_error: (!data_ok).then(|| {
            if log {
                "this replica stopped replicating the event bus".to_string()
            } else {
                "the event log is not accepting writes".to_string()
            }
        }),
        cache_store_error: None,
        data_store_connected: data_ok,
        cache_store_connected: true,
    }
}

/// Always 200, with what is known.
async fn live(State(s): State<AppState>) -> Json<Health> {
    Json(health(&s))
}

/// 200 when ready, 503 with the same record otherwise.
async fn ready(State(s): State<AppState>) -> Response {
    let h = health(&s);
    let status = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}
