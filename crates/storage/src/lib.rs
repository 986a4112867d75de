//! Durable storage: the append-only, checksummed log of every mutation, with group commit.
//!
//! The log is the source of truth. Catalog, users and events are all [`Mutation`]s appended in
//! one order; in-memory state is rebuilt by replaying them in that same order, so a restart
//! with the same data dir reproduces the same state (and the same dense ids).

mod codec;
mod compact;
mod dir;
mod log;
mod writer;

pub use codec::{decode as decode_mutation, encode as encode_mutation};
pub use compact::{CompactStats, Retention, compact};
pub use dir::DataDir;
pub use log::{EventLog, LogOptions, ReplayStats, Rolled};
pub use writer::{Applier, LogWriter};

use std::path::PathBuf;

/// Storage errors. All are server-side faults except [`StorageError::Closed`] under shutdown.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log segment {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("data dir {0} is in use by another Cascade process")]
    Locked(PathBuf),
    #[error("record too large: {0} bytes")]
    TooLarge(usize),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("the log writer is shut down")]
    Closed,
    #[error("a snapshot holds {snapshot} records but the log only {log}")]
    SnapshotAhead { snapshot: u64, log: u64 },
    #[error("the log writer queue is full")]
    Busy,
    #[error("a snapshot holds {snapshot} records, inside the {covers} a compaction rewrote")]
    SnapshotCompacted { snapshot: u64, covers: u64 },
}

impl StorageError {
    /// Storage errors are never the client's fault.
    pub fn is_client(&self) -> bool {
        false
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
