//! Where accepted mutations are committed: the local log (embedded) or the event bus.

use crate::error::RuntimeError;
use cascade_core::Mutation;
use cascade_storage::LogWriter;
use std::sync::Arc;

/// The embedded log's writer, or the NATS JetStream bus.
#[derive(Debug, Clone)]
pub enum Sink {
    Log(Arc<LogWriter>),
    Bus(Arc<cascade_scaleout::NatsBus>),
}

impl Sink {
    /// Commits `m` durably (fsynced to the log, or acknowledged by JetStream); returns its
    /// position (log sequence or stream sequence).
    pub async fn commit(&self, m: Mutation) -> Result<u64, RuntimeError> {
        match self {
            Sink::Log(w) => Ok(w.submit(m).await?),
            Sink::Bus(b) => b
                .publish(&m)
                .await
                .map_err(|e| RuntimeError::Bus(e.to_string())),
        }
    }

    /// Commits every mutation of `ms`, in order, as one unit on the log (one group commit:
    /// all durable or none acknowledged); on the bus, published in order and acknowledged
    /// once JetStream has stored them all. Returns the last one's position.
    pub async fn commit_all(&self, ms: Vec<Mutation>) -> Result<u64, RuntimeError> {
        match self {
            Sink::Log(w) => Ok(w.submit_all(ms).await?),
            Sink::Bus(b) => b
                .publish_all(&ms)
                .await
                .map_err(|e| RuntimeError::Bus(e.to_string())),
        }
    }

    /// Queues `m` without waiting (side effects); `Err` rather than block when full.
    pub fn commit_nowait(&self, m: Mutation) -> Result<(), RuntimeError> {
        match self {
            Sink::Log(w) => Ok(w.submit_nowait(m)?),
            Sink::Bus(b) => b
                .publish_nowait(&m)
                .map_err(|e| RuntimeError::Bus(e.to_string())),
        }
    }
}

impl cascade_surfaces::MutationQueue for Sink {
    fn enqueue(&self, m: Mutation) -> Result<(), String> {
        self.commit_nowait(m).map_err(|e| e.to_string())
    }
}
