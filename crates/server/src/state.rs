//! What every handler shares: the engine, the whole configuration, the read permits.

use crate::config::Config;
use cascade_runtime::Engine;
use std::sync::Arc;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The whole configuration, the HTTP sections included.
    pub config: Arc<Config>,
    /// In-flight requests per route group; read by `/readyz`.
    pub reads: Arc<tokio::sync::Semaphore>,
}
