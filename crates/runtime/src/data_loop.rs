//! The data loop: background threads that rebuild the models from the live state (popular
//! lists, co-visitation, retrained embeddings), fold new items into the ANN index, follow the
//! catalog in the suggestion index (a delta every tick, the whole index off the ticks), and
//! take snapshots, each publishing through an atomic swap.

use crate::config::EngineConfig;
use crate::error::RuntimeError;
use crate::replay::{snapshots_enabled, write_snapshot};
use crate::suggest::Suggestions;
use cascade_features::State;
use cascade_index::{ItemFolder, ModelStore, PopularLists};
use cascade_training::build_models;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The data loop, as two threads so that a long model build never delays the popular lists:
/// one rebuilds popular, trending and fresh lists every `popular_refresh_ms`; the other
/// rebuilds co-visitation every `covis_refresh_s` and retrains embeddings every
/// `embeddings_refresh_s`, each only when model-relevant mutations arrived.
pub(crate) fn spawn_data_loop(
    state: Arc<State>,
    models: Arc<ModelStore>,
    arm_stores: Vec<Arc<ModelStore>>,
    folder: Arc<parking_lot::Mutex<ItemFolder>>,
    suggestions: Arc<Suggestions>,
    config: EngineConfig,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, RuntimeError> {
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| RuntimeError::Io(format!("{name} thread: {e}")))
    };
    let suggest_parts = (state.clone(), suggestions.clone(), stop.clone());
    let (st, ms, cfg, halt) = (state.clone(), models.clone(), config.clone(), stop.clone());
    let popular = spawn(
        "cascade-popular",
        Box::new(move || {
            let tick = Duration::from_millis(cfg.models.popular_refresh_ms.clamp(10, 60_000));
            let mut seen_gen = st.read().generation;
            while !halt.load(Ordering::SeqCst) {
                sleep_unless(&halt, tick);
                let generation = st.read().generation;
                if generation == seen_gen {
                    continue;
                }
                let t = Instant::now();
                let m = &cfg.models;
                let lists =
                    PopularLists::build_live(&st.read(), m.popular_size, m.popular_per_category);
                let lists = Arc::new(lists);
                ms.publish_popular_shared(lists.clone());
                for s in &arm_stores {
                    s.publish_popular_shared(lists.clone());
                }
                metrics::histogram!("cascade_model_build_seconds", "model" => "popular")
                    .record(t.elapsed().as_secs_f64());
                fold_step(&folder, &st, &ms);
                // Suggestions follow item edits within this tick (the delta); the full
                // rebuild runs on its own thread.
                suggestions.refresh_delta(&st);
                seen_gen = generation;
            }
        }),
    )?;
    let snapshot_parts = (state.clone(), config.clone(), stop.clone());
    let heavy = spawn(
        "cascade-models",
        Box::new(move || {
            let covis_every = Duration::from_secs(config.models.covis_refresh_s.max(1));
            let embeddings_every = Duration::from_secs(config.models.embeddings_refresh_s.max(1));
            let mut built_gen = state.read().generation;
            let mut embedded_gen = built_gen;
            let mut last_embeddings = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                sleep_unless(&stop, covis_every);
                let generation = state.read().generation;
                if generation == built_gen {
                    continue;
                }
                let train =
                    generation != embedded_gen && last_embeddings.elapsed() >= embeddings_every;
                let t = Instant::now();
                let prev = models.load();
                models.publish(build_models(&state, &config, train, Some(&prev)));
                metrics::histogram!("cascade_model_build_seconds", "model" => "covis")
                    .record(t.elapsed().as_secs_f64());
                built_gen = generation;
                if train {
                    embedded_gen = generation;
                    last_embeddings = Instant::now();
                }
            }
        }),
    )?;
    // The full suggestion index: rebuilt off the ticks (20 s at 10M titles), swapped whole.
    let (st, sg, halt) = suggest_parts;
    let suggest = spawn(
        "cascade-suggest",
        Box::new(move || {
            while !halt.load(Ordering::SeqCst) {
                sleep_unless(&halt, Duration::from_millis(200));
                if sg.wants_rebuild(&st) {
                    sg.rebuild(&st);
                }
            }
        }),
    )?;
    let mut threads = vec![popular, heavy, suggest];
    let (st, cfg, halt) = snapshot_parts;
    if snapshots_enabled(&cfg) {
        threads.push(spawn(
            "cascade-snapshot",
            Box::new(move || {
                let every = Duration::from_secs(cfg.storage.snapshot_interval_s);
                let mut taken = st.read().log_records;
                while !halt.load(Ordering::SeqCst) {
                    sleep_unless(&halt, every);
                    let now = st.read().log_records;
                    if now.saturating_sub(taken) < cfg.storage.snapshot_min_records.max(1) {
                        continue;
                    }
                    match write_snapshot(&st, &cfg) {
                        Ok(_) => taken = now,
                        Err(e) => tracing::warn!(error = %e, "snapshot failed"),
                    }
                }
            }),
        )?);
    }
    Ok(threads)
}

pub(crate) fn fold_step(
    folder: &parking_lot::Mutex<ItemFolder>,
    state: &State,
    models: &ModelStore,
) -> usize {
    let stats = folder.lock().step(state, &models.load());
    if stats.upserted + stats.removed > 0 {
        metrics::counter!("cascade_ann_folded_total").increment(stats.upserted as u64);
        tracing::debug!(
            upserted = stats.upserted,
            removed = stats.removed,
            "ann fold-in"
        );
    }
    if stats.full {
        tracing::warn!("ann index is full; new items wait for the next retrain");
    }
    if stats.failed > 0 {
        tracing::warn!(failed = stats.failed, "ann inserts failed");
    }
    stats.upserted
}

pub(crate) fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
