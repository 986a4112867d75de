//! Feature hydration in bulk: item features and user×item features for all candidates.

use cascade_core::NONE_IDX;
use cascade_features::{FeatureDef, FeatureSchema};
use cascade_pipeline::{Candidates, ComponentError, Hydrator, RequestCtx};

pub const ITEM_POPULARITY: &str = "item_popularity";
pub const ITEM_AGE_DAYS: &str = "item_age_days";
pub const USER_CATEGORY_AFFINITY: &str = "user_category_affinity";
pub const USER_CREATOR_AFFINITY: &str = "user_creator_affinity";
pub const USER_FOLLOWS_CREATOR: &str = "user_follows_creator";

/// The declared features of the default surfaces.
pub fn default_schema() -> FeatureSchema {
    FeatureSchema::new(vec![
        FeatureDef {
            name: ITEM_POPULARITY,
            default: 0.0,
        },
        FeatureDef {
            name: ITEM_AGE_DAYS,
            default: 30.0,
        },
        FeatureDef {
            name: USER_CATEGORY_AFFINITY,
            default: 0.0,
        },
        FeatureDef {
            name: USER_CREATOR_AFFINITY,
            default: 0.0,
        },
        FeatureDef {
            name: USER_FOLLOWS_CREATOR,
            default: 0.0,
        },
    ])
}

fn column(schema: &FeatureSchema, name: &str) -> Result<usize, ComponentError> {
    schema
        .index(name)
        .ok_or_else(|| ComponentError::Failed(format!("feature `{name}` is not in the schema")))
}

/// Item popularity (log of the decayed engagement as of `now`) and age.
#[derive(Debug, Default)]
pub struct ItemHydrator;

impl Hydrator for ItemHydrator {
    fn name(&self) -> &str {
        "item"
    }

    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let pop_col = column(&cands.features.schema, ITEM_POPULARITY)?;
        let age_col = column(&cands.features.schema, ITEM_AGE_DAYS)?;
        let now = ctx.query.now;
        let g = ctx.state.read();
        // Live counters include every event up to the watermark; when `now` lies before it
        // (a replayed request), only the popular list built for `now` may be read.
        let live = ctx.live;
        let past: Vec<(u32, f32)> = if live {
            Vec::new()
        } else {
            let mut v = ctx.popular.global.clone();
            v.sort_unstable_by_key(|&(i, _)| i);
            v
        };
        for c in &cands.items {
            let pop = if live {
                g.popularity
                    .get(c.item as usize)
                    .filter(|s| **s > f64::NEG_INFINITY)
                    .map(|&s| g.decay.value_at(s, now) as f32)
            } else {
                past.binary_search_by_key(&c.item, |&(i, _)| i)
                    .ok()
                    .map(|p| past[p].1)
            };
            match pop {
                Some(p) => cands.features.set(c.row, pop_col, p.ln_1p()),
                None => cands.features.missing += 1,
            }
            let hot = g.hot(c.item);
            if hot.exists() {
                let age = (now / 1000 - i64::from(hot.created_s)).max(0) as f32 / 86_400.0;
                cands.features.set(c.row, age_col, age);
            } else {
                cands.features.missing += 1;
            }
        }
        Ok(())
    }
}

/// How much of the user's recent activity falls in the candidate's categories and creator,
/// and whether the user follows its creator.
#[derive(Debug, Default)]
pub struct UserItemHydrator;

impl Hydrator for UserItemHydrator {
    fn name(&self) -> &str {
        "user_item"
    }

    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let cat_col = column(&cands.features.schema, USER_CATEGORY_AFFINITY)?;
        let cre_col = column(&cands.features.schema, USER_CREATOR_AFFINITY)?;
        let fol_col = column(&cands.features.schema, USER_FOLLOWS_CREATOR)?;
        let g = ctx.state.read();
        // Category and creator counts of the recent history: small sorted vectors.
        let mut cats: Vec<(u32, f32)> = Vec::new();
        let mut creators: Vec<(u32, f32)> = Vec::new();
        let recent = &ctx.user.recent;
        let total = recent.len().max(1) as f32;
        for it in recent.iter().filter(|i| i.kind.is_positive()) {
            let h = g.hot(it.item);
            for c in h.cats.into_iter().filter(|&c| c != NONE_IDX) {
                bump(&mut cats, c);
            }
            if h.creator != NONE_IDX {
                bump(&mut creators, h.creator);
            }
        }
        for c in &cands.items {
            let h = g.hot(c.item);
            if !h.exists() {
                cands.features.missing += 1;
                continue;
            }
            let cat = h
                .cats
                .iter()
                .filter(|&&k| k != NONE_IDX)
                .map(|&k| lookup(&cats, k))
                .fold(0f32, f32::max);
            cands.features.set(c.row, cat_col, cat / total);
            if h.creator != NONE_IDX {
                let affinity = lookup(&creators, h.creator) / total;
                cands.features.set(c.row, cre_col, affinity);
                let follows = ctx.user.follows.binary_search(&h.creator).is_ok();
                cands
                    .features
                    .set(c.row, fol_col, f32::from(u8::from(follows)));
            }
        }
        Ok(())
    }
}

fn bump(v: &mut Vec<(u32, f32)>, k: u32) {
    match v.binary_search_by_key(&k, |&(x, _)| x) {
        Ok(p) => v[p].1 += 1.0,
        Err(p) => v.insert(p, (k, 1.0)),
    }
}

fn lookup(v: &[(u32, f32)], k: u32) -> f32 {
    v.binary_search_by_key(&k, |&(x, _)| x)
        .map_or(0.0, |p| v[p].1)
}
