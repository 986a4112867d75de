//! `/v1/admin/faults`: fault injection for chaos tests and game days (`faults.enabled`).

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_faults, set_fault, clear_faults))
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
