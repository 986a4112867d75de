//! The engine: a data dir opened and replayed, the live state and model store, the writer,
//! the data loop, one pipeline per configured surface and the experiments over them.

use crate::config::{BusBackend, EngineConfig, StorageBackend};
use crate::data_loop::{fold_step, spawn_data_loop};
use crate::drift::DriftMonitor;
use crate::error::RuntimeError;
use crate::faulted::FaultInjected;
use crate::replay::{Replayed, load_bundle, replay, write_snapshot};
use crate::sink::Sink;
use crate::suggest::Suggestions;
use cascade_core::Mutation;
use cascade_index::{Bundle, ItemFolder, ModelStore};
use cascade_pipeline::{CpuPool, Env, Pipeline, PipelineResult};
use cascade_storage::{DataDir, LogWriter, ReplayStats};
use cascade_surfaces::MutationQueue;
use cascade_training::{build_models, models_from_bundle, models_from_bundle_with};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a replica on the bus runs beside serving.
#[derive(Debug)]
pub struct BusLinks {
    /// The stream, replicated into this replica's state.
    pub replication: cascade_scaleout::Replication,
    stop: Arc<AtomicBool>,
}

/// Everything a running Cascade holds.
pub struct Engine {
    pub config: EngineConfig,
    pub env: Env,
    pub writer: Arc<LogWriter>,
    /// Where API writes are committed.
    pub sink: Sink,
    /// The Redis online feature store, when `storage.backend = "redis"`.
    pub redis: Option<Arc<cascade_scaleout::RedisStore>>,
    /// Replication and feature updates, on the `nats` bus.
    pub bus: std::sync::OnceLock<BusLinks>,
    pub pipelines: HashMap<String, Arc<Pipeline>>,
    pub replay: ReplayStats,
    folder: Arc<parking_lot::Mutex<ItemFolder>>,
    stop: Arc<AtomicBool>,
    data_loop: parking::Once<Vec<JoinHandle<()>>>,
    /// Trains the ranker after start when no bundle had one (see [`Engine::wait_for_ranker`]).
    ranker_job: parking::Once<JoinHandle<()>>,
    /// A bundle activation is in progress (one at a time).
    pub(crate) activating: AtomicBool,
    /// Running experiments (at most one per surface is consulted: the first).
    pub experiments: Vec<crate::experiments::Experiment>,
    /// The suggestion index over the catalog, rebuilt by the data loop.
    pub suggestions: Arc<Suggestions>,
    /// Distribution-shift monitoring (`drift.enabled`).
    pub drift: Option<Arc<DriftMonitor>>,
    /// Erasures the next compaction of the local log purges.
    pub erasures: Arc<crate::compaction::Pending>,
    _dir: DataDir,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// Trains the heavy ranker from the log at start (no bundle); without one the surfaces keep
/// the pre-ranker's order and say so in `degraded`.
fn start_ranker(
    config: &EngineConfig,
    log_dir: &std::path::Path,
) -> Option<Arc<cascade_gbdt::Model>> {
    let t = Instant::now();
    match cascade_training::ranker::train_from_log(config, log_dir, None, &|_, _, _| {}) {
        Ok((model, m)) => {
            tracing::info!(
                secs = t.elapsed().as_secs_f64(),
                lists = m.train_lists + m.valid_lists,
                rounds = m.rounds,
                valid_ndcg = m.valid_ndcg_at_10,
                prerank_ndcg = m.prerank_valid_ndcg_at_10,
                lists_secs = m.candidates_seconds,
                gbdt_secs = m.gbdt_seconds,
                "trained ranker"
            );
            Some(Arc::new(model))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no ranker trained; surfaces use the pre-ranker's order");
            None
        }
    }
}

impl Engine {
    /// Opens the data dir, replays the log, builds models and pipelines, starts the writer
    /// and the data loop. Blocking: call from a blocking context (see [`Engine::open_async`]).
    /// Embedded bus only: a replica on NATS opens with [`Engine::open_async`].
    pub fn open(config: impl Into<EngineConfig>) -> Result<Arc<Self>, RuntimeError> {
        let config = config.into();
        if config.bus.backend != BusBackend::Embedded {
            return Err(RuntimeError::Config(
                "bus.backend: a replica on the bus is opened with Engine::open_async".into(),
            ));
        }
        Self::open_with(config, None)
    }

    /// Opens with `bus` as the sink when given. Connects Redis (blocking on the runtime's
    /// handle: this runs on a blocking thread) when the store is remote.
    fn open_with(
        config: EngineConfig,
        bus: Option<Arc<cascade_scaleout::NatsBus>>,
    ) -> Result<Arc<Self>, RuntimeError> {
        config.validate()?;
        let started = Instant::now();
        let Replayed {
            dir,
            state,
            log,
            replay,
        } = replay(&config)?;
        let initial = match load_bundle(&config) {
            Some(b) => {
                tracing::info!(version = %b.manifest.version, "loaded model bundle");
                models_from_bundle(&state, &config.models, b)
            }
            None => build_models(&state, &config, true, None),
        };
        let train_ranker = initial.ranker.is_none() && config.models.ranker.enabled;
        let stop = Arc::new(AtomicBool::new(false));
        // Drift monitoring against the loaded bundle's reference (none: the first window).
        let drift = if config.drift.enabled {
            let models_dir = cascade_index::bundle::models_dir(&config.data_dir);
            let reference = Bundle::current(&models_dir)
                .ok()
                .flatten()
                .and_then(|dir| cascade_training::drift::read(&dir));
            let (m, thread) = DriftMonitor::spawn(
                config.drift.clone(),
                state.clone(),
                models_dir,
                &initial.version,
                reference,
                stop.clone(),
            )
            .map_err(|e| RuntimeError::Io(format!("drift thread: {e}")))?;
            Some((m, thread))
        } else {
            None
        };
        let (drift, drift_thread) = match drift {
            Some((m, t)) => (Some(m), Some(t)),
            None => (None, None),
        };
        let models = Arc::new(ModelStore::new(initial));
        let threads = match config.pipeline.cpu_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pool = Arc::new(CpuPool::new(threads).map_err(|e| RuntimeError::Io(e.to_string()))?);
        let erasures = Arc::new(crate::compaction::Pending::new(replay.erasures));
        let writer = {
            let (st, drift, pending) = (state.clone(), drift.clone(), erasures.clone());
            Arc::new(LogWriter::spawn(
                log,
                Box::new(move |m, seq| {
                    st.apply_logged(m, seq);
                    if matches!(
                        m,
                        Mutation::EraseUser { .. } | Mutation::DeleteFeedback { .. }
                    ) {
                        pending.add();
                    }
                    if let Some(d) = &drift {
                        d.observe_mutation(m);
                    }
                }),
                config.storage.queue,
            )?)
        };
        let sink = match &bus {
            Some(b) => Sink::Bus(b.clone()),
            None => Sink::Log(writer.clone()),
        };
        // The store resolves ids through this replica's catalog, so it connects after replay.
        let redis = if config.storage.backend == StorageBackend::Redis {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                RuntimeError::Config("storage.backend = redis needs Engine::open_async".into())
            })?;
            let connect =
                cascade_scaleout::RedisStore::connect(config.storage.redis.clone(), state.clone());
            Some(Arc::new(handle.block_on(connect).map_err(|e| {
                RuntimeError::Io(format!("storage.redis: {e}"))
            })?))
        } else {
            None
        };
        let env = Env {
            store: redis
                .clone()
                .map(|s| s as Arc<dyn cascade_features::FeatureStore>),
            state: state.clone(),
            models: models.clone(),
            pool,
            popular_size: config.models.popular_size,
            popular_per_category: config.models.popular_per_category,
            faults: Arc::default(),
            breakers: Arc::new(cascade_pipeline::Breakers::new(
                config.pipeline.breaker_failures,
                Duration::from_millis(config.pipeline.breaker_cooldown_ms),
            )),
        };
        let queue: Arc<dyn MutationQueue> = Arc::new(sink.clone());
        let observer = drift
            .clone()
            .map(|d| d as Arc<dyn cascade_surfaces::ServedObserver>);
        let pipelines = config
            .surfaces
            .iter()
            .map(|(name, surface)| {
                Ok((
                    name.clone(),
                    Arc::new(
                        cascade_surfaces::build_pipeline(
                            surface,
                            name,
                            Some(&queue),
                            observer.as_ref(),
                            &env.pool,
                        )
                        .map_err(RuntimeError::Config)?,
                    ),
                ))
            })
            .collect::<Result<HashMap<_, _>, RuntimeError>>()?;
        let folder = Arc::new(parking_lot::Mutex::new(ItemFolder::new()));
        // The ranker trains in the background: the engine answers at once, in the pre-ranker's
        // order (`degraded` says so), and the trees are published when ready.
        let ranker_job = if train_ranker {
            let (cfg, ms, log_dir) = (config.clone(), models.clone(), dir.log_dir());
            let job = std::thread::Builder::new()
                .name("cascade-ranker".into())
                .spawn(move || {
                    if let Some(r) = start_ranker(&cfg, &log_dir) {
                        ms.publish_ranker(r);
                    }
                })
                .map_err(|e| RuntimeError::Io(format!("ranker thread: {e}")))?;
            parking::Once::new(job)
        } else {
            parking::Once::empty()
        };
        // Experiments: arms that pin a bundle get their own model store (checked like a
        // bundle load: checksums and a valid ranker), kept on live popular lists.
        let experiments = {
            let (state, config) = (state.clone(), config.clone());
            let popular = models.load().popular.clone();
            crate::experiments::build(&config, Some(&queue), &env, |version| {
                let dir = cascade_index::bundle::models_dir(&config.data_dir).join(version);
                let b = Bundle::load(&dir, config.models.hnsw)
                    .map_err(|e| RuntimeError::Config(e.to_string()))?;
                let m = models_from_bundle_with(
                    &state,
                    &config.models,
                    b,
                    Some(popular.clone()),
                    false,
                );
                Ok(Arc::new(ModelStore::new(m)))
            })?
        };
        let arm_stores = experiments
            .iter()
            .flat_map(|x| x.arms.iter().filter_map(|a| a.models.clone()))
            .collect();
        let suggestions = Arc::new(Suggestions::build(&state));
        let mut handle = spawn_data_loop(
            state,
            models,
            arm_stores,
            folder.clone(),
            suggestions.clone(),
            config.clone(),
            stop.clone(),
        )?;
        handle.extend(drift_thread);
        if bus.is_none() {
            handle.push(crate::compaction::spawn(
                writer.clone(),
                config.clone(),
                erasures.clone(),
                stop.clone(),
            )?);
        }
        tracing::info!(ms = started.elapsed().as_millis() as u64, "engine ready");
        Ok(Arc::new(Self {
            config,
            env,
            writer,
            sink,
            redis,
            bus: std::sync::OnceLock::new(),
            pipelines,
            replay,
            folder,
            stop,
            data_loop: parking::Once::new(handle),
            ranker_job,
            activating: AtomicBool::new(false),
            experiments,
            suggestions,
            drift,
            erasures,
            _dir: dir,
        }))
    }

    /// [`Engine::open`] off the async runtime; on the `nats` bus, also connects the bus (and
    /// Redis), replicates the stream into the state — returning once caught up with what
    /// the stream held at start — and joins the feature-updater group.
    pub async fn open_async(config: impl Into<EngineConfig>) -> Result<Arc<Self>, RuntimeError> {
        let config = config.into();
        config.validate()?;
        let bus = if config.bus.backend == BusBackend::Nats {
            Some(
                cascade_scaleout::NatsBus::connect(config.bus.nats.clone())
                    .await
                    .map_err(|e| RuntimeError::Bus(e.to_string()))?,
            )
        } else {
            None
        };
        let opening = bus.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open_with(config, opening))
            .await
            .map_err(|e| RuntimeError::Io(format!("engine start panicked: {e}")))??;
        if let Some(bus) = bus {
            let store = engine.redis.clone();
            engine.attach_bus(bus, store).await?;
        }
        Ok(engine)
    }

    /// Starts replication and the feature updater; waits until the stream as it was at start
    /// is applied.
    async fn attach_bus(
        self: &Arc<Self>,
        bus: Arc<cascade_scaleout::NatsBus>,
        store: Option<Arc<cascade_scaleout::RedisStore>>,
    ) -> Result<(), RuntimeError> {
        let err = |e: cascade_scaleout::ScaleoutError| RuntimeError::Bus(e.to_string());
        let last = bus.last_seq().await.map_err(err)?;
        let state = self.env.state.clone();
        let drift = self.drift.clone();
        let replication = bus
            .replicate(1, move |_, m| {
                state.apply(&m);
                if let Some(d) = &drift {
                    d.observe_mutation(&m);
                }
            })
            .await
            .map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(s) = &store {
            let store = Arc::new(FaultInjected {
                store: s.clone(),
                faults: self.env.faults.clone(),
            });
            bus.run_updater(store, stop.clone()).await.map_err(err)?;
        }
        let caught_up = replication
            .wait_for(last, Duration::from_secs(self.config.bus.catch_up_s))
            .await;
        if !caught_up {
            return Err(RuntimeError::Bus(format!(
                "replication did not reach the stream's sequence {last} within {} s",
                self.config.bus.catch_up_s
            )));
        }
        tracing::info!(applied = replication.applied(), "replicating the event bus");
        self.bus
            .set(BusLinks { replication, stop })
            .map_err(|_| RuntimeError::Io("bus attached twice".into()))?;
        Ok(())
    }

    /// Commits an API write. On the bus, also waits (briefly) until this replica has applied
    /// it, so the writer's next request to this replica sees it.
    pub async fn commit(&self, m: Mutation) -> Result<u64, RuntimeError> {
        let seq = self.sink.commit(m).await?;
        if let Some(links) = self.bus.get() {
            links
                .replication
                .wait_for(seq, Duration::from_secs(1))
                .await;
        }
        Ok(seq)
    }

    /// [`Engine::commit`] of several mutations as one unit (see [`Sink::commit_all`]).
    pub async fn commit_all(&self, ms: Vec<Mutation>) -> Result<u64, RuntimeError> {
        if ms.is_empty() {
            return Ok(0);
        }
        let seq = self.sink.commit_all(ms).await?;
        if let Some(links) = self.bus.get() {
            links
                .replication
                .wait_for(seq, Duration::from_secs(1))
                .await;
        }
        Ok(seq)
    }

    /// Runs the surface's pipeline.
    pub async fn recommend(
        &self,
        pipeline: &Arc<Pipeline>,
        query: cascade_pipeline::Query,
    ) -> PipelineResult {
        pipeline.execute(&self.env, query).await
    }

    /// Serves `query` on `surface`: through the arm of the surface's experiment the user is
    /// assigned to (naming it in `query.experiment`), else through the surface's pipeline.
    /// `None` for an unknown surface.
    pub async fn serve(
        &self,
        surface: &str,
        mut query: cascade_pipeline::Query,
    ) -> Option<PipelineResult> {
        if let Some(x) = self
            .experiments
            .iter()
            .find(|x| x.config.surface == surface)
        {
            let arm = x.assign(&query.user_id);
            query.experiment = Some(arm.key.clone());
            let env = arm.env.as_ref().unwrap_or(&self.env);
            return Some(arm.pipeline.execute(env, query).await);
        }
        let p = self.pipelines.get(surface)?;
        Some(p.execute(&self.env, query).await)
    }

    /// Feeds the events logged after the active bundle's training data to the drift monitor
    /// and waits until they are counted: what `cascade drift --data-dir` reports, since a
    /// stopped server has no live windows (the served-list signals need a running one).
    /// Returns the events fed.
    pub fn drift_from_log(&self) -> Result<u64, RuntimeError> {
        let Some(m) = &self.drift else {
            return Ok(0);
        };
        let models_dir = cascade_index::bundle::models_dir(&self.config.data_dir);
        let since = Bundle::current(&models_dir)
            .ok()
            .flatten()
            .and_then(|d| Bundle::read_manifest(&d).ok())
            .map_or(i64::MIN, |b| b.data.last_event_ms);
        let mut n = 0;
        for mu in cascade_storage::EventLog::read_all(&self._dir.log_dir())? {
            if let Mutation::Events(v) = mu {
                let after: Vec<_> = v.into_iter().filter(|e| e.ts > since).collect();
                if !after.is_empty() {
                    n += after.len() as u64;
                    m.feed(after);
                }
            }
        }
        m.flush(Duration::from_secs(60));
        Ok(n)
    }

    /// Suggestions for a prefix (see [`Suggestions::suggest`]).
    pub fn suggest(&self, query: &crate::suggest::SuggestQuery) -> Vec<crate::suggest::Suggestion> {
        self.suggestions.suggest(&self.env.state, query)
    }

    /// Whether the ranker training started at open is still running.
    pub fn ranker_pending(&self) -> bool {
        self.ranker_job.peek(|job| !job.is_finished())
    }

    /// Blocks until the ranker training started at open (if any) has finished and published;
    /// tools that evaluate the full cascade call it first.
    pub fn wait_for_ranker(&self) {
        if let Some(job) = self.ranker_job.take() {
            let _ = job.join();
        }
    }

    /// Writes a snapshot of the state now (the data loop does this every
    /// `storage.snapshot_interval_s`).
    /// Compacts the local log now (blocking: call off the async runtime), as the compactor
    /// thread does every `storage.compaction_interval_s`.
    pub fn compact_now(&self) -> Result<cascade_storage::CompactStats, RuntimeError> {
        crate::compaction::compact_now(&self.writer, &self.config, &self.erasures)
    }

    pub fn snapshot_now(&self) -> Result<(std::path::PathBuf, u64), RuntimeError> {
        write_snapshot(&self.env.state, &self.config)
    }

    /// Rebuilds models now (tests and tools; the data loop does this periodically).
    pub fn rebuild_models(&self) {
        let prev = self.env.models.load();
        let models = build_models(&self.env.state, &self.config, true, Some(&prev));
        self.env.models.publish(models);
    }

    /// Inserts items added or first engaged with since training into the ANN index now (the
    /// data loop does this every `popular_refresh_ms`); returns how many were placed.
    pub fn fold_new_items(&self) -> usize {
        fold_step(&self.folder, &self.env.state, &self.env.models)
    }

    /// Commits what is queued, stops the data loop and the writer. The data dir is released
    /// when the last `Arc<Engine>` drops.
    pub async fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(links) = self.bus.get() {
            links.stop.store(true, Ordering::SeqCst);
            links.replication.stop();
        }
        self.writer.close().await;
        if let Some(handles) = self.data_loop.take() {
            let _ = tokio::task::spawn_blocking(move || {
                for h in handles {
                    let _ = h.join();
                }
            })
            .await;
        }
    }
}

/// A value taken at most once through `&self`.
mod parking {
    use std::sync::Mutex;

    pub struct Once<T>(Mutex<Option<T>>);

    impl<T> Once<T> {
        pub fn new(v: T) -> Self {
            Self(Mutex::new(Some(v)))
        }

        pub fn empty() -> Self {
            Self(Mutex::new(None))
        }

        /// Whether a value is held and (for a thread) still running.
        pub fn peek(&self, f: impl FnOnce(&T) -> bool) -> bool {
            match self.0.lock() {
                Ok(g) => g.as_ref().is_some_and(f),
                Err(p) => p.into_inner().as_ref().is_some_and(f),
            }
        }

        pub fn take(&self) -> Option<T> {
            match self.0.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            }
        }
    }
}
