//! Cascade's service: typed configuration, the engine (log, state, models, pipelines, data
//! loop) and the HTTP API v1 with its one error-to-HTTP mapping.

pub mod api;
pub mod backfill;
pub mod config;
pub mod engine;
pub mod error;
pub mod experiments;
mod extract;
pub mod gate;
pub mod lifecycle;
mod observe;
pub mod ranker;
pub mod training;

pub use config::Config;
pub use engine::Engine;
pub use error::{ApiError, ServerError};

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `engine` on `listener` until `shutdown` resolves, then drains in-flight requests.
/// The engine stays open (the caller closes it), so tests can restart servers over it.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = api::router(engine);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServerError::Io(format!("http server: {e}")))
}

/// Opens the data dir named in `config` (replaying the log), serves on `listener` until
/// `shutdown`, then commits everything queued and releases the data dir.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let engine = Engine::open_async(config).await?;
    let served = serve(engine.clone(), listener, shutdown).await;
    engine.close().await;
    served
}
