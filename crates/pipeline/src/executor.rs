//! The one executor: runs a surface's components in order under deadlines, records timings
//! and metrics, applies fail-open / fail-closed policy, and falls back to the popular list.

use crate::breaker::Admit;
use crate::candidate::{
    Candidate, Candidates, FeatureBlock, Hit, MAX_SOURCES, Placement, Reason, StageScore,
};
use crate::component::{
    CandidateSource, ComponentError, Explainer, FailMode, Filter, Hydrator, Scorer, Selector,
    SideEffect,
};
use crate::context::{Env, Query, RequestCtx};
use crate::faults::Dependency;
use cascade_core::{Idx, NONE_IDX};
use cascade_features::FeatureSchema;
use futures::future::join_all;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// One declared candidate source with its quota and deadline.
pub struct SourceSlot {
    pub source: Arc<dyn CandidateSource>,
    /// Most candidates taken from this source (its quota).
    pub limit: usize,
    pub timeout: Duration,
    /// Its candidates pass the candidate budget and the pre-ranker's cut, so the policy
    /// stage can still pin them (editorial) or explore with them (fresh items) whatever the
    /// pre-ranker thinks of them.
    pub protected: bool,
}

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

/// What the pipeline produced for one request.
#[derive(Debug)]
pub struct PipelineResult {
    pub ctx: Arc<RequestCtx>,
    /// Final items, best first.
    pub items: Vec<Candidate>,
    pub reasons: Vec<Reason>,
    /// Names of the source slots, indexed like `Candidate::sources` bits.
    pub source_names: Vec<String>,
    /// What did not work as designed for this response.
    pub degraded: Vec<String>,
    /// Milliseconds per stage, in execution order.
    pub timings: Vec<(&'static str, f64)>,
    /// With `explain`: (item, component, reason) of every removed candidate.
    pub removed: Vec<(Idx, String, &'static str)>,
    pub features: Option<FeatureBlock>,
    /// With `explain`: each ranking stage's score and rank of every candidate it scored.
    pub trace: Vec<StageScore>,
    /// With `explain`: filters every returned item passed (those that ran for this request).
    pub filters_passed: Vec<String>,
}

impl PipelineResult {
    pub fn model_version(&self) -> &str {
        &self.ctx.models.version
    }
}

/// What the ranking stage returns.
#[derive(Debug)]
pub struct RankStage {
    /// The scored survivors.
    pub cands: Candidates,
    pub degraded: Vec<String>,
    /// Milliseconds per step.
    pub timings: Vec<(&'static str, f64)>,
    /// With `explain`: what the filters removed and why.
    pub removed: Vec<(Idx, String, &'static str)>,
    /// With `explain`: each stage's scores and ranks.
    pub trace: Vec<StageScore>,
}

/// Newest catalog entries the fallback may scan when the popular list runs out.
const FALLBACK_SCAN: usize = 20_000;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Output of the CPU stage: the final list and its explanations.
#[derive(Debug)]
pub struct Ranked {
    pub items: Vec<Candidate>,
    pub reasons: Vec<Reason>,
    pub degraded: Vec<String>,
    /// Milliseconds per step, in order.
    pub timings: Vec<(&'static str, f64)>,
    pub removed: Vec<(Idx, String, &'static str)>,
    pub features: Option<FeatureBlock>,
    pub trace: Vec<StageScore>,
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

    async fn execute_inner(self: &Arc<Self>, env: &Env, query: Query) -> PipelineResult {
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
    async fn gather(
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

    fn source_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| s.source.name().to_string())
            .collect()
    }

    fn empty_result(
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

    /// Dedupes the sources' lists into one candidate per item, keeping every source's score
    /// and rank (the candidate budget is applied after the filters, in the CPU stage).
    fn merge(&self, lists: &[Vec<Hit>]) -> Candidates {
        let total: usize = lists.iter().map(Vec::len).sum();
        let mut flat: Vec<(Idx, usize, u16, Hit)> = Vec::with_capacity(total);
        for (slot, list) in lists.iter().enumerate().take(MAX_SOURCES) {
            for (rank, h) in list.iter().enumerate() {
                flat.push((h.item, slot, rank.min(u16::MAX as usize) as u16, *h));
            }
        }
        flat.sort_unstable_by_key(|&(item, slot, _, _)| (item, slot));
        let mut items: Vec<Candidate> = Vec::with_capacity(flat.len());
        let mut best_seed_score = Vec::with_capacity(flat.len());
        for (item, slot, rank, hit) in flat {
            if items.last().is_none_or(|c: &Candidate| c.item != item) {
                items.push(Candidate::new(item));
                best_seed_score.push(f32::NEG_INFINITY);
            }
            let (Some(c), Some(best)) = (items.last_mut(), best_seed_score.last_mut()) else {
                continue;
            };
            c.sources |= 1 << slot;
            c.source_scores[slot] = hit.score;
            c.source_ranks[slot] = rank;
            if hit.seed != NONE_IDX && hit.score > *best {
                *best = hit.score;
                c.seed = hit.seed;
            }
        }
        for (row, c) in items.iter_mut().enumerate() {
            c.row = row as u32;
            // Retrieval-score order is the last ranking rung: it stands if the pre-ranker
            // fails too.
            c.score = c.source_scores.iter().sum();
        }
        let features = FeatureBlock::new(self.schema.clone(), items.len());
        Candidates { items, features }
    }

    /// Runs filters; returns the kept candidates. A fail-closed filter that errors removes
    /// every candidate it was asked about.
    fn run_filters(
        &self,
        ctx: &RequestCtx,
        cands: &mut Candidates,
        degraded: &mut Vec<String>,
        removed: &mut Vec<(Idx, String, &'static str)>,
        enforce_deadline: bool,
    ) {
        for f in &self.filters {
            if cands.items.is_empty() {
                break;
            }
            if enforce_deadline && f.fail_mode() == FailMode::Open && ctx.expired() {
                degraded.push(format!("filter:{}:skipped", f.name()));
                continue;
            }
            let out = f.filter(ctx, cands);
            let removals = match out {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(filter = f.name(), error = %e, "filter failed");
                    degraded.push(format!("filter:{}:error", f.name()));
                    match f.fail_mode() {
                        FailMode::Open => continue,
                        FailMode::Closed => (0..cands.items.len())
                            .map(|index| crate::Removal {
                                index,
                                reason: "safety_check_unavailable",
                            })
                            .collect(),
                    }
                }
            };
            if removals.is_empty() {
                continue;
            }
            let mut drop = vec![false; cands.items.len()];
            for r in &removals {
                if let Some(d) = drop.get_mut(r.index) {
                    if !*d && ctx.query.explain {
                        removed.push((cands.items[r.index].item, f.name().to_string(), r.reason));
                    }
                    *d = true;
                }
            }
            let mut i = 0;
            cands.items.retain(|_| {
                let keep = !drop[i];
                i += 1;
                keep
            });
        }
    }

    /// The CPU stage: filters → budget → hydration → pre-ranker cut → scorers → selectors →
    /// fallback → explanations.
    fn rank(&self, ctx: &RequestCtx, cands: Candidates) -> Ranked {
        let stage = self.rank_stage(ctx, cands);
        self.policy_stage(ctx, stage)
    }

    /// After ranking: selectors (ordering, exploration, pins, diversity, sponsored limits),
    /// padding through the filters when the list runs short, and explanations. Benchmarks
    /// time it on the output of [`Pipeline::rank_stage`].
    pub fn policy_stage(&self, ctx: &RequestCtx, stage: RankStage) -> Ranked {
        let RankStage {
            mut cands,
            mut degraded,
            mut timings,
            mut removed,
            trace,
        } = stage;
        let t = Instant::now();
        for s in &self.selectors {
            if let Err(e) = s.select(ctx, &mut cands) {
                tracing::warn!(selector = s.name(), error = %e, "selector failed");
                degraded.push(format!("selector:{}:error", s.name()));
            }
        }
        let n = ctx.query.n;
        cands.items.truncate(n);
        timings.push(("select", ms(t.elapsed())));

        let t = Instant::now();
        if self.fallback && cands.items.len() < n {
            let produced = cands.items.len();
            self.pad_with_popular(ctx, &mut cands, &mut removed);
            if produced == 0 && !cands.items.is_empty() {
                degraded.push("fallback:popular".into());
            }
            // Padding scores below every ranked item, so selecting again keeps the ranked
            // order and holds the padding to the same rules (e.g. diversity).
            if cands.items.len() > produced {
                for s in &self.selectors {
                    if let Err(e) = s.select(ctx, &mut cands) {
                        tracing::warn!(selector = s.name(), error = %e, "selector failed");
                    }
                }
                cands.items.truncate(n);
            }
        }
        timings.push(("fallback", ms(t.elapsed())));

        let mut out = Ranked {
            items: cands.items,
            reasons: Vec::new(),
            degraded,
            timings,
            removed,
            features: None,
            trace,
        };
        let t = Instant::now();
        out.reasons = self.explain(ctx, &out);
        out.timings.push(("explain", ms(t.elapsed())));
        if ctx.query.explain {
            out.features = Some(cands.features);
        }
        out
    }

    /// Filters, the candidate budget, hydration and the pre-ranker's cut.
    fn prepare(
        &self,
        ctx: &RequestCtx,
        mut cands: Candidates,
        degraded: &mut Vec<String>,
        timings: &mut Vec<(&'static str, f64)>,
        removed: &mut Vec<(Idx, String, &'static str)>,
        trace: &mut Vec<StageScore>,
    ) -> Candidates {
        // Filters first (they need no features), then the candidate budget, so the budget is
        // spent on candidates that may be shown and hydration only touches those.
        let t = Instant::now();
        self.run_filters(ctx, &mut cands, degraded, removed, true);
        timings.push(("filter", ms(t.elapsed())));
        let t = Instant::now();
        let protected = self.protected_mask();
        if cands.items.len() > self.candidate_budget {
            // Protected sources' candidates, then best rank in any source, so every source
            // keeps its top candidates.
            let best_rank =
                |c: &Candidate| c.source_ranks.iter().copied().min().unwrap_or(u16::MAX);
            let key = |c: &Candidate| (c.sources & protected == 0, best_rank(c), c.item);
            let keep = self.candidate_budget.max(
                cands
                    .items
                    .iter()
                    .filter(|c| c.sources & protected != 0)
                    .count(),
            );
            // Only which candidates stay matters (later stages order them): a selection,
            // not a sort.
            if keep < cands.items.len() {
                cands.items.select_nth_unstable_by_key(keep, key);
                cands.items.truncate(keep);
            }
        }
        timings.push(("budget", ms(t.elapsed())));

        let t = Instant::now();
        self.hydrate(ctx, &mut cands, degraded);
        timings.push(("hydrate", ms(t.elapsed())));

        // The pre-ranker scores everything, and only its best `prerank_keep` go on.
        if let Some(pre) = &self.prerank {
            let t = Instant::now();
            let mut scores = vec![0f32; cands.items.len()];
            self.run_scorers(
                ctx,
                std::slice::from_ref(pre),
                &mut cands,
                &mut scores,
                degraded,
            );
            cands
                .items
                .sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
            if ctx.query.explain {
                record_stage(&cands.items, "prerank", trace);
            }
            if cands.items.len() > self.prerank_keep {
                // Protected candidates below the cut go on too.
                let mut k = 0;
                let keep = self.prerank_keep;
                cands.items.retain(|c| {
                    k += 1;
                    k <= keep || c.sources & protected != 0
                });
            }
            timings.push(("prerank", ms(t.elapsed())));
        }
        cands
    }

    /// Hydration shares one budget; a failed or skipped hydrator leaves declared defaults.
    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates, degraded: &mut Vec<String>) {
        let hydrate_deadline = (Instant::now() + self.budgets.hydrate).min(ctx.deadline);
        let store_down = ctx.features_down.load(Ordering::Relaxed);
        for h in &self.hydrators {
            if store_down && h.needs_store() {
                // Named once as `features:*` by the probe; the defaults stand.
                cands.features.missing += cands.items.len() as u64;
                continue;
            }
            if Instant::now() >= hydrate_deadline {
                degraded.push(format!("hydrator:{}:skipped", h.name()));
                cands.features.missing += cands.items.len() as u64;
                continue;
            }
            if let Err(e) = h.hydrate(ctx, cands) {
                tracing::warn!(hydrator = h.name(), error = %e, "hydrator failed");
                degraded.push(format!("hydrator:{}:error", h.name()));
                cands.features.missing += cands.items.len() as u64;
            }
        }
        metrics::counter!("cascade_features_missing_total", "surface" => self.surface.clone())
            .increment(cands.features.missing);
    }

    /// Runs scorers in order; each sees the previous score and may replace it. A failed or
    /// skipped scorer leaves the previous order standing.
    fn run_scorers(
        &self,
        ctx: &RequestCtx,
        scorers: &[Arc<dyn Scorer>],
        cands: &mut Candidates,
        scores: &mut [f32],
        degraded: &mut Vec<String>,
    ) {
        let down =
            ctx.ranker_down.load(Ordering::Relaxed) || ctx.features_down.load(Ordering::Relaxed);
        for s in scorers {
            if ctx.expired() || (down && s.dependency() == Some(Dependency::Ranker)) {
                degraded.push(format!("scorer:{}:skipped", s.name()));
                continue;
            }
            for (dst, c) in scores.iter_mut().zip(&cands.items) {
                *dst = c.score;
            }
            match s.score(ctx, cands, scores) {
                Ok(()) => {
                    for (c, &v) in cands.items.iter_mut().zip(scores.iter()) {
                        c.score = if v.is_finite() { v } else { f32::MIN };
                    }
                }
                Err(ComponentError::Unavailable(what)) => {
                    // E.g. no ranker trained yet: expected, reported, not logged per request.
                    tracing::debug!(scorer = s.name(), what, "scorer unavailable");
                    degraded.push(format!("scorer:{}:unavailable", s.name()));
                }
                Err(e) => {
                    tracing::warn!(scorer = s.name(), error = %e, "scorer failed");
                    degraded.push(format!("scorer:{}:error", s.name()));
                }
            }
        }
    }

    /// Source bits whose candidates are protected from the budget and the cut.
    fn protected_mask(&self) -> u16 {
        self.sources
            .iter()
            .enumerate()
            .take(MAX_SOURCES)
            .filter(|(_, s)| s.protected)
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    fn explain(&self, ctx: &RequestCtx, r: &Ranked) -> Vec<Reason> {
        r.items
            .iter()
            .map(|c| self.explainer.explain(ctx, c, &self.sources))
            .collect()
    }

    /// Appends popular items (through every filter) until `n` items or the list runs out.
    fn pad_with_popular(
        &self,
        ctx: &RequestCtx,
        cands: &mut Candidates,
        removed: &mut Vec<(Idx, String, &'static str)>,
    ) {
        let n = ctx.query.n;
        let mut have: Vec<Idx> = cands.items.iter().map(|c| c.item).collect();
        have.sort_unstable();
        let floor = cands.items.iter().map(|c| c.score).fold(0f32, f32::min) - 1.0;
        let mut extra = Candidates {
            items: Vec::new(),
            features: FeatureBlock::new(self.schema.clone(), 0),
        };
        let mut ignored = Vec::new();
        let chunk = 4 * n.max(16);
        // The popular list first, in generous slices (filters may remove much of a slice for
        // heavy users); then, if the list is exhausted or not built yet (items just added),
        // the newest catalog entries, so a non-empty catalog never yields an empty answer.
        let popular = ctx
            .popular
            .global
            .chunks(chunk)
            .map(|c| c.iter().map(|&(i, s)| (i, s.min(1.0))).collect::<Vec<_>>());
        let newest_len = ctx.state.read().items.len();
        let newest = (0..newest_len.min(FALLBACK_SCAN) as u32)
            .map(move |k| (newest_len as u32 - 1 - k, 0.0f32))
            .collect::<Vec<_>>();
        let newest = newest.chunks(chunk).map(<[_]>::to_vec).collect::<Vec<_>>();
        for slice in popular.chain(newest) {
            extra.items.clear();
            for (item, s) in slice {
                if have.binary_search(&item).is_err() {
                    let mut c = Candidate::new(item);
                    c.score = floor - 1.0 + s * 0.5;
                    c.placed = Placement::Fallback;
                    extra.items.push(c);
                }
            }
            extra.features = FeatureBlock::new(self.schema.clone(), extra.items.len());
            for (row, c) in extra.items.iter_mut().enumerate() {
                c.row = row as u32;
            }
            self.run_filters(ctx, &mut extra, &mut ignored, removed, false);
            for c in extra.items.drain(..) {
                if cands.items.len() >= n {
                    return;
                }
                if let Err(p) = have.binary_search(&c.item) {
                    have.insert(p, c.item);
                    cands.items.push(c);
                }
            }
            if cands.items.len() >= n {
                return;
            }
        }
    }

    /// Last rung: the popular list through every filter.
    fn fallback(&self, ctx: &RequestCtx) -> Ranked {
        let mut cands = Candidates {
            items: Vec::new(),
            features: FeatureBlock::new(self.schema.clone(), 0),
        };
        let mut removed = Vec::new();
        self.pad_with_popular(ctx, &mut cands, &mut removed);
        let mut out = Ranked {
            items: cands.items,
            reasons: Vec::new(),
            degraded: vec!["fallback:popular".into()],
            timings: Vec::new(),
            removed,
            features: None,
            trace: Vec::new(),
        };
        out.reasons = self.explain(ctx, &out);
        out
    }
}

impl From<crate::cpu::CpuError> for ComponentError {
    fn from(e: crate::cpu::CpuError) -> Self {
        ComponentError::Failed(e.to_string())
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

/// Appends each candidate's score and rank (by score, best first) under `stage`.
fn record_stage(items: &[Candidate], stage: &str, trace: &mut Vec<StageScore>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        items[b]
            .score
            .total_cmp(&items[a].score)
            .then(items[a].item.cmp(&items[b].item))
    });
    let of = items.len() as u32;
    trace.extend(order.iter().enumerate().map(|(rank, &k)| StageScore {
        item: items[k].item,
        stage: stage.to_string(),
        score: items[k].score,
        rank: rank as u32,
        of,
    }));
}
