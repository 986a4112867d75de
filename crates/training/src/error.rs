//! Errors of training: a setting that cannot work, the log, or the file system.

use cascade_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("configuration error: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A bundle could not be read or written.
    #[error(transparent)]
    Bundle(#[from] cascade_index::bundle::BundleError),
    #[error("{0}")]
    Io(String),
}
