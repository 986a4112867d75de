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

/// Diversity in every window of the list: at most `max_per_category` items sharing a category
/// and `max_per_creator` sharing a creator among any `window` consecutive slots.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiversityConfig {
    pub window: usize,
    pub max_per_category: usize,
    pub max_per_creator: usize,
}

impl Default for DiversityConfig {
    fn default() -> Self {
        Self {
            window: 5,
            max_per_category: 2,
            max_per_creator: 1,
        }
    }
}

impl DiversityConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 || self.max_per_category == 0 || self.max_per_creator == 0 {
            return Err("window, max_per_category and max_per_creator must be positive".into());
        }
        Ok(())
    }
}

/// Fills the list slot by slot with the best-scored candidate that keeps every window within
/// the caps; a candidate that does not fit now may fit a later slot. When nothing fits, the
/// list ends there rather than break the rule. Replaces `top_score` (it orders by score).
#[derive(Debug)]
pub struct WindowDiversity {
    pub config: DiversityConfig,
}

impl Selector for WindowDiversity {
    fn name(&self) -> &str {
        "diversity"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        use cascade_core::NONE_IDX;
        cands
            .items
            .sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        let keys: Vec<([u32; 2], u32)> = {
            let g = ctx.state.read();
            cands
                .items
                .iter()
                .map(|c| {
                    let h = g.hot(c.item);
                    (h.cats, h.creator)
                })
                .collect()
        };
        let DiversityConfig {
            window,
            max_per_category,
            max_per_creator,
        } = self.config;
        let n = ctx.query.n.min(cands.items.len());
        let mut taken = vec![false; cands.items.len()];
        let mut out: Vec<usize> = Vec::with_capacity(n);
        while out.len() < n {
            let recent = &out[out.len().saturating_sub(window.saturating_sub(1))..];
            let fits = |k: usize| {
                let (cats, creator) = keys[k];
                let cat_ok = cats.iter().filter(|&&c| c != NONE_IDX).all(|&c| {
                    recent.iter().filter(|&&r| keys[r].0.contains(&c)).count() < max_per_category
                });
                let creator_ok = creator == NONE_IDX
                    || recent.iter().filter(|&&r| keys[r].1 == creator).count() < max_per_creator;
                cat_ok && creator_ok
            };
            match (0..keys.len()).find(|&k| !taken[k] && fits(k)) {
                Some(k) => {
                    taken[k] = true;
                    out.push(k);
                }
                None => break,
            }
        }
        let items = std::mem::take(&mut cands.items);
        cands.items = out.into_iter().map(|k| items[k]).collect();
        Ok(())
    }
}
