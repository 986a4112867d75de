//! The router: every resource's routes in its access group (auth first, then the group's
//! in-flight limit), metrics, panic handling, fallbacks and `/openapi.json`.

use crate::auth::{Role, require};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody};
use crate::observe;
use crate::ratelimit::limit as rate_limit;
use crate::resources::{
    dashboard, drift, editorial, events, experiments, faults, health, item_sources, items,
    metrics_history, models, recommendations, similar, suggest, users,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cascade_runtime::Engine;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

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
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight; retry shortly",
            )
            .into_response();
            r.extensions_mut().insert(Shed);
            r
        }
    }
}

/// Marks a response the in-flight limit refused (for the history's shed rate).
#[derive(Debug, Clone, Copy)]
struct Shed;

/// Counts every response's status into the dashboard's history.
async fn count(
    State(h): State<Arc<crate::history::History>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let r = next.run(req).await;
    h.http(r.status().as_u16(), r.extensions().get::<Shed>().is_some());
    r
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cascade", description = "Recommendation engine API v1"),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Builds the router with every v1 route, auth, metrics, and `/openapi.json`.
pub fn router(engine: Arc<Engine>, config: Arc<Config>) -> axum::Router {
    let _ = observe::prometheus();
    let limit = config.server.max_inflight;
    let sem = || Arc::new(tokio::sync::Semaphore::new(limit));
    let (read_limit, write_limit, admin_limit) = (sem(), sem(), sem());
    let state = AppState {
        engine,
        config,
        reads: read_limit.clone(),
        gorse_lists: Arc::default(),
        history: Arc::default(),
    };
    crate::history::spawn_sampler(&state.history, state.engine.env.state.clone());
    // Auth first (outermost), then the key's rate, then the in-flight limit: a refused key
    // costs no token, a refused rate no permit.
    let rate = |role| crate::ratelimit::Limit::new(&state.config.server.rate_limit, role);
    let reads = OpenApiRouter::new()
        .merge(recommendations::routes())
        .merge(similar::routes())
        .merge(suggest::routes())
        .route_layer(middleware::from_fn_with_state(read_limit, shed))
        .route_layer(middleware::from_fn_with_state(rate(Role::Read), rate_limit))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Role::Read),
            require,
        ));
    let writes = OpenApiRouter::new()
        .merge(items::routes())
        .merge(users::routes())
        .merge(events::routes())
        .route_layer(middleware::from_fn_with_state(write_limit, shed))
        .route_layer(middleware::from_fn_with_state(
            rate(Role::Write),
            rate_limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Role::Write),
            require,
        ));
    let admin = OpenApiRouter::new()
        .merge(editorial::routes())
        .merge(faults::routes())
        .merge(models::routes())
        .merge(experiments::routes())
        .merge(drift::routes())
        .merge(metrics_history::routes())
        .merge(item_sources::routes())
        .route_layer(middleware::from_fn_with_state(admin_limit, shed))
        .route_layer(middleware::from_fn_with_state(
            rate(Role::Admin),
            rate_limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Role::Admin),
            require,
        ));
    let gorse_api = state
        .config
        .gorse
        .enabled
        .then(|| crate::resources::gorse::routes(&state));
    let mut guarded = crate::openapi::paths_of(reads.get_openapi());
    guarded.extend(crate::openapi::paths_of(writes.get_openapi()));
    guarded.extend(crate::openapi::paths_of(admin.get_openapi()));
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(reads)
        .merge(writes)
        .merge(admin)
        .merge(health::routes())
        .split_for_parts();
    let mut surfaces: Vec<String> = state.engine.pipelines.keys().cloned().collect();
    surfaces.sort_unstable();
    let known = crate::openapi::Known {
        max_n: state.config.server.max_n,
        surfaces,
    };
    crate::openapi::declare_layers(&mut api, &guarded, &known);
    let api = Arc::new(api);
    let router = match gorse_api {
        Some(g) => router.merge(g),
        None => router,
    }
    .merge(dashboard::routes());
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
        .layer(middleware::from_fn_with_state(state.history.clone(), count))
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
