//! Cascade's HTTP API v1: one module per resource, auth, request extraction, the one
//! error-to-HTTP mapping, the OpenAPI document, and the top-level configuration that composes
//! every crate's section with this layer's own.

mod auth;
pub mod config;
pub mod error;
mod extract;
pub mod history;
mod observe;
mod openapi;
mod paging;
pub mod resources;
pub mod router;
pub mod state;

pub use cascade_runtime::{Engine, RuntimeError};
pub use config::{AuthSection, Config, ServerSection};
pub use error::ApiError;

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `engine` on `listener` under `config`'s HTTP sections until `shutdown` resolves,
/// then drains in-flight requests. The engine stays open (the caller closes it), so tests can
/// restart servers over it. The configuration is copied: the future borrows nothing.
pub fn serve(
    engine: Arc<Engine>,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = Result<(), RuntimeError>> + Send + 'static {
    let app = router::router(engine, Arc::new(config.clone()));
    async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| RuntimeError::Io(format!("http server: {e}")))
    }
}

/// Opens the data dir named in `config` (replaying the log), serves on `listener` until
/// `shutdown`, then commits everything queued and releases the data dir.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    let engine = Engine::open_async(config.clone()).await?;
    let served = serve(engine.clone(), &config, listener, shutdown).await;
    engine.close().await;
    served
}
