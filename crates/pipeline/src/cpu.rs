//! A dedicated thread pool for CPU-bound stages, so the async runtime never blocks.

use std::panic::AssertUnwindSafe;
use tokio::sync::oneshot;

/// Rayon pool for pipeline CPU work. Jobs are awaited through a oneshot channel.
#[derive(Debug)]
pub struct CpuPool {
    pool: rayon::ThreadPool,
}

/// The job panicked or the pool went away.
#[derive(Debug, thiserror::Error)]
#[error("cpu job failed: {0}")]
pub struct CpuError(pub String);

impl CpuPool {
    pub fn new(threads: usize) -> Result<Self, CpuError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("cascade-cpu-{i}"))
            .build()
            .map_err(|e| CpuError(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` on the pool and awaits its result. A panic becomes an error, not a crash.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, CpuError> {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                Err(CpuError(msg))
            }
            Err(_) => Err(CpuError("pool dropped the job".into())),
        }
    }

    /// Runs `f` on the pool from synchronous code (builders, tools).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}
