//! Background compaction of the local log (embedded bus): events past retention and every
//! record of an erased user leave the log and the snapshots while the server keeps serving.

use crate::config::EngineConfig;
use crate::error::RuntimeError;
use crate::replay::{SNAPSHOTS, snapshots_dir};
use cascade_storage::{CompactStats, LogWriter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Held for a whole compaction (the thread's and `Engine::compact_now`'s).
static COMPACTING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Erasures (user erasures and feedback deletions) still in the log outside its compacted
/// segment: counted at replay, raised as they are applied, cleared by a compaction.
#[derive(Debug, Default)]
pub struct Pending(AtomicU64);

impl Pending {
    pub fn new(n: u64) -> Self {
        Self(AtomicU64::new(n))
    }

    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Rolls the log so that every acknowledged record is in a closed segment, compacts those,
/// then removes the snapshots that predate the compacted range (they resume inside it, and
/// may hold what it purged).
pub fn compact_now(
    writer: &LogWriter,
    config: &EngineConfig,
    pending: &Pending,
) -> Result<CompactStats, RuntimeError> {
    // One compaction at a time per process: two would share the temporary file.
    let _one = COMPACTING.lock();
    let t = Instant::now();
    // Erasures applied from here on may land after the roll: they stay pending.
    let before = pending.get();
    let cut = writer.roll_blocking()?;
    let now = cascade_core::time::now_millis();
    let log_dir = config.data_dir.join("log");
    let stats = cascade_storage::compact(&log_dir, cut.closed, now, &config.storage.retention())?;
    let removed = {
        let _guard = SNAPSHOTS.lock();
        cascade_features::snapshot::remove_before(&snapshots_dir(config), stats.covers)
            .map_err(|e| RuntimeError::Io(e.to_string()))?
    };
    pending.0.fetch_sub(before, Ordering::SeqCst);
    metrics::histogram!("cascade_compaction_seconds").record(t.elapsed().as_secs_f64());
    metrics::counter!("cascade_compactions_total").increment(1);
    tracing::info!(
        segments = stats.segments,
        records_in = stats.records_in,
        records_out = stats.records_out,
        events_in = stats.events_in,
        events_out = stats.events_out,
        bytes_in = stats.bytes_in,
        bytes_out = stats.bytes_out,
        erased_users = stats.erased_users,
        snapshots_removed = removed,
        ms = t.elapsed().as_millis() as u64,
        "compacted the event log"
    );
    Ok(stats)
}

/// The compactor thread: every `storage.compaction_interval_s`, compacts when a retention is
/// set or an erasure is pending. A failed compaction (a full disk) leaves the log as it was
/// and is retried at the next interval.
pub(crate) fn spawn(
    writer: Arc<LogWriter>,
    config: EngineConfig,
    pending: Arc<Pending>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, RuntimeError> {
    std::thread::Builder::new()
        .name("cascade-compactor".into())
        .spawn(move || {
            let every = Duration::from_secs(config.storage.compaction_interval_s.max(1));
            let retention = config.storage.retention();
            let wanted = retention.max_age_ms.is_some() || retention.max_bytes.is_some();
            while !stop.load(Ordering::SeqCst) {
                crate::data_loop::sleep_unless(&stop, every);
                if stop.load(Ordering::SeqCst) || !(wanted || pending.get() > 0) {
                    continue;
                }
                if let Err(e) = compact_now(&writer, &config, &pending) {
                    metrics::counter!("cascade_compaction_failures_total").increment(1);
                    tracing::warn!(error = %e, "compaction failed; the log is unchanged");
                }
            }
        })
        .map_err(|e| RuntimeError::Io(format!("compactor thread: {e}")))
}
