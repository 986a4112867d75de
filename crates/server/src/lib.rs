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
mod ratelimit;
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
    let max_conns = config.server.max_connections;
    let header_timeout = std::time::Duration::from_millis(config.server.header_timeout_ms);
    async move {
        // hyper's own connection loop rather than `axum::serve`, for what that one does not
        // offer: a cap on open connections and a timeout on headers and idle keep-alive.
        let permits = Arc::new(tokio::sync::Semaphore::new(max_conns));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
                },
            );
            let conn =
                graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
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
