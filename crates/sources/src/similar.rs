//! Items co-visited with what the user (and this session) engaged with most recently, plus
//! their nearest items by embedding (which also covers items too new to be co-visited).

use async_trait::async_trait;
use cascade_core::{EventKind, Idx};
use cascade_index::CoVisitation;
use cascade_pipeline::{CandidateSource, ComponentError, CpuPool, Hit, RequestCtx};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How seeds are chosen and weighed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimilarConfig {
    /// Most recent interactions used as seeds.
    pub max_seeds: usize,
    /// Seed weight is `recency_decay^age`, age 0 being the newest.
    pub recency_decay: f32,
    /// Neighbours read per seed.
    pub per_seed: usize,
    /// Weight of a seed's embedding neighbours (cosine similarity, scaled to the seed's
    /// strongest co-visitation weight so both lists speak the same units; 0 disables).
    pub embedding_weight: f32,
}

impl Default for SimilarConfig {
    fn default() -> Self {
        Self {
            max_seeds: 20,
            recency_decay: 0.7,
            per_seed: 100,
            embedding_weight: 0.1,
        }
    }
}

/// Session-aware item-to-item source over co-visitation neighbour lists. The accumulation
/// runs on the CPU pool, off the async runtime.
#[derive(Debug)]
pub struct ItemSimilaritySource {
    pub config: SimilarConfig,
    pub pool: Arc<CpuPool>,
}

impl ItemSimilaritySource {
    /// Seeds newest first: the request's session items, then the user's positive history.
    fn seeds(&self, ctx: &RequestCtx) -> Vec<(Idx, f32)> {
        let mut seeds: Vec<Idx> = Vec::with_capacity(self.config.max_seeds);
        for &i in ctx.session.iter().rev() {
            if !seeds.contains(&i) {
                seeds.push(i);
            }
        }
        for it in ctx.user.recent.iter().rev() {
            if seeds.len() >= self.config.max_seeds {
                break;
            }
            if matches!(it.kind, EventKind::Skip | EventKind::Hide) || seeds.contains(&it.item) {
                continue;
            }
            seeds.push(it.item);
        }
        seeds.truncate(self.config.max_seeds);
        let mut w = 1.0f32;
        seeds
            .into_iter()
            .map(|s| {
                let out = (s, w);
                w *= self.config.recency_decay;
                out
            })
            .collect()
    }
}

#[async_trait]
impl CandidateSource for ItemSimilaritySource {
    fn name(&self) -> &str {
        "similar"
    }

    fn reason_code(&self) -> &'static str {
        "similar_to_recent"
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        let seeds = self.seeds(ctx);
        if seeds.is_empty() {
            return Ok(Vec::new());
        }
        let models = ctx.models.clone();
        let (per_seed, ew) = (self.config.per_seed, self.config.embedding_weight);
        Ok(self
            .pool
            .run(move || {
                let emb = (ew > 0.0).then_some((&*models.item_neighbors, ew));
                accumulate(&models.covis, emb, &seeds, per_seed, limit)
            })
            .await?)
    }
}

/// Sums seed-weighted neighbour scores per item; the strongest single contribution names the
/// seed. Sorted and folded instead of a per-request hash map.
pub fn accumulate(
    covis: &CoVisitation,
    embedding: Option<(&CoVisitation, f32)>,
    seeds: &[(Idx, f32)],
    per_seed: usize,
    limit: usize,
) -> Vec<Hit> {
    let mut acc: Vec<(Idx, f32, Idx)> = Vec::with_capacity(seeds.len() * per_seed);
    for &(seed, w) in seeds {
        let (nb, ws) = covis.neighbors(seed);
        for (&b, &s) in nb.iter().zip(ws).take(per_seed) {
            acc.push((b, w * s, seed));
        }
        if let Some((lists, ew)) = embedding {
            // A rarely co-visited seed still has a full list of embedding neighbours.
            let scale = ws.first().copied().unwrap_or(1.0);
            let (nb, cs) = lists.neighbors(seed);
            for (&b, &c) in nb.iter().zip(cs).take(per_seed) {
                acc.push((b, w * ew * scale * c, seed));
            }
        }
    }
    acc.sort_unstable_by_key(|&(b, _, _)| b);
    let mut hits: Vec<Hit> = Vec::new();
    let mut best = 0f32;
    for (b, s, seed) in acc {
        match hits.last_mut() {
            Some(h) if h.item == b => {
                h.score += s;
                if s > best {
                    best = s;
                    h.seed = seed;
                }
            }
            _ => {
                best = s;
                hits.push(Hit {
                    item: b,
                    score: s,
                    seed,
                });
            }
        }
    }
    hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    hits.truncate(limit);
    hits
}
