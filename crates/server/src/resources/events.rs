//! `/v1/events`: implicit feedback, durable when answered.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::extract::check_batch;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cascade_core::{EventIn, Mutation, time::now_millis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This resource's routes (the router puts them in their access group).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_events))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsBatch {
    pub events: Vec<EventIn>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
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
    let received = std::time::Instant::now();
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
    s.history.ingest(received.elapsed().as_secs_f64() * 1e3);
    metrics::counter!("cascade_events_ingested_total").increment(n as u64);
    Ok(Json(Accepted { accepted: n }))
}
