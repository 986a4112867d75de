//! `/v1/admin/metrics/history`: the server's own metrics history (see `crate::history`), what
//! the dashboard's overview charts.

use crate::error::{ApiError, ErrorBody};
use crate::extract::query_error;
use crate::history::{INTERVAL, KEEP, Sample};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Only samples after this time (Unix ms); all that are kept when absent.
    pub since_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryOut {
    /// Seconds each sample covers.
    pub interval_s: u64,
    /// Samples kept at most (the oldest go).
    pub keep: usize,
    /// Oldest first: per surface and per stage rates and p50/p95/p99 (ms), `degraded`
    /// reasons per second, HTTP, error and shed rates, events applied per second and the
    /// ingest latency (receipt to durable and visible).
    #[schema(value_type = Vec<Object>)]
    pub samples: Vec<Sample>,
}

/// The metrics history (admin key).
#[utoipa::path(get, path = "/v1/admin/metrics/history", params(HistoryParams),
    responses((status = 200, body = HistoryOut), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn history(
    State(s): State<AppState>,
    q: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<HistoryOut>, ApiError> {
    let Query(p) = q.map_err(query_error)?;
    Ok(Json(HistoryOut {
        interval_s: INTERVAL.as_secs(),
        keep: KEEP,
        samples: s.history.since(p.since_ms.unwrap_or(i64::MIN)),
    }))
}
