//! Sources read from the precomputed lists and the catalog: trending, fresh, follows.

use async_trait::async_trait;
use cascade_core::{Millis, NONE_IDX};
use cascade_pipeline::{CandidateSource, ComponentError, CpuPool, Hit, RequestCtx};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Items whose engagement is accelerating (short-window rate over long-window rate).
#[derive(Debug, Default)]
pub struct TrendingSource;

#[async_trait]
impl CandidateSource for TrendingSource {
    fn name(&self) -> &str {
        "trending"
    }

    fn reason_code(&self) -> &'static str {
        "trending"
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        Ok(crate::popular::ranked(&ctx.popular.trending, limit))
    }
}

/// How new "fresh" is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreshConfig {
    /// Items older than this are not fresh.
    pub max_age_hours: f64,
}

impl Default for FreshConfig {
    fn default() -> Self {
        Self {
            max_age_hours: 72.0,
        }
    }
}

/// Recently added items, newest first, so new items get exposure before they have signals.
#[derive(Debug, Default)]
pub struct FreshSource {
    pub config: FreshConfig,
}

/// 1 for an item created at `now`, falling linearly to 0 at `max_age`.
fn recency(now: Millis, created: Millis, max_age_ms: f64) -> f32 {
    (1.0 - (now - created).max(0) as f64 / max_age_ms).clamp(0.0, 1.0) as f32
}

#[async_trait]
impl CandidateSource for FreshSource {
    fn name(&self) -> &str {
        "fresh"
    }

    fn reason_code(&self) -> &'static str {
        "new_for_you"
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        let now = ctx.query.now;
        let max_age = self.config.max_age_hours * 3_600_000.0;
        Ok(ctx
            .popular
            .fresh
            .iter()
            .filter(|&&(_, created)| created <= now && ((now - created) as f64) < max_age)
            .take(limit)
            .map(|&(i, created)| Hit::new(i, recency(now, created, max_age).max(f32::MIN_POSITIVE)))
            .collect())
    }
}

/// Newest items of the creators the user follows. Runs on the CPU pool: a user may follow
/// thousands of creators.
#[derive(Debug)]
pub struct FollowsSource {
    pub pool: Arc<CpuPool>,
}

/// Items taken per followed creator.
const PER_CREATOR: usize = 20;
/// Recency horizon of the follows score (30 days).
const FOLLOWS_HORIZON_MS: f64 = 30.0 * 86_400_000.0;

#[async_trait]
impl CandidateSource for FollowsSource {
    fn name(&self) -> &str {
        "follows"
    }

    fn reason_code(&self) -> &'static str {
        "from_followed_creator"
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        if ctx.user.follows.is_empty() {
            return Ok(Vec::new());
        }
        let (state, follows, now) = (ctx.state.clone(), ctx.user.follows.clone(), ctx.query.now);
        Ok(self
            .pool
            .run(move || newest_of(&state.read(), &follows, now, limit))
            .await?)
    }
}

/// The newest items created before `now` of each creator, scored by recency, taken round by
/// round (every creator's newest, then every creator's second newest, ...) so that each
/// followed creator is represented — a creator just followed as much as one followed for
/// years — before the list is cut at `limit`.
fn newest_of(g: &cascade_features::Inner, creators: &[u32], now: Millis, limit: usize) -> Vec<Hit> {
    let now_s = (now.max(0) / 1000).min(i64::from(u32::MAX)) as u32;
    // (round, hit) for every creator's newest PER_CREATOR items.
    let mut hits: Vec<(usize, Hit)> = Vec::new();
    for &creator in creators {
        let Some(items) = g.creator_items.get(creator as usize) else {
            continue;
        };
        let recent = items
            .iter()
            .filter(|&&i| g.hot(i).created_s <= now_s)
            .take(PER_CREATOR);
        for (round, &i) in recent.enumerate() {
            let created = i64::from(g.hot(i).created_s) * 1000;
            // Never zero: an old item of a followed creator is still a candidate.
            let score = recency(now, created, FOLLOWS_HORIZON_MS).max(0.01);
            hits.push((
                round,
                Hit {
                    item: i,
                    score,
                    seed: NONE_IDX,
                },
            ));
        }
    }
    hits.sort_unstable_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then(b.score.total_cmp(&a.score))
            .then(a.item.cmp(&b.item))
    });
    hits.truncate(limit);
    hits.into_iter().map(|(_, h)| h).collect()
}

/// Items of the curated lists active at `now` for the request's surface, in list order,
/// scaled by each list's boost.
#[derive(Debug, Default)]
pub struct EditorialSource;

#[async_trait]
impl CandidateSource for EditorialSource {
    fn name(&self) -> &str {
        "editorial"
    }

    fn reason_code(&self) -> &'static str {
        "editorial_pick"
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        let now = ctx.query.now;
        let g = ctx.state.read();
        let mut hits: Vec<Hit> = Vec::new();
        // Lists are few and short (at most 1,000 items each): a direct pass is cheaper than a
        // hop to the CPU pool.
        for list in g
            .editorial
            .values()
            .filter(|l| l.is_active(&ctx.query.surface, now))
        {
            let n = list.items.len() as f32;
            for (pos, id) in list.items.iter().enumerate() {
                if let Some(item) = g.items.get(id) {
                    hits.push(Hit::new(item, list.boost * (1.0 - pos as f32 / n)));
                }
            }
        }
        hits.sort_unstable_by(|a, b| a.item.cmp(&b.item).then(b.score.total_cmp(&a.score)));
        hits.dedup_by_key(|h| h.item);
        hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        hits.truncate(limit);
        Ok(hits)
    }
}
