//! Scale-out maintenance: the backfill that materializes the online feature store from a data
//! dir's log (the one-off job that seeds Redis with the history a deployment had before it
//! moved to the bus; afterwards the feature updaters keep it current), and the drop that
//! decommissions a deployment's Redis keys and JetStream stream.

use crate::config::EngineConfig;
use crate::error::RuntimeError;
use cascade_core::{Event, Mutation};
use cascade_storage::{DataDir, EventLog, LogOptions};
use std::sync::Arc;

/// Sequence numbers of backfilled batches: disjoint from the bus's (which count from 1), so
/// a backfilled event and a bus event never share a member; re-running writes the same
/// members (idempotent).
pub const BACKFILL_SEQ: u64 = 1 << 62;

/// What a backfill wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backfilled {
    pub events: u64,
    pub batches: u64,
}

/// Replays `config.data_dir`'s log and writes every event to the Redis store of
/// `config.storage.redis`, `batch` events per round trip.
pub async fn backfill(config: &EngineConfig, batch: usize) -> Result<Backfilled, RuntimeError> {
    let cfg = config.clone();
    let (state, events) = tokio::task::spawn_blocking(move || {
        let dir = DataDir::open(&cfg.data_dir)?;
        let state = Arc::new(cfg.features.new_state());
        let mut events: Vec<Event> = Vec::new();
        let opts = LogOptions::new(dir.log_dir());
        let st = state.clone();
        EventLog::open(opts, &mut |m| {
            if let Mutation::Events(e) = &m {
                events.extend(e.iter().cloned());
            }
            st.apply(&m);
        })?;
        Ok::<_, RuntimeError>((state, events))
    })
    .await
    .map_err(|e| RuntimeError::Io(format!("replay panicked: {e}")))??;
    let store = cascade_scaleout::RedisStore::connect(config.storage.redis.clone(), state)
        .await
        .map_err(|e| RuntimeError::Io(format!("storage.redis: {e}")))?;
    let mut out = Backfilled::default();
    for (n, chunk) in events.chunks(batch.max(1)).enumerate() {
        store
            .write(BACKFILL_SEQ + n as u64, chunk)
            .await
            .map_err(|e| RuntimeError::Io(format!("storage.redis: {e}")))?;
        out.events += chunk.len() as u64;
        out.batches += 1;
    }
    Ok(out)
}

/// Deletes every Redis key under `config.storage.redis`'s prefix and the configured
/// JetStream stream (with its consumers); returns how many keys went.
pub async fn drop_deployment(config: &EngineConfig) -> Result<usize, RuntimeError> {
    let io = |e: cascade_scaleout::ScaleoutError| RuntimeError::Io(e.to_string());
    let state = Arc::new(cascade_features::State::new(Default::default()));
    let store = cascade_scaleout::RedisStore::connect(config.storage.redis.clone(), state)
        .await
        .map_err(io)?;
    let keys = store.clear().await.map_err(io)?;
    let bus = cascade_scaleout::NatsBus::connect(config.bus.nats.clone())
        .await
        .map_err(|e| RuntimeError::Bus(e.to_string()))?;
    bus.delete_stream()
        .await
        .map_err(|e| RuntimeError::Bus(e.to_string()))?;
    Ok(keys)
}
