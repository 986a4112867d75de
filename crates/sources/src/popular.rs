//! Popular items as of the request's `now`, from the precomputed, decayed list.

use async_trait::async_trait;
use cascade_core::Idx;
use cascade_pipeline::{CandidateSource, ComponentError, Hit, RequestCtx};

/// The most engaged-with items recently; also the cold-start answer.
#[derive(Debug, Default)]
pub struct PopularSource;

#[async_trait]
impl CandidateSource for PopularSource {
    fn name(&self) -> &str {
        "popular"
    }

    fn reason_code(&self) -> &'static str {
        "popular"
    }

    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        Ok(ranked(&ctx.popular.global, limit))
    }
}

/// The first `limit` entries of a best-first list, scores scaled so the best is 1.
pub(crate) fn ranked(list: &[(Idx, f32)], limit: usize) -> Vec<Hit> {
    let top = list.first().map_or(1.0, |&(_, s)| s.max(f32::MIN_POSITIVE));
    list.iter()
        .take(limit)
        .map(|&(item, s)| Hit::new(item, s / top))
        .collect()
}
