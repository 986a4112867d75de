//! A transparent linear blend of retrieval scores and a few features.

use cascade_pipeline::{Candidates, ComponentError, MAX_SOURCES, RequestCtx, Scorer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::hydrate::{
    ITEM_POPULARITY, USER_CATEGORY_AFFINITY, USER_CREATOR_AFFINITY, USER_FOLLOWS_CREATOR,
};

/// Weights of the blend; sources are named as in the surface's source list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlendConfig {
    pub source_weights: BTreeMap<String, f32>,
    pub popularity: f32,
    pub category_affinity: f32,
    pub creator_affinity: f32,
    pub follows_creator: f32,
}

impl Default for BlendConfig {
    fn default() -> Self {
        Self {
            source_weights: [
                ("similar".to_string(), 1.0),
                ("popular".to_string(), 0.3),
                ("embedding".to_string(), 0.5),
                ("editorial".to_string(), 0.6),
                ("trending".to_string(), 0.3),
                ("follows".to_string(), 0.5),
                ("fresh".to_string(), 0.2),
            ]
            .into_iter()
            .collect(),
            popularity: 0.05,
            category_affinity: 0.3,
            creator_affinity: 0.2,
            follows_creator: 0.2,
        }
    }
}

/// Score = Σ source weight × (source score / best score of that source in the request)
/// + weighted features. Writes one score per candidate; never drops or reorders.
#[derive(Debug)]
pub struct BlendScorer {
    /// Weight per source slot, resolved from names when the surface is built.
    slot_weights: [f32; MAX_SOURCES],
    config: BlendConfig,
}

impl BlendScorer {
    pub fn new(config: BlendConfig, source_names: &[String]) -> Self {
        let mut slot_weights = [0f32; MAX_SOURCES];
        for (slot, name) in source_names.iter().enumerate().take(MAX_SOURCES) {
            slot_weights[slot] = config.source_weights.get(name).copied().unwrap_or(0.5);
        }
        Self {
            slot_weights,
            config,
        }
    }
}

impl Scorer for BlendScorer {
    fn name(&self) -> &str {
        "blend"
    }

    fn score(
        &self,
        _ctx: &RequestCtx,
        cands: &Candidates,
        scores: &mut [f32],
    ) -> Result<(), ComponentError> {
        let schema = &cands.features.schema;
        let col = |n: &str| schema.index(n);
        let (pop, cat, cre, fol) = (
            col(ITEM_POPULARITY),
            col(USER_CATEGORY_AFFINITY),
            col(USER_CREATOR_AFFINITY),
            col(USER_FOLLOWS_CREATOR),
        );
        let mut best = [f32::MIN_POSITIVE; MAX_SOURCES];
        let mut best_pop = f32::MIN_POSITIVE;
        for c in &cands.items {
            for s in c.source_slots() {
                best[s] = best[s].max(c.source_scores[s]);
            }
            if let Some(p) = pop {
                best_pop = best_pop.max(cands.features.get(c.row, p));
            }
        }
        let feat = |c: &cascade_pipeline::Candidate, col: Option<usize>, w: f32| {
            col.map_or(0.0, |k| w * cands.features.get(c.row, k))
        };
        for (c, out) in cands.items.iter().zip(scores.iter_mut()) {
            let mut s = 0.0;
            for slot in c.source_slots() {
                s += self.slot_weights[slot] * c.source_scores[slot] / best[slot];
            }
            s += feat(c, pop, self.config.popularity) / best_pop;
            s += feat(c, cat, self.config.category_affinity);
            s += feat(c, cre, self.config.creator_affinity);
            s += feat(c, fol, self.config.follows_creator);
            *out = s;
        }
        Ok(())
    }
}
