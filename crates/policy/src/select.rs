//! Selectors that order and cut the final list.

use cascade_pipeline::{Candidates, ComponentError, RequestCtx, Selector};

/// Orders by score (ties by item for determinism) and keeps the top `n` of the request.
#[derive(Debug, Default)]
pub struct TopScore;

impl Selector for TopScore {
    fn name(&self) -> &str {
        "top_score"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let n = ctx.query.n;
        let by = |a: &cascade_pipeline::Candidate, b: &cascade_pipeline::Candidate| {
            b.score.total_cmp(&a.score).then(a.item.cmp(&b.item))
        };
        if cands.items.len() > n && n > 0 {
            cands.items.select_nth_unstable_by(n - 1, by);
            cands.items.truncate(n);
        }
        cands.items.sort_unstable_by(by);
        Ok(())
    }
}
