//! Popular items as of the request's `now`, from the precomputed, decayed lists: global, and
//! for users in segments (locale, age band, ...) their segments' lists blended in.

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
        let p = &ctx.popular;
        let surface = p.surface_segment.get(ctx.query.surface.as_str()).copied();
        let segs: Vec<&[(Idx, f32)]> = ctx
            .user
            .segments
            .iter()
            .copied()
            .chain(surface)
            .filter_map(|s| p.by_segment.get(s as usize))
            .filter(|l| !l.is_empty())
            .map(Vec::as_slice)
            .collect();
        if segs.is_empty() {
            return Ok(ranked(&ctx.popular.global, limit));
        }
        Ok(blend(&ctx.popular.global, &segs, limit))
    }
}

/// What the user's segments (and the request's surface) engage with, each list scaled to its best (1), summed, plus the
/// global list at [`GLOBAL_SHARE`], so that a small segment still gets broad favourites.
pub const GLOBAL_SHARE: f32 = 0.5;

fn blend(global: &[(Idx, f32)], segments: &[&[(Idx, f32)]], limit: usize) -> Vec<Hit> {
    let mut acc: Vec<Hit> = Vec::with_capacity(limit * (segments.len() + 1));
    for list in segments {
        acc.extend(ranked(list, limit));
    }
    acc.extend(ranked(global, limit).into_iter().map(|mut h| {
        h.score *= GLOBAL_SHARE;
        h
    }));
    acc.sort_unstable_by_key(|h| h.item);
    let mut out: Vec<Hit> = Vec::with_capacity(acc.len());
    for h in acc {
        match out.last_mut() {
            Some(last) if last.item == h.item => last.score += h.score,
            _ => out.push(h),
        }
    }
    out.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    out.truncate(limit);
    out
}

/// The first `limit` entries of a best-first list, scores scaled so the best is 1.
pub(crate) fn ranked(list: &[(Idx, f32)], limit: usize) -> Vec<Hit> {
    let top = list.first().map_or(1.0, |&(_, s)| s.max(f32::MIN_POSITIVE));
    list.iter()
        .take(limit)
        .map(|&(item, s)| Hit::new(item, s / top))
        .collect()
}
