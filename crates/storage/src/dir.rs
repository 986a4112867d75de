//! The data directory and its exclusive lock, so two processes never write one log.

use crate::{Result, StorageError};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// An opened, exclusively locked data directory. The lock is released on drop.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock; fails fast if another process
    /// holds it.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| StorageError::io(path, e))?;
        let lock_path = path.join("LOCK");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StorageError::Locked(path.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(StorageError::io(&lock_path, e)),
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: f,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn log_dir(&self) -> PathBuf {
        self.path.join("log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_until_release() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = DataDir::open(tmp.path()).expect("first");
        assert!(matches!(
            DataDir::open(tmp.path()),
            Err(StorageError::Locked(_))
        ));
        drop(a);
        DataDir::open(tmp.path()).expect("after release");
    }
}
