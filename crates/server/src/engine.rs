//! The engine: data dir, log replay, live state, derived models, the data loop that rebuilds
//! them, the group-commit writer, and one pipeline per configured surface.

use crate::config::{Config, FilterKind, HydratorKind, SelectorKind, SideEffectKind, SourceKind};
use crate::error::ServerError;
use crate::training;
use cascade_core::Idx;
use cascade_core::{Event, EventKind, Mutation, Target};
use cascade_features::State;
use cascade_features::state::ItemHot;
use cascade_features::state::StateConfig;
use cascade_index::{
    AnnConfig, AnnIndex, Bundle, CoVisitation, Embeddings, ItemFolder, ModelStore, Models,
    PopularLists,
};
use cascade_pipeline::{
    CandidateSource, ComponentError, CpuPool, Dependency, Env, Fault, Filter, Hydrator, Pipeline,
    PipelineResult, RequestCtx, Scorer, Selector, SideEffect, SourceSlot, StageBudgets,
};
use cascade_policy::{
    Blocklist, Boosts, Exploration, FrequencyCap, Mmr, PinnedSlots, SafetyFilter, SeenFilter,
    SponsoredLimit, TemplateExplainer, TopScore, WindowDiversity,
};
use cascade_ranking::{
    BlendScorer, ContextHydrator, GbdtScorer, ItemHydrator, RetrievalHydrator, UserHydrator,
    UserItemHydrator, schema_for,
};
use cascade_sources::{
    EditorialSource, EmbeddingSource, FollowsSource, FreshSource, ItemSimilaritySource,
    PopularSource, TrendingSource,
};
use cascade_storage::{DataDir, EventLog, LogOptions, LogWriter, ReplayStats};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where accepted mutations are committed: the local log (embedded) or the event bus.
#[derive(Debug, Clone)]
pub enum Sink {
    Log(Arc<LogWriter>),
    Bus(Arc<cascade_scaleout::NatsBus>),
}

impl Sink {
    /// Commits `m` durably (fsynced to the log, or acknowledged by JetStream); returns its
    /// position (log sequence or stream sequence).
    pub async fn commit(&self, m: Mutation) -> Result<u64, ServerError> {
        match self {
            Sink::Log(w) => Ok(w.submit(m).await?),
            Sink::Bus(b) => b
                .publish(&m)
                .await
                .map_err(|e| ServerError::Bus(e.to_string())),
        }
    }

    /// Queues `m` without waiting (side effects); `Err` rather than block when full.
    pub fn commit_nowait(&self, m: Mutation) -> Result<(), ServerError> {
        match self {
            Sink::Log(w) => Ok(w.submit_nowait(m)?),
            Sink::Bus(b) => b
                .publish_nowait(&m)
                .map_err(|e| ServerError::Bus(e.to_string())),
        }
    }
}

/// What a replica on the bus runs beside serving.
#[derive(Debug)]
pub struct BusLinks {
    /// The stream, replicated into this replica's state.
    pub replication: cascade_scaleout::Replication,
    stop: Arc<AtomicBool>,
}

/// Everything a running Cascade holds.
pub struct Engine {
    pub config: Config,
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
    _dir: DataDir,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// Builds the current model set from the state: popular lists and co-visitation always, and
/// when `train_embeddings` also embeddings, the HNSW index and embedding neighbours (through
/// [`training::train`], the code `cascade train` runs); otherwise the `previous` ones stay.
pub fn build_models(
    state: &State,
    config: &Config,
    train_embeddings: bool,
    previous: Option<&Models>,
) -> Models {
    let m = &config.models;
    if train_embeddings && m.embeddings {
        let t = Instant::now();
        let opts = training::TrainOptions { holdout_users: 0 };
        let bundle = training::train(state, config, &opts, &|_, _, _| {});
        tracing::info!(
            secs = t.elapsed().as_secs_f64(),
            als_secs = bundle.manifest.metrics.als_seconds,
            users = bundle.manifest.data.users,
            items = bundle.manifest.data.items,
            "trained models"
        );
        let mut models = models_from_bundle(state, config, bundle);
        // The ranker is trained from the log, not from this snapshot: keep the current one.
        models.ranker = previous.and_then(|p| p.ranker.clone());
        return models;
    }
    let (popular, seqs, n_items, generation) = {
        let g = state.read();
        let popular = PopularLists::build_live(&g, m.popular_size, m.popular_per_category);
        let seqs = CoVisitation::sequences(&g, m.covis.max_history);
        (popular, seqs, g.items.len(), g.generation)
    };
    // The heavy part runs without the lock.
    let covis = CoVisitation::build(&seqs, n_items, &m.covis);
    Models {
        version: previous.map_or_else(
            || format!("heuristic-v1.g{generation}"),
            |p| p.version.clone(),
        ),
        popular: Arc::new(popular),
        covis: Arc::new(covis),
        embeddings: previous.and_then(|p| p.embeddings.clone()),
        ann: previous.and_then(|p| p.ann.clone()),
        item_neighbors: previous
            .map(|p| p.item_neighbors.clone())
            .unwrap_or_default(),
        ranker: previous.and_then(|p| p.ranker.clone()),
    }
}

/// Serving models from a trained bundle. Artifacts are indexed by the dense ids of the state
/// they were trained on; when this state interned ids differently (another log), they are
/// remapped by id and the HNSW index rebuilt. Items newer than the bundle are folded in.
pub fn models_from_bundle(state: &State, config: &Config, b: Bundle) -> Models {
    models_from_bundle_with(state, config, b, None, true)
}

/// [`models_from_bundle`], reusing `popular` lists when given: they come from the live state,
/// not from the bundle, so an activation under load need not rebuild them. With `fold`, items
/// newer than the bundle are logged for fold-in into its index (the serving set only; an
/// experiment arm's pinned bundle does not fold).
pub fn models_from_bundle_with(
    state: &State,
    config: &Config,
    b: Bundle,
    popular: Option<Arc<PopularLists>>,
    fold: bool,
) -> Models {
    let m = &config.models;
    let (popular, item_map, user_map, live, n_items, n_users) = {
        let g = state.read();
        let popular = popular.unwrap_or_else(|| {
            Arc::new(PopularLists::build_live(
                &g,
                m.popular_size,
                m.popular_per_category,
            ))
        });
        let item_map: Vec<Option<Idx>> = b.item_ids.iter().map(|id| g.items.get(id)).collect();
        let user_map: Vec<Option<Idx>> = b.user_ids.iter().map(|id| g.users.get(id)).collect();
        let live: Vec<bool> = g
            .item_hot
            .iter()
            .map(|h| h.flags & ItemHot::EXISTS != 0)
            .collect();
        (
            popular,
            item_map,
            user_map,
            live,
            g.items.len(),
            g.users.len(),
        )
    };
    let identity = |map: &[Option<Idx>]| map.iter().enumerate().all(|(i, j)| *j == Some(i as Idx));
    let same_items = identity(&item_map);
    let Bundle {
        manifest,
        mut embeddings,
        mut covis,
        mut item_neighbors,
        mut ann,
        ranker,
        ..
    } = b;
    if !same_items || !identity(&user_map) {
        tracing::warn!(
            version = %manifest.version,
            "bundle ids differ from this data dir's; remapping by id"
        );
        let d = embeddings.dim;
        let remap = |src: &[f32], map: &[Option<Idx>], n: usize| {
            let mut out = vec![0f32; n * d];
            for (i, j) in map.iter().enumerate() {
                if let (Some(j), Some(v)) = (j, src.get(i * d..(i + 1) * d)) {
                    out[*j as usize * d..(*j as usize + 1) * d].copy_from_slice(v);
                }
            }
            out
        };
        embeddings.items = remap(&embeddings.items, &item_map, n_items);
        embeddings.users = remap(&embeddings.users, &user_map, n_users);
        let mut back: Vec<Option<Idx>> = vec![None; n_items];
        for (i, j) in item_map.iter().enumerate() {
            if let Some(j) = j {
                back[*j as usize] = Some(i as Idx);
            }
        }
        let remap_lists = |l: &CoVisitation| {
            CoVisitation::from_rows(
                back.iter()
                    .map(|i| {
                        i.map(|i| {
                            let (nb, ws) = l.neighbors(i);
                            nb.iter()
                                .zip(ws)
                                .filter_map(|(&b, &w)| item_map.get(b as usize)?.map(|b| (b, w)))
                                .collect()
                        })
                        .unwrap_or_default()
                    })
                    .collect(),
            )
        };
        covis = remap_lists(&covis);
        item_neighbors = remap_lists(&item_neighbors);
        if !same_items {
            ann = None;
        }
    }
    let ann = match ann {
        Some(a) => Some(Arc::new(a)),
        None if m.ann => build_ann(&embeddings, &live, &m.hnsw),
        None => None,
    };
    if fold {
        state.start_fold_log(Some(embeddings.n_items() as Idx));
    }
    Models {
        version: manifest.version,
        popular,
        covis: Arc::new(covis),
        embeddings: Some(Arc::new(embeddings)),
        ann,
        item_neighbors: Arc::new(item_neighbors),
        ranker: ranker.map(Arc::new),
    }
}

/// The current bundle of `config.data_dir`, if one was trained and loads; a bundle that
/// fails to load is reported and skipped (the engine then trains in process).
fn load_bundle(config: &Config) -> Option<Bundle> {
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

/// The HNSW index over the trained vectors of live items; `None` (the source then scans
/// exactly) if the native index cannot be built.
pub fn build_ann(e: &Embeddings, live: &[bool], cfg: &AnnConfig) -> Option<Arc<AnnIndex>> {
    let t = Instant::now();
    let keep = |i: u32| live.get(i as usize).copied().unwrap_or(false);
    match AnnIndex::build(&e.items, e.dim, *cfg, keep, |_| {}) {
        Ok(ann) => {
            tracing::info!(
                secs = t.elapsed().as_secs_f64(),
                items = ann.len(),
                bytes = ann.memory_bytes(),
                "built ann index"
            );
            metrics::gauge!("cascade_ann_items").set(ann.len() as f64);
            Some(Arc::new(ann))
        }
        Err(e) => {
            tracing::error!(error = %e, "ann index build failed; embedding source scans exactly");
            None
        }
    }
}

/// A data dir opened (and locked) with its log replayed into a fresh state.
pub struct Replayed {
    pub dir: DataDir,
    pub state: Arc<State>,
    pub log: EventLog,
    pub replay: ReplayStats,
}

/// Where the embedded state's snapshots live.
pub fn snapshots_dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("snapshots")
}

/// Snapshots cover the local log only: a replica on the bus rebuilds from the stream.
fn snapshots_enabled(config: &Config) -> bool {
    config.storage.snapshot_interval_s > 0
        && config.bus.backend == crate::config::BusBackend::Embedded
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
    config: &Config,
) -> Result<(std::path::PathBuf, u64), ServerError> {
    let t = Instant::now();
    let snap = cascade_features::Snapshot::of(&state.read());
    let copied = t.elapsed();
    let out = snap
        .write(&snapshots_dir(config), config.storage.snapshot_keep)
        .map_err(|e| ServerError::Io(e.to_string()))?;
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

/// Trains the heavy ranker from the log at start (no bundle); without one the surfaces keep
/// the pre-ranker's order and say so in `degraded`.
fn start_ranker(config: &Config, log_dir: &std::path::Path) -> Option<Arc<cascade_gbdt::Model>> {
    let t = Instant::now();
    match crate::ranker::train_from_log(config, log_dir, None, &|_, _, _| {}) {
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

/// An empty state configured as `config` says.
pub fn new_state(config: &Config) -> State {
    State::with_segments(
        StateConfig {
            weights: config.features.weights,
            popularity_half_life_hours: config.features.popularity_half_life_hours,
            trending_half_life_hours: config.features.trending_half_life_hours,
            history_cap: config.features.history_cap,
            seen_cap: config.features.seen_cap,
            time_log_cap: config.features.time_log_cap,
        },
        config.features.segments.clone(),
    )
}

/// Opens `config.data_dir` and replays its log: what serving and `cascade train` start from.
pub fn replay(config: &Config) -> Result<Replayed, ServerError> {
    let started = Instant::now();
    let dir = DataDir::open(&config.data_dir)?;
    let state = Arc::new(new_state(config));
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
            Err(cascade_storage::StorageError::SnapshotAhead { snapshot, log }) => {
                // The log lost records a snapshot holds (restored from an older backup?):
                // the log is the truth, replay it all.
                tracing::warn!(snapshot, log, "snapshot ahead of the log; full replay");
                let fresh = new_state(config);
                st.replace(fresh.into_inner());
                EventLog::open_from(opts, 0, &mut |m, seq| st.apply_logged(&m, seq))?
            }
            other => other?,
        }
    };
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

impl Engine {
    /// Opens the data dir, replays the log, builds models and pipelines, starts the writer
    /// and the data loop. Blocking: call from a blocking context (see [`Engine::open_async`]).
    /// Embedded bus only: a replica on NATS opens with [`Engine::open_async`].
    pub fn open(config: Config) -> Result<Arc<Self>, ServerError> {
        if config.bus.backend != crate::config::BusBackend::Embedded {
            return Err(ServerError::Config(
                "bus.backend: a replica on the bus is opened with Engine::open_async".into(),
            ));
        }
        Self::open_with(config, None)
    }

    /// Opens with `bus` as the sink when given. Connects Redis (blocking on the runtime's
    /// handle: this runs on a blocking thread) when the store is remote.
    fn open_with(
        config: Config,
        bus: Option<Arc<cascade_scaleout::NatsBus>>,
    ) -> Result<Arc<Self>, ServerError> {
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
                models_from_bundle(&state, &config, b)
            }
            None => build_models(&state, &config, true, None),
        };
        let train_ranker = initial.ranker.is_none() && config.models.ranker.enabled;
        let models = Arc::new(ModelStore::new(initial));
        let threads = match config.pipeline.cpu_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pool = Arc::new(CpuPool::new(threads).map_err(|e| ServerError::Io(e.to_string()))?);
        let writer = {
            let st = state.clone();
            Arc::new(LogWriter::spawn(
                log,
                Box::new(move |m, seq| st.apply_logged(m, seq)),
                config.storage.queue,
            )?)
        };
        let sink = match &bus {
            Some(b) => Sink::Bus(b.clone()),
            None => Sink::Log(writer.clone()),
        };
        // The store resolves ids through this replica's catalog, so it connects after replay.
        let redis = if config.storage.backend == crate::config::StorageBackend::Redis {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                ServerError::Config("storage.backend = redis needs Engine::open_async".into())
            })?;
            let connect =
                cascade_scaleout::RedisStore::connect(config.storage.redis.clone(), state.clone());
            Some(Arc::new(handle.block_on(connect).map_err(|e| {
                ServerError::Io(format!("storage.redis: {e}"))
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
        let pipelines = config
            .surfaces
            .keys()
            .map(|name| {
                Ok((
                    name.clone(),
                    Arc::new(build_pipeline(&config, name, Some(&sink), &env.pool)?),
                ))
            })
            .collect::<Result<HashMap<_, _>, ServerError>>()?;
        let stop = Arc::new(AtomicBool::new(false));
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
                .map_err(|e| ServerError::Io(format!("ranker thread: {e}")))?;
            parking::Once::new(job)
        } else {
            parking::Once::empty()
        };
        // Experiments: arms that pin a bundle get their own model store (checked like a
        // bundle load: checksums and a valid ranker), kept on live popular lists.
        let experiments = {
            let (state, config) = (state.clone(), config.clone());
            let popular = models.load().popular.clone();
            crate::experiments::build(&config, Some(&sink), &env, |version| {
                let dir = cascade_index::bundle::models_dir(&config.data_dir).join(version);
                let b = Bundle::load(&dir, config.models.hnsw)
                    .map_err(|e| ServerError::Config(e.to_string()))?;
                let m = models_from_bundle_with(&state, &config, b, Some(popular.clone()), false);
                Ok(Arc::new(ModelStore::new(m)))
            })?
        };
        let arm_stores = experiments
            .iter()
            .flat_map(|x| x.arms.iter().filter_map(|a| a.models.clone()))
            .collect();
        let handle = spawn_data_loop(
            state,
            models,
            arm_stores,
            folder.clone(),
            config.clone(),
            stop.clone(),
        )?;
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
            _dir: dir,
        }))
    }

    /// [`Engine::open`] off the async runtime; on the `nats` bus, also connects the bus (and
    /// Redis), replicates the stream into the state — returning once caught up with what
    /// the stream held at start — and joins the feature-updater group.
    pub async fn open_async(config: Config) -> Result<Arc<Self>, ServerError> {
        use crate::config::BusBackend;
        config.validate()?;
        let bus = if config.bus.backend == BusBackend::Nats {
            Some(
                cascade_scaleout::NatsBus::connect(config.bus.nats.clone())
                    .await
                    .map_err(|e| ServerError::Bus(e.to_string()))?,
            )
        } else {
            None
        };
        let opening = bus.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open_with(config, opening))
            .await
            .map_err(|e| ServerError::Io(format!("engine start panicked: {e}")))??;
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
    ) -> Result<(), ServerError> {
        let err = |e: cascade_scaleout::ScaleoutError| ServerError::Bus(e.to_string());
        let last = bus.last_seq().await.map_err(err)?;
        let state = self.env.state.clone();
        let replication = bus
            .replicate(1, move |_, m| state.apply(&m))
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
            return Err(ServerError::Bus(format!(
                "replication did not reach the stream's sequence {last} within {} s",
                self.config.bus.catch_up_s
            )));
        }
        tracing::info!(applied = replication.applied(), "replicating the event bus");
        self.bus
            .set(BusLinks { replication, stop })
            .map_err(|_| ServerError::Io("bus attached twice".into()))?;
        Ok(())
    }

    /// Commits an API write. On the bus, also waits (briefly) until this replica has applied
    /// it, so the writer's next request to this replica sees it.
    pub async fn commit(&self, m: Mutation) -> Result<u64, ServerError> {
        let seq = self.sink.commit(m).await?;
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
    pub fn snapshot_now(&self) -> Result<(std::path::PathBuf, u64), ServerError> {
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

/// The data loop, as two threads so that a long model build never delays the popular lists:
/// one rebuilds popular, trending and fresh lists every `popular_refresh_ms`; the other
/// rebuilds co-visitation every `covis_refresh_s` and retrains embeddings every
/// `embeddings_refresh_s`, each only when model-relevant mutations arrived.
fn spawn_data_loop(
    state: Arc<State>,
    models: Arc<ModelStore>,
    arm_stores: Vec<Arc<ModelStore>>,
    folder: Arc<parking_lot::Mutex<ItemFolder>>,
    config: Config,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, ServerError> {
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| ServerError::Io(format!("{name} thread: {e}")))
    };
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
    let mut threads = vec![popular, heavy];
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

fn fold_step(folder: &parking_lot::Mutex<ItemFolder>, state: &State, models: &ModelStore) -> usize {
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

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Builds a surface's pipeline from its declarative configuration.
/// Without a `sink`, side effects that log are left out (ranker training runs pipelines
/// over a past state and must not write).
pub fn build_pipeline(
    config: &Config,
    surface: &str,
    sink: Option<&Sink>,
    pool: &Arc<CpuPool>,
) -> Result<Pipeline, ServerError> {
    let s = config
        .surfaces
        .get(surface)
        .ok_or_else(|| ServerError::Config(format!("surfaces.{surface} missing")))?;
    let sources: Vec<SourceSlot> = s
        .sources
        .iter()
        .map(|sc| {
            let source: Arc<dyn CandidateSource> = match sc.kind {
                SourceKind::Popular => Arc::new(PopularSource),
                SourceKind::Similar => Arc::new(ItemSimilaritySource {
                    config: sc.similar.unwrap_or_default(),
                    pool: pool.clone(),
                }),
                SourceKind::Trending => Arc::new(TrendingSource),
                SourceKind::Fresh => Arc::new(FreshSource {
                    config: sc.fresh.unwrap_or_default(),
                }),
                SourceKind::Follows => Arc::new(FollowsSource { pool: pool.clone() }),
                SourceKind::Editorial => Arc::new(EditorialSource),
                SourceKind::Embedding => Arc::new(EmbeddingSource {
                    config: sc.embedding.unwrap_or_default(),
                    pool: pool.clone(),
                }),
            };
            SourceSlot {
                source,
                limit: sc.limit,
                timeout: Duration::from_millis(sc.timeout_ms),
                protected: sc
                    .protected
                    .unwrap_or(matches!(sc.kind, SourceKind::Editorial | SourceKind::Fresh)),
            }
        })
        .collect();
    let names: Vec<String> = sources
        .iter()
        .map(|s| s.source.name().to_string())
        .collect();
    let schema = schema_for(&names);
    let hydrators: Vec<Arc<dyn Hydrator>> = s
        .hydrators
        .iter()
        .map(|h| -> Result<Arc<dyn Hydrator>, ComponentError> {
            Ok(match h {
                HydratorKind::Retrieval => Arc::new(RetrievalHydrator::new(&schema, &names)?),
                HydratorKind::Item => Arc::new(ItemHydrator::new(&schema)?),
                HydratorKind::User => Arc::new(UserHydrator::new(&schema)?),
                HydratorKind::UserItem => Arc::new(UserItemHydrator::new(&schema)?),
                HydratorKind::Context => Arc::new(ContextHydrator::new(&schema)?),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Config(format!("surfaces.{surface}.hydrators: {e}")))?;
    let filters: Vec<Arc<dyn Filter>> = s
        .filters
        .iter()
        .map(|f| -> Arc<dyn Filter> {
            match f {
                FilterKind::Safety => Arc::new(SafetyFilter),
                FilterKind::Seen => Arc::new(SeenFilter),
                FilterKind::FrequencyCap => Arc::new(FrequencyCap {
                    config: s.frequency_cap,
                }),
                FilterKind::Blocklist => Arc::new(Blocklist {
                    config: s.blocklist.clone(),
                }),
            }
        })
        .collect();
    // Diversity and MMR keep the sponsored limits while they fill, when the surface has them.
    let sponsored = s
        .selectors
        .contains(&SelectorKind::Sponsored)
        .then_some(s.sponsored);
    let selectors: Vec<Arc<dyn Selector>> = s
        .selectors
        .iter()
        .map(|k| -> Arc<dyn Selector> {
            match k {
                SelectorKind::TopScore => Arc::new(TopScore),
                SelectorKind::Diversity => Arc::new(WindowDiversity {
                    config: s.diversity,
                    sponsored,
                }),
                SelectorKind::Mmr => Arc::new(Mmr {
                    config: s.mmr,
                    sponsored,
                }),
                SelectorKind::Exploration => Arc::new(Exploration {
                    config: s.exploration,
                }),
                SelectorKind::Pinned => Arc::new(PinnedSlots),
                SelectorKind::Sponsored => Arc::new(SponsoredLimit {
                    config: s.sponsored,
                }),
            }
        })
        .collect();
    let side_effects: Vec<Arc<dyn SideEffect>> = s
        .side_effects
        .iter()
        .filter_map(|k| -> Option<Arc<dyn SideEffect>> {
            match k {
                SideEffectKind::Impressions => Some(Arc::new(ImpressionLogger {
                    sink: sink?.clone(),
                })),
            }
        })
        .collect();
    let mut scorers: Vec<Arc<dyn Scorer>> = Vec::new();
    if s.heavy_ranker {
        scorers.push(Arc::new(GbdtScorer::default()));
    }
    if !s.boosts.is_empty() {
        scorers.push(Arc::new(Boosts {
            rules: s.boosts.clone(),
        }));
    }
    Ok(Pipeline {
        surface: surface.to_string(),
        prerank: Some(Arc::new(BlendScorer::new(s.scorer.clone(), &names))),
        prerank_keep: s.prerank_keep,
        scorers,
        sources,
        candidate_budget: s.candidate_budget,
        schema: Arc::new(schema),
        hydrators,
        filters,
        selectors,
        explainer: Arc::new(TemplateExplainer {
            templates: s.reasons.clone(),
        }),
        side_effects,
        fallback: s.fallback,
        budgets: StageBudgets {
            total: Duration::from_millis(s.budget_ms),
            hydrate: Duration::from_millis(s.hydrate_ms),
            rank: Duration::from_millis(s.rank_ms),
        },
    })
}

/// The feature updater's store behind the injected `features` fault: a game day can make
/// this replica's writes fail or hang (the bus then redelivers them to another replica).
#[derive(Debug)]
struct FaultInjected {
    store: Arc<cascade_scaleout::RedisStore>,
    faults: Arc<cascade_pipeline::Faults>,
}

#[async_trait::async_trait]
impl cascade_features::FeatureStore for FaultInjected {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    async fn user(
        &self,
        user_id: &str,
    ) -> Result<Option<cascade_features::UserState>, cascade_features::StoreError> {
        self.store.user(user_id).await
    }

    async fn apply(&self, seq: u64, events: &[Event]) -> Result<(), cascade_features::StoreError> {
        self.faults
            .before_async(Dependency::Features)
            .await
            .map_err(|e| cascade_features::StoreError::Unavailable(e.to_string()))?;
        self.store.apply(seq, events).await
    }
}

/// Logs one `impression` event per returned item, attributed by request id and position,
/// without waiting: a full queue drops impressions (counted) rather than slow the response.
struct ImpressionLogger {
    sink: Sink,
}

impl SideEffect for ImpressionLogger {
    fn name(&self) -> &str {
        "impressions"
    }

    fn run(&self, ctx: &RequestCtx, result: &PipelineResult) -> Result<(), ComponentError> {
        if result.items.is_empty() {
            return Ok(());
        }
        if ctx.faults.get(Dependency::Bus) == Some(Fault::Error) {
            let n = result.items.len() as u64;
            metrics::counter!("cascade_impressions_dropped_total").increment(n);
            return Err(ComponentError::Unavailable("bus".into()));
        }
        let q = &ctx.query;
        let events: Vec<Event> = {
            let g = ctx.state.read();
            result
                .items
                .iter()
                .enumerate()
                .map(|(pos, c)| Event {
                    kind: EventKind::Impression,
                    user_id: q.user_id.clone(),
                    target: Target::Item(g.item_id(c.item).to_string()),
                    value: 1.0,
                    fraction: None,
                    ts: q.now,
                    request_id: Some(q.request_id.clone()),
                    surface: Some(q.surface.clone()),
                    position: Some(pos as u32),
                    propensity: Some(c.propensity),
                    experiment: q.experiment.clone(),
                })
                .collect()
        };
        let n = events.len() as u64;
        if self.sink.commit_nowait(Mutation::Events(events)).is_err() {
            metrics::counter!("cascade_impressions_dropped_total").increment(n);
            return Err(ComponentError::Unavailable("log queue full".into()));
        }
        Ok(())
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
