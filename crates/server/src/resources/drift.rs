//! `/v1/admin/drift`: what the engine serves and sees now against what its bundle was
//! trained on — every signal worst first, and each model version's offline metrics beside
//! its online rates.

use crate::error::{ApiError, ErrorBody};
use crate::extract::query_error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use cascade_runtime::drift::DriftReport;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(drift))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DriftParams {
    /// The window, in seconds (1 up to `drift.retention_s`; default `drift.window_s`).
    #[param(minimum = 1)]
    pub window_s: Option<u64>,
}

/// The drift report over the last `window_s` seconds: PSI per feature, score and category
/// mix, Jensen–Shannon for the source mix, two-proportion tests for rates, each `ok`,
/// `warn`, `alert` or `insufficient_data`. 404 when `drift.enabled = false`.
#[utoipa::path(get, path = "/v1/admin/drift", params(DriftParams),
    responses((status = 200, body = DriftReport), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn drift(
    State(s): State<AppState>,
    q: Result<Query<DriftParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DriftReport>, ApiError> {
    let Query(p) = q.map_err(query_error)?;
    let retention = s.engine.config.drift.retention_s;
    if let Some(w) = p.window_s
        && (w == 0 || w > retention)
    {
        return Err(ApiError::bad_request(
            "invalid_value",
            "window_s",
            format!("must be within 1..={retention} (drift.retention_s)"),
        ));
    }
    let Some(m) = &s.engine.drift else {
        return Err(ApiError::not_found(
            "drift_disabled",
            "drift",
            "drift monitoring is off (drift.enabled = false)",
        ));
    };
    Ok(Json(m.report(p.window_s)))
}
