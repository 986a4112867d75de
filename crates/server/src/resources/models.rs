//! `/v1/admin/models`: the model registry, validated activation and rollback.

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(activate_model))
        .routes(routes!(rollback_model))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsOut {
    pub models: Vec<cascade_runtime::lifecycle::ModelInfo>,
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
    responses((status = 200, body = cascade_runtime::lifecycle::Activation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn activate_model(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<cascade_runtime::lifecycle::Activation>, ApiError> {
    Ok(Json(s.engine.activate(&version).await?))
}

/// Activates the bundle that was active before the current one.
#[utoipa::path(post, path = "/v1/admin/models/rollback",
    responses((status = 200, body = cascade_runtime::lifecycle::Activation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rollback_model(
    State(s): State<AppState>,
) -> Result<Json<cascade_runtime::lifecycle::Activation>, ApiError> {
    Ok(Json(s.engine.rollback().await?))
}
