//! Errors of the runtime: start-up and serving failures (not per request). The HTTP layer
//! maps them to statuses in its one place.

use cascade_storage::StorageError;
use cascade_training::TrainingError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuration error: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Io(String),
    #[error("no model bundle {0}")]
    UnknownModel(String),
    #[error("model bundle refused: {0}")]
    ModelRefused(String),
    #[error("nothing to roll back to: {0} is the first bundle activated")]
    NoRollback(String),
    #[error("{0}")]
    Busy(String),
    /// The event bus did not acknowledge a write: nothing was accepted, the client retries.
    #[error("event bus unavailable: {0}")]
    Bus(String),
}

impl From<TrainingError> for RuntimeError {
    fn from(e: TrainingError) -> Self {
        match e {
            TrainingError::Config(m) => Self::Config(m),
            TrainingError::Storage(s) => Self::Storage(s),
            other => Self::Io(other.to_string()),
        }
    }
}
