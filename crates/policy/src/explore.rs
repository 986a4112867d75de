//! Exploration: a share of the slots goes to new and under-exposed items, chosen by Thompson
//! sampling over their engagement, deterministically per request, with propensities.

use cascade_core::Idx;
use cascade_features::Inner;
use cascade_pipeline::{Candidate, Candidates, ComponentError, Placement, RequestCtx, Selector};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::rules::move_to;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplorationConfig {
    /// Share of the response's slots given to exploration (rounded, at least one slot when
    /// positive and the response has more than `first_slot` slots).
    pub share: f32,
    /// 0-based position of the first exploration slot; the others follow evenly spaced.
    pub first_slot: usize,
    /// Items with fewer impressions than this are under-exposed and may be explored.
    pub max_impressions: u32,
    /// A new item (younger than `new_item_hours`) with fewer impressions than this is
    /// guaranteed the first exploration slot (fewest impressions first, then newest).
    pub guaranteed_impressions: u32,
    pub new_item_hours: f32,
    /// Most under-exposed candidates the bandit draws among.
    pub pool: usize,
    /// Replicate draws that estimate each explored item's propensity.
    pub propensity_samples: usize,
}

impl Default for ExplorationConfig {
    fn default() -> Self {
        Self {
            share: 0.1,
            first_slot: 2,
            max_impressions: 200,
            guaranteed_impressions: 20,
            new_item_hours: 72.0,
            pool: 32,
            propensity_samples: 64,
        }
    }
}

impl ExplorationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=0.5).contains(&self.share) {
            return Err("share must be within 0..0.5".into());
        }
        if self.pool == 0 || self.propensity_samples == 0 {
            return Err("pool and propensity_samples must be positive".into());
        }
        if !(self.new_item_hours.is_finite() && self.new_item_hours >= 0.0) {
            return Err("new_item_hours must be a non-negative number".into());
        }
        Ok(())
    }

    /// The exploration slots of a response of `n` items.
    pub fn slots(&self, n: usize) -> Vec<usize> {
        if self.share <= 0.0 || n <= self.first_slot {
            return Vec::new();
        }
        let k = ((self.share * n as f32).round() as usize).max(1);
        let step = ((n - self.first_slot) / k).max(1);
        (0..k)
            .map(|j| self.first_slot + j * step)
            .filter(|&p| p < n)
            .collect()
    }
}

/// The request's seed: FNV-1a of the request id and user id, so a request replays exactly.
pub fn request_seed(ctx: &RequestCtx) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ctx
        .query
        .request_id
        .bytes()
        .chain([0u8])
        .chain(ctx.query.user_id.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Engagement posterior of an item: Beta(1 + engaged, 1 + impressions - engaged), as the
/// mean and standard deviation of its normal approximation.
fn posterior(g: &Inner, item: Idx) -> (f32, f32) {
    let imp = g.impressions.get(item as usize).copied().unwrap_or(0) as f32;
    let eng = g
        .item_stats
        .get(item as usize)
        .map_or(0.0, |s| (s.clicks + s.likes + s.shares + s.watches) as f32);
    let a = 1.0 + eng.min(imp);
    let b = 1.0 + (imp - eng).max(0.0);
    let mean = a / (a + b);
    let var = a * b / ((a + b) * (a + b) * (a + b + 1.0));
    (mean, var.sqrt())
}

fn std_normal(rng: &mut SmallRng) -> f32 {
    // Ziggurat: a few nanoseconds a draw, and the propensity estimate takes thousands.
    rng.sample(StandardNormal)
}

/// Thompson sampling over under-exposed candidates for the exploration slots; a new item
/// short of its guaranteed impressions takes the first slot. Place it after the ordering
/// selector (`top_score`) and before `diversity` / `mmr`, which keep explored items in place.
#[derive(Debug)]
pub struct Exploration {
    pub config: ExplorationConfig,
}

impl Selector for Exploration {
    fn name(&self) -> &str {
        "exploration"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let n = ctx.query.n.min(cands.items.len());
        let mut slots = self.config.slots(n);
        // A slot a pin already holds is not explored.
        slots.retain(|&s| {
            !cands
                .items
                .iter()
                .any(|c| c.placed.locked() && usize::from(c.slot) == s)
        });
        // Selectors run again over fallback padding: explore once per response.
        let explored = cands
            .items
            .iter()
            .any(|c| matches!(c.placed, Placement::Exploring | Placement::NewItem));
        if slots.is_empty() || explored {
            return Ok(());
        }
        // The list's own order (by score after `top_score`) decides: its first `n - k` are
        // exploited and stay in order; exploration draws from the rest.
        let exploit = n - slots.len();
        let g = ctx.state.read();
        let now_s = ctx.query.now / 1000;
        let new_after = now_s - (self.config.new_item_hours * 3600.0) as i64;
        let mut guaranteed: Option<(u32, i64, usize)> = None;
        let mut pool: Vec<(usize, f32, f32)> = Vec::new();
        for (k, c) in cands.items.iter().enumerate().skip(exploit) {
            if c.placed.locked() {
                continue;
            }
            let imp = g.impressions.get(c.item as usize).copied().unwrap_or(0);
            // Sponsored items have their own delivery rules (and slot limits).
            if imp >= self.config.max_impressions || crate::rules::sponsored(&g, c.item) {
                continue;
            }
            let created = i64::from(g.hot(c.item).created_s);
            if imp < self.config.guaranteed_impressions
                && created >= new_after
                && guaranteed.is_none_or(|(i, t, _)| (imp, -created) < (i, -t))
            {
                guaranteed = Some((imp, created, k));
            }
            if pool.len() < self.config.pool {
                let (m, s) = posterior(&g, c.item);
                pool.push((k, m, s));
            }
        }
        drop(g);
        let mut rng = SmallRng::seed_from_u64(request_seed(ctx));
        let mut picks: Vec<(usize, usize, Placement, f32)> = Vec::with_capacity(slots.len());
        let mut slot_iter = slots.iter().copied();
        if let Some((_, _, k)) = guaranteed
            && let Some(slot) = slot_iter.next()
        {
            picks.push((slot, k, Placement::NewItem, 1.0));
            pool.retain(|&(p, _, _)| p != k);
        }
        let mut draws = vec![0f32; pool.len()];
        for slot in slot_iter {
            if pool.is_empty() {
                break;
            }
            let argmax = |rng: &mut SmallRng, draws: &mut Vec<f32>| {
                for (d, &(_, m, s)) in draws.iter_mut().zip(&pool) {
                    *d = m + s * std_normal(rng);
                }
                draws
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i)
            };
            let chosen = argmax(&mut rng, &mut draws);
            // The propensity: how often a fresh draw picks the same item for this slot.
            let reps = self.config.propensity_samples;
            let hits = (0..reps)
                .filter(|_| argmax(&mut rng, &mut draws) == chosen)
                .count();
            // Never zero: the item was drawn, so its probability is positive.
            let p = ((hits as f32 + 1.0) / (reps as f32 + 1.0)).min(1.0);
            let (k, _, _) = pool.remove(chosen);
            draws.pop();
            picks.push((slot, k, Placement::Exploring, p));
        }
        if picks.is_empty() {
            return Ok(());
        }
        // Move picks into their slots, highest candidate index first so indices stay valid.
        let mut taken: Vec<(usize, Candidate)> = picks
            .iter()
            .map(|&(slot, k, placed, p)| {
                let mut c = cands.items[k];
                c.placed = placed;
                c.propensity = p;
                (slot, c)
            })
            .collect();
        let mut ks: Vec<usize> = picks.iter().map(|&(_, k, _, _)| k).collect();
        ks.sort_unstable_by(|a, b| b.cmp(a));
        for k in ks {
            cands.items.remove(k);
        }
        // Removing keeps the list's order; the exploration items go into their slots.
        taken.sort_by_key(|&(slot, _)| slot);
        for (slot, c) in taken {
            move_to(&mut cands.items, c, slot);
        }
        Ok(())
    }
}
