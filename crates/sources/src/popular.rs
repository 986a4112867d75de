//! Popular items as of the request's `now`, from the precomputed, decayed list.

use async_trait::async_trait;
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
        let list = &ctx.popular.global;
        let top = list.first().map_or(1.0, |&(_, s)| s.max(f32::MIN_POSITIVE));
        Ok(list
            .iter()
            .take(limit)
            .map(|&(item, s)| Hit::new(item, s / top))
            .collect())
    }
}
