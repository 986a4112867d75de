//! Errors of training: a setting that cannot work, the log, or the file system.

use cascade_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("configuration error: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Io(String),
}
