//! `/v1/admin/experiments`: the configured experiments and each one's online report.

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use cascade_runtime::online::ExperimentReport;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_experiments))
        .routes(routes!(show_experiment))
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
