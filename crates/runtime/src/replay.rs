//! Opening a data dir: the state restored from the newest snapshot and the log tail replayed
//! (what serving and `cascade train` start from), snapshots written, and the current bundle.

use crate::config::{BusBackend, EngineConfig};
use crate::error::RuntimeError;
use cascade_features::State;
use cascade_index::Bundle;
use cascade_storage::{DataDir, EventLog, LogOptions, ReplayStats};
use std::sync::Arc;
use std::time::Instant;

/// A data dir opened (and locked) with its log replayed into a fresh state.
pub struct Replayed {
    pub dir: DataDir,
    pub state: Arc<State>,
    pub log: EventLog,
    pub replay: ReplayStats,
}

/// Held while a snapshot is written and while a compaction removes the snapshots it made
/// stale, so a snapshot copied before an erasure can never be renamed in after the purge.
/// One lock per process: snapshot writes are rare and short next to its cost.
pub(crate) static SNAPSHOTS: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Where the embedded state's snapshots live.
pub fn snapshots_dir(config: &EngineConfig) -> std::path::PathBuf {
    config.data_dir.join("snapshots")
}

/// Snapshots cover the local log only: a replica on the bus rebuilds from the stream.
pub(crate) fn snapshots_enabled(config: &EngineConfig) -> bool {
    config.storage.snapshot_interval_s > 0 && config.bus.backend == BusBackend::Embedded
}

/// Loads the newest usable snapshot into `state`; returns the log records it holds (0: none).
fn restore_snapshot(state: &State, dir: &std::path::Path) -> u64 {
    let t = Instant::now();
    let (snap, damaged) = cascade_features::Snapshot::latest(dir);
    for e in damaged {
        tracing::warn!(error = %e, "skipping a damaged snapshot");
    }
    let Some(snap) = snap else {
        return 0;
    };
    let records = snap.log_records;
    let (config, keys) = {
        let g = state.read();
        (g.config, g.segment_keys.clone())
    };
    match snap.restore(config, &keys) {
        Ok(Some(inner)) => {
            state.replace(inner);
            tracing::info!(
                records,
                ms = t.elapsed().as_millis() as u64,
                "restored state snapshot"
            );
            records
        }
        Ok(None) => {
            tracing::info!("state settings changed since the snapshot; full replay");
            0
        }
        Err(e) => {
            tracing::warn!(error = %e, "snapshot unusable; full replay");
            0
        }
    }
}

/// Takes a snapshot of `state` into the data dir's snapshot directory.
pub fn write_snapshot(
    state: &State,
    config: &EngineConfig,
) -> Result<(std::path::PathBuf, u64), RuntimeError> {
    let _guard = SNAPSHOTS.lock();
    let t = Instant::now();
    let snap = cascade_features::Snapshot::of(&state.read());
    let copied = t.elapsed();
    let out = snap
        .write(&snapshots_dir(config), config.storage.snapshot_keep)
        .map_err(|e| RuntimeError::Io(e.to_string()))?;
    metrics::histogram!("cascade_snapshot_seconds").record(t.elapsed().as_secs_f64());
    tracing::info!(
        records = snap.log_records,
        bytes = out.1,
        copy_ms = copied.as_millis() as u64,
        ms = t.elapsed().as_millis() as u64,
        "wrote state snapshot"
    );
    Ok(out)
}

/// Opens `config.data_dir` and replays its log: what serving and `cascade train` start from.
pub fn replay(config: &EngineConfig) -> Result<Replayed, RuntimeError> {
    let started = Instant::now();
    let dir = DataDir::open(&config.data_dir)?;
    let state = Arc::new(config.features.new_state());
    let mut opts = LogOptions::new(dir.log_dir());
    opts.fsync = config.storage.fsync;
    opts.segment_bytes = config.storage.segment_mb << 20;
    let skip = if snapshots_enabled(config) {
        restore_snapshot(&state, &snapshots_dir(config))
    } else {
        0
    };
    let (log, replay) = {
        let st = state.clone();
        match EventLog::open_from(opts.clone(), skip, &mut |m, seq| st.apply_logged(&m, seq)) {
            Err(
                e @ (cascade_storage::StorageError::SnapshotAhead { .. }
                | cascade_storage::StorageError::SnapshotCompacted { .. }),
            ) => {
                // The log lost records a snapshot holds (restored from an older backup?), or
                // a compaction rewrote what it resumes from: the log is the truth, replay it.
                tracing::warn!(error = %e, "snapshot does not fit the log; full replay");
                let fresh = config.features.new_state();
                st.replace(fresh.into_inner());
                EventLog::open_from(opts, 0, &mut |m, seq| st.apply_logged(&m, seq))?
            }
            other => other?,
        }
    };
    if replay.compacted > 0 && snapshots_enabled(config) {
        // A compaction cut short before it removed the snapshots it made stale: they resume
        // inside what it rewrote and may hold what it purged.
        let _guard = SNAPSHOTS.lock();
        match cascade_features::snapshot::remove_before(&snapshots_dir(config), replay.compacted) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed snapshots older than the compaction"),
            Err(e) => tracing::warn!(error = %e, "stale snapshots not removed"),
        }
    }
    tracing::info!(
        from_snapshot = replay.skipped,
        records = replay.records,
        truncated = replay.truncated_bytes,
        ms = started.elapsed().as_millis() as u64,
        "replayed event log"
    );
    Ok(Replayed {
        dir,
        state,
        log,
        replay,
    })
}

/// The current bundle of `config.data_dir`, if one was trained and loads; a bundle that
/// fails to load is reported and skipped (the engine then trains in process).
pub(crate) fn load_bundle(config: &EngineConfig) -> Option<Bundle> {
    if !config.models.load_bundle {
        return None;
    }
    let dir = cascade_index::bundle::models_dir(&config.data_dir);
    let found = Bundle::current(&dir).and_then(|cur| {
        cur.map(|p| Bundle::load(&p, config.models.hnsw))
            .transpose()
    });
    match found {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "model bundle not loaded; training in process");
            metrics::counter!("cascade_bundle_load_failures_total").increment(1);
            None
        }
    }
}
