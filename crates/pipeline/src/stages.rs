//! The stages the executor runs in order once candidates are gathered: merge under the
//! candidate budget, filters (fail open or closed), hydration, the pre-ranker and scorers,
//! the policy selectors, explanations, and the popular-list padding and fallback.

use crate::candidate::{
    Candidate, Candidates, FeatureBlock, Hit, MAX_SOURCES, Placement, Reason, StageScore,
    record_stage,
};
use crate::component::{ComponentError, FailMode, Scorer};
use crate::context::RequestCtx;
use crate::executor::Pipeline;
use crate::faults::Dependency;
use crate::result::{RankStage, Ranked, ms};
use cascade_core::{Idx, NONE_IDX};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Newest catalog entries the fallback may scan when the popular list runs out.
const FALLBACK_SCAN: usize = 20_000;

impl Pipeline {
    /// Dedupes the sources' lists into one candidate per item, keeping every source's score
    /// and rank (the candidate budget is applied after the filters, in the CPU stage).
    pub(crate) fn merge(&self, lists: &[Vec<Hit>]) -> Candidates {
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
    pub(crate) fn run_filters(
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
    pub(crate) fn rank(&self, ctx: &RequestCtx, cands: Candidates) -> Ranked {
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
        // Kept whether or not explained: the side effects (drift monitoring) read the
        // served rows; moving the block costs nothing.
        out.features = Some(cands.features);
        out
    }

    /// Filters, the candidate budget, hydration and the pre-ranker's cut.
    pub(crate) fn prepare(
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
            for c in &mut cands.items {
                c.prerank = c.score;
            }
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
    pub(crate) fn hydrate(
        &self,
        ctx: &RequestCtx,
        cands: &mut Candidates,
        degraded: &mut Vec<String>,
    ) {
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
    pub(crate) fn run_scorers(
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
                    let ranker = s.dependency() == Some(Dependency::Ranker);
                    for (c, &v) in cands.items.iter_mut().zip(scores.iter()) {
                        c.score = if v.is_finite() { v } else { f32::MIN };
                        if ranker {
                            c.ranker = v;
                        }
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
    pub(crate) fn protected_mask(&self) -> u16 {
        self.sources
            .iter()
            .enumerate()
            .take(MAX_SOURCES)
            .filter(|(_, s)| s.protected)
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    pub(crate) fn explain(&self, ctx: &RequestCtx, r: &Ranked) -> Vec<Reason> {
        r.items
            .iter()
            .map(|c| self.explainer.explain(ctx, c, &self.sources))
            .collect()
    }

    /// Appends popular items (through every filter) until `n` items or the list runs out.
    pub(crate) fn pad_with_popular(
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
    pub(crate) fn fallback(&self, ctx: &RequestCtx) -> Ranked {
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
