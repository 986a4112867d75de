//! Selectors that order the final list: by score, diversified by windows or by MMR. Every
//! one leaves items a policy rule placed (pinned, exploration) in their slots.

use cascade_core::{Idx, NONE_IDX};
use cascade_pipeline::{Candidate, Candidates, ComponentError, Placement, RequestCtx, Selector};

use crate::rules::{SponsoredConfig, sponsored};

fn by_score(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.item.cmp(&b.item))
}

/// Splits the list into the items locked in their slots (slot, candidate) among the first `n`
/// and the free rest, by score.
fn split_locked(items: Vec<Candidate>, n: usize) -> (Vec<(usize, Candidate)>, Vec<Candidate>) {
    let mut locked = Vec::new();
    let mut free = Vec::with_capacity(items.len());
    for c in items {
        if c.placed.locked() && usize::from(c.slot) < n {
            locked.push((usize::from(c.slot), c));
        } else {
            free.push(c);
        }
    }
    locked.sort_by_key(|&(slot, c)| (slot, c.placed != Placement::Pinned, c.item));
    free.sort_unstable_by(by_score);
    (locked, free)
}

/// Fills slots `0..slots`: a locked item keeps its slot (locks only count among the first
/// `n`), every other slot takes the free item `pick(placed_so_far, free, taken, slot)`
/// chooses, or the list ends when it finds none. With `keep_rest`, free items not placed
/// follow by score; otherwise they are dropped (a rule-keeping selector must not let the
/// executor's truncation bring them back).
fn fill(
    cands: &mut Candidates,
    n: usize,
    slots: usize,
    keep_rest: bool,
    mut pick: impl FnMut(&[Candidate], &[Candidate], &[bool], usize) -> Option<usize>,
) {
    let items = std::mem::take(&mut cands.items);
    let (locked, free) = split_locked(items, n);
    let mut out: Vec<Candidate> = Vec::with_capacity(free.len() + locked.len());
    let mut taken = vec![false; free.len()];
    let mut li = 0;
    let mut ended = false;
    for slot in 0..slots.max(n) {
        if li < locked.len() && locked[li].0 <= slot {
            out.push(locked[li].1);
            li += 1;
            continue;
        }
        if ended {
            continue;
        }
        match pick(&out, &free, &taken, slot) {
            Some(k) => {
                taken[k] = true;
                out.push(free[k]);
            }
            // Nothing fits: the list ends here rather than break the rule; locked items
            // still follow.
            None => ended = true,
        }
    }
    out.extend(locked[li..].iter().map(|&(_, c)| c));
    if keep_rest {
        out.extend(
            free.iter()
                .zip(&taken)
                .filter(|(_, t)| !**t)
                .map(|(c, _)| *c),
        );
    }
    cands.items = out;
}

/// A candidate's sort key: score, item (ties), index in the list.
type Key = (f32, Idx, u32);

thread_local! {
    /// Keys and a spare candidate buffer, reused across requests on a pool thread.
    static ORDER: std::cell::RefCell<(Vec<Key>, Vec<Candidate>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Puts the best `head` items by score first, in order, and the rest after them (unordered).
/// Orders 12-byte keys rather than the candidates themselves, then moves each candidate once.
fn order_head(items: &mut Vec<Candidate>, head: usize) {
    let cmp = |a: &Key, b: &Key| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    ORDER.with_borrow_mut(|(keys, spare)| {
        keys.clear();
        keys.extend(
            items
                .iter()
                .enumerate()
                .map(|(k, c)| (c.score, c.item, k as u32)),
        );
        if keys.len() > head {
            keys.select_nth_unstable_by(head, cmp);
            keys[..head].sort_unstable_by(cmp);
        } else {
            keys.sort_unstable_by(cmp);
        }
        spare.clear();
        spare.extend(keys.iter().map(|&(_, _, k)| items[k as usize]));
        std::mem::swap(items, spare);
    });
}

/// Orders by score (the first `4n + 64` exactly, the rest below them), leaving locked items
/// in their slots.
#[derive(Debug, Default)]
pub struct TopScore;

impl Selector for TopScore {
    fn name(&self) -> &str {
        "top_score"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let n = ctx.query.n;
        if !cands.items.iter().any(|c| c.placed.locked()) {
            // Only the head needs order (the response, exploration's pool, spares for the
            // later selectors); the tail stays below it, unordered.
            let head = n.saturating_mul(4).saturating_add(64);
            order_head(&mut cands.items, head);
            return Ok(());
        }
        let len = cands.items.len();
        fill(cands, n, len, true, |_, free, taken, _| {
            (0..free.len()).find(|&k| !taken[k])
        });
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
/// list ends there rather than break the rule. Locked items keep their slots and count in
/// the windows around them. Replaces `top_score` (it orders by score).
#[derive(Debug)]
pub struct WindowDiversity {
    pub config: DiversityConfig,
    /// The surface's sponsored limits, kept while filling so that the `sponsored` selector
    /// after this one has nothing to move (which would shift windows).
    pub sponsored: Option<SponsoredConfig>,
}

/// Locked items among the first `n` slots that satisfy `pred`.
fn locked_count(cands: &Candidates, n: usize, pred: &impl Fn(&Candidate) -> bool) -> usize {
    cands
        .items
        .iter()
        .filter(|c| c.placed.locked() && usize::from(c.slot) < n && pred(c))
        .count()
}

/// Sponsored limits while filling slots: `ok(slot, placed, is_sponsored)`.
fn sponsored_ok(cfg: Option<SponsoredConfig>, slot: usize, placed: usize, is: bool) -> bool {
    match cfg {
        Some(c) if is => slot >= c.min_position && placed < c.max_items,
        _ => true,
    }
}

impl Selector for WindowDiversity {
    fn name(&self) -> &str {
        "diversity"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let DiversityConfig {
            window,
            max_per_category,
            max_per_creator,
        } = self.config;
        let n = ctx.query.n.min(cands.items.len());
        // Locked items ahead of a slot constrain it too: (slot, cats, creator).
        let g = ctx.state.read();
        let key = |c: &Candidate| {
            let h = g.hot(c.item);
            (h.cats, h.creator)
        };
        let spons = self.sponsored;
        let is_sponsored = |c: &Candidate| spons.is_some() && sponsored(&g, c.item);
        let ahead: Vec<(usize, [Idx; 2], Idx)> = cands
            .items
            .iter()
            .filter(|c| c.placed.locked() && usize::from(c.slot) < n)
            .map(|c| {
                let (cats, creator) = key(c);
                (usize::from(c.slot), cats, creator)
            })
            .collect();
        let locked_sponsored = locked_count(cands, n, &is_sponsored);
        let mut fk: Vec<([Idx; 2], Idx)> = Vec::new();
        let mut fs: Vec<bool> = Vec::new();
        // Twice `n` slots, so a later selector (sponsored limits) has rule-keeping spares.
        let slots = (2 * n).min(cands.items.len());
        fill(cands, n, slots, false, |out, free, taken, slot| {
            if fk.is_empty() && !free.is_empty() {
                fk.extend(free.iter().map(key));
                fs.extend(free.iter().map(is_sponsored));
            }
            // Locked sponsored items count from the start, wherever their slots are: the
            // `sponsored` selector after this one would otherwise drop a free one and shift
            // the list.
            let placed_sponsored = locked_sponsored
                + out
                    .iter()
                    .filter(|c| !c.placed.locked() && is_sponsored(c))
                    .count();
            let lo = slot.saturating_sub(window.saturating_sub(1));
            let behind = out[lo.min(out.len())..].iter().map(key);
            let later = ahead
                .iter()
                .filter(|(p, _, _)| *p > slot && *p < slot + window)
                .map(|&(_, cats, creator)| (cats, creator));
            let near: Vec<([Idx; 2], Idx)> = behind.chain(later).collect();
            // Every window containing `slot` must stay within the caps; checking the
            // `window - 1` slots on each side against the cap is conservative and exact
            // when nothing is locked ahead.
            (0..free.len()).find(|&k| {
                if taken[k] {
                    return false;
                }
                let (cats, creator) = fk[k];
                let cat_ok = cats.iter().filter(|&&c| c != NONE_IDX).all(|&c| {
                    near.iter().filter(|(cs, _)| cs.contains(&c)).count() < max_per_category
                });
                let creator_ok = creator == NONE_IDX
                    || near.iter().filter(|(_, cr)| *cr == creator).count() < max_per_creator;
                cat_ok && creator_ok && sponsored_ok(spons, slot, placed_sponsored, fs[k])
            })
        });
        Ok(())
    }
}

/// Maximal marginal relevance on item embeddings: each slot takes the item maximising
/// `lambda * relevance - (1 - lambda) * max cosine to the items already placed`, relevance
/// being the score min-max scaled over the pool.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmrConfig {
    pub lambda: f32,
    /// Only the best `pool_factor * n` by score compete (MMR is quadratic in the pool).
    pub pool_factor: usize,
}

impl Default for MmrConfig {
    fn default() -> Self {
        Self {
            lambda: 0.7,
            pool_factor: 4,
        }
    }
}

impl MmrConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err("lambda must be within 0..1".into());
        }
        if self.pool_factor == 0 {
            return Err("pool_factor must be positive".into());
        }
        Ok(())
    }
}

/// MMR selector; items without an embedding count as dissimilar to everything. Without
/// trained embeddings it orders by score. Replaces `top_score`.
#[derive(Debug)]
pub struct Mmr {
    pub config: MmrConfig,
    /// As for [`WindowDiversity::sponsored`].
    pub sponsored: Option<SponsoredConfig>,
}

impl Selector for Mmr {
    fn name(&self) -> &str {
        "mmr"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let n = ctx.query.n.min(cands.items.len());
        let Some(emb) = ctx.models.embeddings.as_deref() else {
            return TopScore.select(ctx, cands);
        };
        let pool = n.saturating_mul(self.config.pool_factor).max(n);
        let lambda = self.config.lambda;
        let spons = self.sponsored;
        let g = ctx.state.read();
        let is_sponsored = |c: &Candidate| spons.is_some() && sponsored(&g, c.item);
        // Unit vectors of the pool, computed once; `max_sim[k]` is updated as items land.
        let mut unit: Vec<Option<Vec<f32>>> = Vec::new();
        let mut max_sim: Vec<f32> = Vec::new();
        let mut placed_upto = 0usize;
        let mut range = (0f32, 1f32);
        let normalize = |v: &[f32]| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            (norm > 0.0).then(|| v.iter().map(|x| x / norm).collect::<Vec<f32>>())
        };
        let slots = (2 * n).min(cands.items.len());
        let locked_sponsored = locked_count(cands, n, &is_sponsored);
        fill(cands, n, slots, false, |out, free, taken, slot| {
            // Locked sponsored items count from the start, wherever their slots are: the
            // `sponsored` selector after this one would otherwise drop a free one and shift
            // the list.
            let placed_sponsored = locked_sponsored
                + out
                    .iter()
                    .filter(|c| !c.placed.locked() && is_sponsored(c))
                    .count();
            let allowed = |k: usize| {
                !taken[k] && sponsored_ok(spons, slot, placed_sponsored, is_sponsored(&free[k]))
            };
            if unit.is_empty() && !free.is_empty() {
                let m = free.len().min(pool);
                unit = free[..m]
                    .iter()
                    .map(|c| emb.item(c.item).and_then(normalize))
                    .collect();
                max_sim = vec![f32::NEG_INFINITY; m];
                let hi = free[0].score;
                let lo = free[m - 1].score;
                range = (lo, (hi - lo).max(f32::EPSILON));
            }
            // Fold the items placed since the last slot into `max_sim`.
            for c in &out[placed_upto..] {
                if let Some(v) = emb.item(c.item).and_then(normalize) {
                    for (k, u) in unit.iter().enumerate() {
                        if let Some(u) = u {
                            let s: f32 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                            max_sim[k] = max_sim[k].max(s);
                        }
                    }
                }
            }
            placed_upto = out.len();
            let mut best: Option<(usize, f32)> = None;
            for k in 0..unit.len() {
                if !allowed(k) {
                    continue;
                }
                let rel = (free[k].score - range.0) / range.1;
                let sim = if max_sim[k].is_finite() {
                    max_sim[k]
                } else {
                    0.0
                };
                let v = lambda * rel - (1.0 - lambda) * sim;
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((k, v));
                }
            }
            best.map(|(k, _)| k)
                .or_else(|| (unit.len()..free.len()).find(|&k| allowed(k)))
        });
        Ok(())
    }
}
