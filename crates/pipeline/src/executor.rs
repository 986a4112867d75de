//! The one executor: runs a surface's components in order under deadlines, records timings
//! and metrics, applies fail-open / fail-closed policy, and falls back to the popular list.

use crate::breaker::Admit;
use crate::candidate::{Candidate, Candidates, FeatureBlock, Hit, record_stage};
use crate::component::{Explainer, Filter, Hydrator, Scorer, Selector, SideEffect, SourceSlot};
use crate::context::{Env, Query, RequestCtx};
use crate::faults::Dependency;
use crate::result::{PipelineResult, RankStage, ms};
use cascade_core::Idx;
use cascade_features::FeatureSchema;
use futures::future::join_all;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Time budgets of a surface.
#[derive(Debug, Clone, Copy)]
pub struct StageBudgets {
    /// Whole request.
    pub total: Duration,
    /// All hydrators together (and the feature store's answer).
    pub hydrate: Duration,
    /// The heavy ranker's answer.
    pub rank: Duration,
}

/// A surface's pipeline: the ordered, declarative list of its components.
pub struct Pipeline {
    pub surface: String,
    pub sources: Vec<SourceSlot>,
    /// Most merged candidates kept for ranking.
    pub candidate_budget: usize,
    pub schema: Arc<FeatureSchema>,
    pub hydrators: Vec<Arc<dyn Hydrator>>,
    pub filters: Vec<Arc<dyn Filter>>,
    /// The cheap first ranking stage: scores every hydrated candidate, and only the best
    /// `prerank_keep` go on to `scorers` (the heavy ranker).
    pub prerank: Option<Arc<dyn Scorer>>,
    pub prerank_keep: usize,
    pub scorers: Vec<Arc<dyn Scorer>>,
    pub selectors: Vec<Arc<dyn Selector>>,
    pub explainer: Arc<dyn Explainer>,
    pub side_effects: Vec<Arc<dyn SideEffect>>,
    pub budgets: StageBudgets,
    /// Pad a short list from the popular list (then the newest items), through the filters.
    pub fallback: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("surface", &self.surface)
            .field(
                "sources",
                &self
                    .sources
                    .iter()
                    .map(|s| s.source.name())
                    .collect::<Vec<_>>(),
            )
            .field(
                "filters",
                &self.filters.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Runs the request end to end. Never fails: whatever breaks is named in `degraded`.
    pub async fn execute(self: &Arc<Self>, env: &Env, query: Query) -> PipelineResult {
        let span = tracing::info_span!(
            "pipeline",
            surface = %self.surface,
            request_id = %query.request_id,
            user_id = %query.user_id,
        );
        self.execute_inner(env, query).instrument(span).await
    }

    pub(crate) async fn execute_inner(self: &Arc<Self>, env: &Env, query: Query) -> PipelineResult {
        let started = Instant::now();
        let deadline = started + self.budgets.total;
        // The last rung (the popular list, filtered, built inline) must fit before the
        // deadline too: every earlier stage ends this much sooner.
        let reserve = (self.budgets.total / 10).max(Duration::from_millis(2));
        let cpu_deadline = deadline.checked_sub(reserve).unwrap_or(started);
        let mut degraded = Vec::new();
        let mut timings = Vec::with_capacity(12);
        let surface = self.surface.clone();
        let Some((ctx, cands)) = self
            .gather(env, query, started, &mut degraded, &mut timings)
            .await
        else {
            // Cannot even read the user: serve nothing rather than guess; the caller maps an
            // empty result with this entry to a fallback.
            return self.empty_result(env, degraded, timings);
        };

        // The remote dependencies of the CPU stage, probed concurrently under their budgets
        // (the embedded store answers at once; injected faults fail or slow them).
        let t = Instant::now();
        let left = cpu_deadline.saturating_duration_since(t);
        let needs_ranker = self
            .scorers
            .iter()
            .any(|s| s.dependency() == Some(Dependency::Ranker));
        let (features, ranker) = tokio::join!(
            probe(env, Dependency::Features, self.budgets.hydrate.min(left)),
            async {
                if needs_ranker {
                    probe(env, Dependency::Ranker, self.budgets.rank.min(left)).await
                } else {
                    Ok(())
                }
            }
        );
        if let Err(what) = features {
            ctx.features_down.store(true, Ordering::Relaxed);
            degraded.push(format!("features:{what}"));
        }
        if let Err(what) = ranker {
            ctx.ranker_down.store(true, Ordering::Relaxed);
            degraded.push(format!("ranker:{what}"));
        }
        timings.push(("dependencies", ms(t.elapsed())));

        // Filters, hydration, ranking, selectors, fallback and explanations: one CPU job.
        let this = self.clone();
        let job_ctx = ctx.clone();
        let cpu = env.pool.run(move || this.rank(&job_ctx, cands));
        let remaining = cpu_deadline.saturating_duration_since(Instant::now());
        let ranked = match tokio::time::timeout(remaining, cpu).await {
            Ok(Ok(r)) => r,
            outcome => {
                degraded.push(match outcome {
                    Err(_) => "stage:rank:timeout".into(),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "ranking stage failed");
                        "stage:rank:error".into()
                    }
                    Ok(Ok(_)) => "stage:rank:error".into(),
                });
                // Last rung: the in-memory popular list through every filter, built here
                // rather than queued behind a busy pool (a few dozen items, microseconds).
                self.fallback(&ctx)
            }
        };
        degraded.extend(ranked.degraded);
        timings.extend(ranked.timings);
        // Part of the `explain` trace only: no allocation otherwise.
        let filters_passed = self
            .filters
            .iter()
            .filter(|_| ctx.query.explain)
            .map(|f| f.name())
            // A filter skipped or failed open did not check these items.
            .filter(|f| {
                !degraded.iter().any(|d| {
                    d.strip_prefix("filter:")
                        .and_then(|r| r.strip_prefix(*f))
                        .is_some_and(|r| r == ":skipped" || r == ":error")
                })
            })
            .map(str::to_string)
            .collect();
        let mut result = PipelineResult {
            ctx,
            items: ranked.items,
            reasons: ranked.reasons,
            source_names: self.source_names(),
            degraded,
            timings,
            removed: ranked.removed,
            features: ranked.features,
            trace: ranked.trace,
            filters_passed,
        };
        let t = Instant::now();
        for s in &self.side_effects {
            if let Err(e) = s.run(&result.ctx, &result) {
                tracing::debug!(side_effect = s.name(), error = %e, "side effect failed");
                result
                    .degraded
                    .push(format!("side_effect:{}:error", s.name()));
            }
        }
        result.timings.push(("side_effects", ms(t.elapsed())));
        for d in &result.degraded {
            metrics::counter!("cascade_degraded_total", "surface" => surface.clone(), "what" => d.clone())
                .increment(1);
        }
        for &(stage, v) in &result.timings {
            metrics::histogram!("cascade_stage_seconds", "surface" => surface.clone(), "stage" => stage)
                .record(v / 1e3);
        }
        metrics::histogram!("cascade_pipeline_seconds", "surface" => surface)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// The candidates of `query` as the heavy ranker sees them (after filters, the budget,
    /// hydration and the pre-ranker's cut), with the request context: what ranker training
    /// learns from, so training and serving share every feature's code.
    pub async fn training_candidates(
        self: &Arc<Self>,
        env: &Env,
        query: Query,
    ) -> Option<(Arc<RequestCtx>, Candidates)> {
        let (ctx, cands) = self.merged_candidates(env, query).await?;
        let this = self.clone();
        let job_ctx = ctx.clone();
        let prepared = env
            .pool
            .run(move || {
                let (mut d, mut t, mut r) = (Vec::new(), Vec::new(), Vec::new());
                this.prepare(&job_ctx, cands, &mut d, &mut t, &mut r, &mut Vec::new())
            })
            .await
            .ok()?;
        Some((ctx, prepared))
    }

    /// The merged candidates of `query` before any ranking stage (benchmarks time the ranking
    /// stage on them with [`Pipeline::rank_stage`]).
    pub async fn merged_candidates(
        self: &Arc<Self>,
        env: &Env,
        query: Query,
    ) -> Option<(Arc<RequestCtx>, Candidates)> {
        let (mut degraded, mut timings) = (Vec::new(), Vec::new());
        self.gather(env, query, Instant::now(), &mut degraded, &mut timings)
            .await
    }

    /// The ranking stage on the calling thread: filters, budget, hydration, the pre-ranker's
    /// cut and the heavy scorers (see [`RankStage`]).
    pub fn rank_stage(&self, ctx: &RequestCtx, cands: Candidates) -> RankStage {
        let (mut degraded, mut timings, mut removed, mut trace) =
            (Vec::new(), Vec::with_capacity(8), Vec::new(), Vec::new());
        let mut cands = self.prepare(
            ctx,
            cands,
            &mut degraded,
            &mut timings,
            &mut removed,
            &mut trace,
        );
        let t = Instant::now();
        let mut scores = vec![0f32; cands.items.len()];
        if ctx.query.explain {
            // One scorer at a time, recording each one's scores and ranks.
            for s in &self.scorers {
                let one = std::slice::from_ref(s);
                self.run_scorers(ctx, one, &mut cands, &mut scores, &mut degraded);
                record_stage(&cands.items, s.name(), &mut trace);
            }
        } else {
            self.run_scorers(ctx, &self.scorers, &mut cands, &mut scores, &mut degraded);
        }
        timings.push(("score", ms(t.elapsed())));
        RankStage {
            cands,
            degraded,
            timings,
            removed,
            trace,
        }
    }

    /// The given items (what a past response showed) as the heavy ranker would have seen them
    /// for `query`: each keeps the provenance today's sources give it (none if no source finds
    /// it), is hydrated, and carries the pre-ranker's score. No filter or cut applies: they
    /// were shown. Ranker training on logged impressions reads these.
    pub async fn shown_candidates(
        self: &Arc<Self>,
        env: &Env,
        query: Query,
        items: Vec<Idx>,
    ) -> Option<(Arc<RequestCtx>, Candidates)> {
        let (ctx, merged) = self.merged_candidates(env, query).await?;
        let this = self.clone();
        let job_ctx = ctx.clone();
        let shown = env
            .pool
            .run(move || {
                let mut cands = Candidates {
                    items: Vec::with_capacity(items.len()),
                    features: FeatureBlock::new(this.schema.clone(), items.len()),
                };
                for (row, &item) in items.iter().enumerate() {
                    // `merge` leaves candidates sorted by item.
                    let mut c = merged
                        .items
                        .binary_search_by_key(&item, |c| c.item)
                        .map_or_else(|_| Candidate::new(item), |p| merged.items[p]);
                    c.row = row as u32;
                    c.score = 0.0;
                    cands.items.push(c);
                }
                let mut d = Vec::new();
                this.hydrate(&job_ctx, &mut cands, &mut d);
                if let Some(pre) = &this.prerank {
                    let mut scores = vec![0f32; cands.items.len()];
                    this.run_scorers(
                        &job_ctx,
                        std::slice::from_ref(pre),
                        &mut cands,
                        &mut scores,
                        &mut d,
                    );
                }
                cands
            })
            .await
            .ok()?;
        Some((ctx, shown))
    }

    /// Context (one short read of the state, off the async runtime), then the sources
    /// (concurrently, each under its own deadline), then the merge.
    pub(crate) async fn gather(
        self: &Arc<Self>,
        env: &Env,
        query: Query,
        started: Instant,
        degraded: &mut Vec<String>,
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Option<(Arc<RequestCtx>, Candidates)> {
        let deadline = started + self.budgets.total;
        let surface = self.surface.clone();
        let t = Instant::now();
        // The user's online features from the remote store, one round trip under the
        // hydration budget and the store's breaker; failing, the replica's own replicated
        // view serves (named in `degraded`).
        let remote = match &env.store {
            Some(store) => {
                let budget = self
                    .budgets
                    .hydrate
                    .min(deadline.saturating_duration_since(Instant::now()));
                match fetch_user(env, store.as_ref(), &query.user_id, budget).await {
                    Ok(u) => u.map(Box::new),
                    Err(what) => {
                        degraded.push(format!("features:{}:{what}", store.backend()));
                        None
                    }
                }
            }
            None => None,
        };
        let ctx = {
            let state = env.state.clone();
            let models = env.models.clone();
            let pool = env.pool.clone();
            let (ps, pc) = (env.popular_size, env.popular_per_category);
            let faults = env.faults.clone();
            let breakers = env.breakers.clone();
            let built = env
                .pool
                .run(move || {
                    let env = Env {
                        state,
                        models,
                        pool,
                        popular_size: ps,
                        popular_per_category: pc,
                        faults,
                        breakers,
                        store: None,
                    };
                    RequestCtx::build_with(&env, query, remote, started, deadline)
                })
                .await;
            match built {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    tracing::error!(error = %e, "building request context failed");
                    return None;
                }
            }
        };
        timings.push(("context", ms(t.elapsed())));

        // Sources, concurrently, each under its own deadline.
        let t = Instant::now();
        let futs = self.sources.iter().map(|slot| {
            let ctx = ctx.clone();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = slot.timeout.min(remaining);
            let breaker = slot.source.dependency().map(|d| env.breakers.get(d));
            async move {
                let t = Instant::now();
                // An open breaker skips the source at once instead of paying its timeout.
                if breaker.is_some_and(|b| b.admit() == Admit::Skip) {
                    return (None, t.elapsed());
                }
                let r = tokio::time::timeout(budget, slot.source.retrieve(&ctx, slot.limit)).await;
                if let Some(b) = breaker {
                    b.record(matches!(r, Ok(Ok(_))));
                }
                (Some(r), t.elapsed())
            }
        });
        let results = join_all(futs).await;
        let mut lists: Vec<Vec<Hit>> = Vec::with_capacity(self.sources.len());
        for (slot, (r, took)) in self.sources.iter().zip(results) {
            let name = slot.source.name();
            metrics::histogram!("cascade_source_seconds", "surface" => surface.clone(), "source" => name.to_string())
                .record(took.as_secs_f64());
            match r {
                None => {
                    degraded.push(format!("source:{name}:circuit_open"));
                    lists.push(Vec::new());
                }
                Some(Ok(Ok(mut hits))) => {
                    hits.truncate(slot.limit);
                    lists.push(hits);
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!(source = name, error = %e, "candidate source failed");
                    degraded.push(format!("source:{name}:error"));
                    lists.push(Vec::new());
                }
                Some(Err(_)) => {
                    degraded.push(format!("source:{name}:timeout"));
                    lists.push(Vec::new());
                }
            }
        }
        timings.push(("sources", ms(t.elapsed())));

        let t = Instant::now();
        let cands = self.merge(&lists);
        timings.push(("merge", ms(t.elapsed())));
        Some((ctx, cands))
    }

    pub(crate) fn source_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| s.source.name().to_string())
            .collect()
    }

    pub(crate) fn empty_result(
        &self,
        env: &Env,
        mut degraded: Vec<String>,
        timings: Vec<(&'static str, f64)>,
    ) -> PipelineResult {
        degraded.push("stage:context:error".into());
        let now = Instant::now();
        let ctx = Arc::new(RequestCtx {
            query: Query {
                request_id: String::new(),
                surface: self.surface.clone(),
                user_id: String::new(),
                n: 0,
                now: 0,
                now_from_client: false,
                context: Default::default(),
                session_item_ids: Vec::new(),
                exclude: Vec::new(),
                explain: false,
                experiment: None,
            },
            user: Default::default(),
            remote: None,
            session: Vec::new(),
            exclude: Vec::new(),
            state: env.state.clone(),
            popular: env.models.load().popular.clone(),
            models: env.models.load(),
            live: true,
            started: now,
            deadline: now,
            faults: env.faults.clone(),
            features_down: Default::default(),
            ranker_down: Default::default(),
        });
        PipelineResult {
            ctx,
            items: Vec::new(),
            reasons: Vec::new(),
            source_names: self.source_names(),
            degraded,
            timings,
            removed: Vec::new(),
            features: None,
            trace: Vec::new(),
            filters_passed: Vec::new(),
        }
    }
}

/// Waits for `dep` under `budget` through its circuit breaker: `Err("error")` if it fails,
/// `Err("timeout")` if it is late, `Err("circuit_open")` (at once) while its breaker is open.
async fn probe(env: &Env, dep: Dependency, budget: Duration) -> Result<(), &'static str> {
    let breaker = env.breakers.get(dep);
    if breaker.admit() == Admit::Skip {
        return Err("circuit_open");
    }
    let out = match tokio::time::timeout(budget, env.faults.before_async(dep)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("error"),
        Err(_) => Err("timeout"),
    };
    breaker.record(out.is_ok());
    out
}

/// Reads the user's features from a remote store under `budget` through the feature store's
/// breaker (the same one injected `features` faults trip).
async fn fetch_user(
    env: &Env,
    store: &dyn cascade_features::FeatureStore,
    user_id: &str,
    budget: Duration,
) -> Result<Option<cascade_features::UserState>, &'static str> {
    let breaker = env.breakers.get(Dependency::Features);
    if breaker.admit() == Admit::Skip {
        return Err("circuit_open");
    }
    let out = match tokio::time::timeout(budget, store.user(user_id)).await {
        Ok(Ok(u)) => Ok(u),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "feature store read failed");
            Err("error")
        }
        Err(_) => Err("timeout"),
    };
    breaker.record(out.is_ok());
    out
}
