//! The engine: data dir, log replay, live state, derived models, the data loop that rebuilds
//! them, the group-commit writer, and one pipeline per configured surface.

use crate::config::{Config, FilterKind, HydratorKind, SelectorKind, SideEffectKind, SourceKind};
use crate::error::ServerError;
use cascade_core::{Event, EventKind, Mutation, Target};
use cascade_features::State;
use cascade_features::state::StateConfig;
use cascade_index::{CoVisitation, Interactions, ModelStore, Models, PopularLists};
use cascade_pipeline::{
    CandidateSource, CpuPool, Env, Filter, Hydrator, Pipeline, PipelineResult, RequestCtx,
    Selector, SideEffect, SourceSlot, StageBudgets,
};
use cascade_policy::{SafetyFilter, SeenFilter, TemplateExplainer, TopScore};
use cascade_ranking::{BlendScorer, ItemHydrator, UserItemHydrator, default_schema};
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

/// Everything a running Cascade holds.
pub struct Engine {
    pub config: Config,
    pub env: Env,
    pub writer: Arc<LogWriter>,
    pub pipelines: HashMap<String, Arc<Pipeline>>,
    pub replay: ReplayStats,
    stop: Arc<AtomicBool>,
    data_loop: parking::Once<Vec<JoinHandle<()>>>,
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
/// embeddings when `train_embeddings` (otherwise the `previous` ones are kept).
pub fn build_models(
    state: &State,
    config: &Config,
    train_embeddings: bool,
    previous: Option<&Models>,
) -> Models {
    let m = &config.models;
    let train_embeddings = train_embeddings && m.embeddings;
    let (popular, seqs, n_items, generation, interactions) = {
        let g = state.read();
        let popular = PopularLists::build_live(&g, m.popular_size, m.popular_per_category);
        let seqs = CoVisitation::sequences(&g, m.covis.max_history);
        let interactions = train_embeddings.then(|| {
            let t: Vec<(u32, u32, f32)> = g
                .user_states
                .iter()
                .enumerate()
                .flat_map(|(u, s)| s.engaged.iter().map(move |&(i, _)| (u as u32, i, 1.0)))
                .collect();
            Interactions::from_triples(g.users.len(), t)
        });
        (popular, seqs, g.items.len(), g.generation, interactions)
    };
    // The heavy parts run without the lock.
    let covis = CoVisitation::build(&seqs, n_items, &m.covis);
    let embeddings = match interactions {
        Some(data) => {
            let t = Instant::now();
            let e = cascade_index::als::train(&data, n_items, &m.als, |_| {});
            tracing::info!(
                secs = t.elapsed().as_secs_f64(),
                users = data.rows(),
                items = n_items,
                "trained embeddings"
            );
            Some(Arc::new(e))
        }
        None => previous.and_then(|p| p.embeddings.clone()),
    };
    Models {
        version: format!("heuristic-v1.g{generation}"),
        popular: Arc::new(popular),
        covis: Arc::new(covis),
        embeddings,
    }
}

impl Engine {
    /// Opens the data dir, replays the log, builds models and pipelines, starts the writer
    /// and the data loop. Blocking: call from a blocking context (see [`Engine::open_async`]).
    pub fn open(config: Config) -> Result<Arc<Self>, ServerError> {
        config.validate()?;
        let started = Instant::now();
        let dir = DataDir::open(&config.data_dir)?;
        let state = Arc::new(State::new(StateConfig {
            weights: config.features.weights,
            popularity_half_life_hours: config.features.popularity_half_life_hours,
            trending_half_life_hours: config.features.trending_half_life_hours,
            history_cap: config.features.history_cap,
        }));
        let mut opts = LogOptions::new(dir.log_dir());
        opts.fsync = config.storage.fsync;
        opts.segment_bytes = config.storage.segment_mb << 20;
        let (log, replay) = {
            let st = state.clone();
            EventLog::open(opts, &mut |m| st.apply(&m))?
        };
        tracing::info!(
            records = replay.records,
            truncated = replay.truncated_bytes,
            ms = started.elapsed().as_millis() as u64,
            "replayed event log"
        );
        let models = Arc::new(ModelStore::new(build_models(&state, &config, true, None)));
        let threads = match config.pipeline.cpu_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pool = Arc::new(CpuPool::new(threads).map_err(|e| ServerError::Io(e.to_string()))?);
        let writer = {
            let st = state.clone();
            Arc::new(LogWriter::spawn(
                log,
                Box::new(move |m| st.apply(m)),
                config.storage.queue,
            )?)
        };
        let env = Env {
            state: state.clone(),
            models: models.clone(),
            pool,
            popular_size: config.models.popular_size,
            popular_per_category: config.models.popular_per_category,
        };
        let pipelines = config
            .surfaces
            .keys()
            .map(|name| {
                Ok((
                    name.clone(),
                    Arc::new(build_pipeline(&config, name, &writer, &env.pool)?),
                ))
            })
            .collect::<Result<HashMap<_, _>, ServerError>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn_data_loop(state, models, config.clone(), stop.clone())?;
        tracing::info!(ms = started.elapsed().as_millis() as u64, "engine ready");
        Ok(Arc::new(Self {
            config,
            env,
            writer,
            pipelines,
            replay,
            stop,
            data_loop: parking::Once::new(handle),
            _dir: dir,
        }))
    }

    /// [`Engine::open`] off the async runtime.
    pub async fn open_async(config: Config) -> Result<Arc<Self>, ServerError> {
        tokio::task::spawn_blocking(move || Engine::open(config))
            .await
            .map_err(|e| ServerError::Io(format!("engine start panicked: {e}")))?
    }

    /// Runs the surface's pipeline.
    pub async fn recommend(
        &self,
        pipeline: &Arc<Pipeline>,
        query: cascade_pipeline::Query,
    ) -> PipelineResult {
        pipeline.execute(&self.env, query).await
    }

    /// Rebuilds models now (tests and tools; the data loop does this periodically).
    pub fn rebuild_models(&self) {
        let prev = self.env.models.load();
        let models = build_models(&self.env.state, &self.config, true, Some(&prev));
        self.env.models.publish(models);
    }

    /// Commits what is queued, stops the data loop and the writer. The data dir is released
    /// when the last `Arc<Engine>` drops.
    pub async fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
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
                ms.publish_popular(lists);
                metrics::histogram!("cascade_model_build_seconds", "model" => "popular")
                    .record(t.elapsed().as_secs_f64());
                seen_gen = generation;
            }
        }),
    )?;
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
    Ok(vec![popular, heavy])
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
fn build_pipeline(
    config: &Config,
    surface: &str,
    writer: &Arc<LogWriter>,
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
            }
        })
        .collect();
    let names: Vec<String> = sources
        .iter()
        .map(|s| s.source.name().to_string())
        .collect();
    let hydrators: Vec<Arc<dyn Hydrator>> = s
        .hydrators
        .iter()
        .map(|h| -> Arc<dyn Hydrator> {
            match h {
                HydratorKind::Item => Arc::new(ItemHydrator),
                HydratorKind::UserItem => Arc::new(UserItemHydrator),
            }
        })
        .collect();
    let filters: Vec<Arc<dyn Filter>> = s
        .filters
        .iter()
        .map(|f| -> Arc<dyn Filter> {
            match f {
                FilterKind::Safety => Arc::new(SafetyFilter),
                FilterKind::Seen => Arc::new(SeenFilter),
            }
        })
        .collect();
    let selectors: Vec<Arc<dyn Selector>> = s
        .selectors
        .iter()
        .map(|k| -> Arc<dyn Selector> {
            match k {
                SelectorKind::TopScore => Arc::new(TopScore),
            }
        })
        .collect();
    let side_effects: Vec<Arc<dyn SideEffect>> = s
        .side_effects
        .iter()
        .map(|k| -> Arc<dyn SideEffect> {
            match k {
                SideEffectKind::Impressions => Arc::new(ImpressionLogger {
                    writer: writer.clone(),
                }),
            }
        })
        .collect();
    Ok(Pipeline {
        surface: surface.to_string(),
        scorers: vec![Arc::new(BlendScorer::new(s.scorer.clone(), &names))],
        sources,
        candidate_budget: s.candidate_budget,
        schema: Arc::new(default_schema()),
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
        },
    })
}

/// Logs one `impression` event per returned item, attributed by request id and position,
/// without waiting: a full queue drops impressions (counted) rather than slow the response.
struct ImpressionLogger {
    writer: Arc<LogWriter>,
}

impl SideEffect for ImpressionLogger {
    fn name(&self) -> &str {
        "impressions"
    }

    fn run(&self, ctx: &RequestCtx, result: &PipelineResult) {
        if result.items.is_empty() {
            return;
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
                })
                .collect()
        };
        let n = events.len() as u64;
        if self.writer.submit_nowait(Mutation::Events(events)).is_err() {
            metrics::counter!("cascade_impressions_dropped_total").increment(n);
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

        pub fn take(&self) -> Option<T> {
            match self.0.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            }
        }
    }
}
