//! Learned-embedding retrieval: the user's vector, blended with the vectors of the session's
//! and most recent items, scored against every item vector.
//!
//! The search runs on the CPU pool over the HNSW index when one is built (items added since
//! training included), else as an exact dot-product scan; both score by the same dot product.

use async_trait::async_trait;
use cascade_core::{EventKind, Idx};
use cascade_index::als::dot;
use cascade_index::{AnnIndex, Embeddings};
use cascade_pipeline::{CandidateSource, ComponentError, CpuPool, Hit, RequestCtx};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How the query vector is formed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Most recent positive interactions (after the session's items) averaged into the query.
    pub recent_items: usize,
    /// Share of the query from those recent items; the rest from the trained user vector.
    pub recent_weight: f32,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            recent_items: 5,
            recent_weight: 0.5,
        }
    }
}

/// Retrieval over learned embeddings.
#[derive(Debug)]
pub struct EmbeddingSource {
    pub config: EmbeddingConfig,
    pub pool: Arc<CpuPool>,
}

fn normalized(v: &mut [f32]) -> bool {
    let n = dot(v, v).sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
        true
    } else {
        false
    }
}

/// The request's query vector, or `None` when nothing is known about the user.
fn query_vector(
    emb: &Embeddings,
    ann: Option<&AnnIndex>,
    user: Option<Idx>,
    recent: &[Idx],
    recent_weight: f32,
) -> Option<Vec<f32>> {
    let d = emb.dim;
    let mut u: Vec<f32> = user
        .and_then(|u| emb.user(u))
        .map(<[f32]>::to_vec)
        .unwrap_or_else(|| vec![0.0; d]);
    let mut m = vec![0f32; d];
    for &i in recent {
        if let Some(v) = emb.item(i) {
            m.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        } else if let Some(v) = ann.and_then(|a| a.vector(i)) {
            // Added after training: folded into the index since.
            m.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
        }
    }
    let (has_u, has_m) = (normalized(&mut u), normalized(&mut m));
    let w = match (has_u, has_m) {
        (false, false) => return None,
        (true, false) => 0.0,
        (false, true) => 1.0,
        (true, true) => recent_weight,
    };
    Some(
        u.iter()
            .zip(&m)
            .map(|(a, b)| (1.0 - w) * a + w * b)
            .collect(),
    )
}

/// Exact top-`k` items by dot product with `q`: one pass with a bounded min-heap, so the
/// scan allocates `k` entries, not one per item.
pub fn top_k(emb: &Embeddings, q: &[f32], k: usize) -> Vec<Hit> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    #[derive(PartialEq)]
    struct Scored(f32, Idx);
    impl Eq for Scored {}
    impl PartialOrd for Scored {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Scored {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
        }
    }
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
    for (i, v) in emb.items.chunks_exact(emb.dim).enumerate() {
        let s = dot(q, v);
        if heap.len() < k {
            heap.push(Reverse(Scored(s, i as Idx)));
        } else if heap.peek().is_some_and(|Reverse(min)| s > min.0) {
            heap.pop();
            heap.push(Reverse(Scored(s, i as Idx)));
        }
    }
    let mut out: Vec<Hit> = heap
        .into_iter()
        .map(|Reverse(Scored(s, i))| Hit::new(i, s))
        .collect();
    out.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    out
}

#[async_trait]
impl CandidateSource for EmbeddingSource {
    fn name(&self) -> &str {
        "embedding"
    }

    fn reason_code(&self) -> &'static str {
        "picked_for_you"
    }

    fn dependency(&self) -> Option<cascade_pipeline::Dependency> {
        Some(cascade_pipeline::Dependency::Ann)
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        // The ANN index is a dependency that can fail or slow down (injected faults too).
        ctx.faults
            .before_async(cascade_pipeline::Dependency::Ann)
            .await
            .map_err(|e| ComponentError::Unavailable(e.to_string()))?;
        let Some(emb) = ctx.models.embeddings.clone() else {
            return Err(ComponentError::Unavailable(
                "embeddings are not trained".into(),
            ));
        };
        let mut recent: Vec<Idx> = ctx.session.iter().rev().copied().collect();
        recent.extend(
            ctx.user
                .recent
                .iter()
                .rev()
                .filter(|i| !matches!(i.kind, EventKind::Skip | EventKind::Hide))
                .map(|i| i.item)
                .take(self.config.recent_items),
        );
        let user = ctx.user.idx;
        let w = self.config.recent_weight;
        let ann = ctx.models.ann.clone();
        self.pool
            .run(move || {
                let Some(q) = query_vector(&emb, ann.as_deref(), user, &recent, w) else {
                    return Ok(Vec::new());
                };
                match ann {
                    Some(ann) => ann
                        .search(&q, limit)
                        .map(|hits| hits.into_iter().map(|(i, s)| Hit::new(i, s)).collect())
                        .map_err(|e| ComponentError::Failed(e.to_string())),
                    None => Ok(top_k(&emb, &q, limit)),
                }
            })
            .await?
    }
}
