//! Scale-out backends: the Redis online feature store and the NATS JetStream event bus.
//!
//! Stateless serving replicas share both. A replica publishes every accepted mutation to the
//! stream and answers only once JetStream has acknowledged it; every replica replicates the
//! stream into its own read model (catalog, aggregates, what models train on); a durable
//! consumer group of feature updaters — one member per replica — applies events to Redis,
//! which requests read their user's features from in one round trip. See `ARCHITECTURE.md`.

mod nats;
mod redis_store;

pub use nats::{NatsBus, NatsConfig, Replication};
pub use redis_store::{RedisConfig, RedisStore};

/// Errors of the scale-out backends: all are server-side (the client retries).
#[derive(Debug, thiserror::Error)]
pub enum ScaleoutError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("encoding: {0}")]
    Encode(String),
    #[error("config: {0}")]
    Config(String),
}

impl ScaleoutError {
    fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, ScaleoutError>;
