//! Feature hydration in bulk: retrieval, item, user, user×item and context features for all
//! candidates of a request, under one declared schema that training and serving share.

pub use crate::schema::*;
use crate::schema::{RECENT_SEEDS, code, column, columns};
use cascade_core::{EventKind, Idx, NONE_IDX};
use cascade_features::FeatureSchema;
use cascade_index::als::dot;
use cascade_pipeline::{Candidates, ComponentError, Hydrator, MAX_SOURCES, RequestCtx};

/// Which sources found each candidate, their scores, scores relative to the source's best in
/// this request, and ranks.
#[derive(Debug)]
pub struct RetrievalHydrator {
    /// Per slot: (score, norm, rank) columns.
    cols: Vec<[usize; 3]>,
    n_sources: usize,
}

impl RetrievalHydrator {
    pub fn new(schema: &FeatureSchema, sources: &[String]) -> Result<Self, ComponentError> {
        let cols = sources
            .iter()
            .take(MAX_SOURCES)
            .map(|s| {
                let [a, b, c] = source_features(s);
                Ok([
                    column(schema, &a)?,
                    column(schema, &b)?,
                    column(schema, &c)?,
                ])
            })
            .collect::<Result<_, ComponentError>>()?;
        Ok(Self {
            cols,
            n_sources: column(schema, N_SOURCES)?,
        })
    }
}

impl Hydrator for RetrievalHydrator {
    fn name(&self) -> &str {
        "retrieval"
    }

    /// The sources' scores and ranks travel with the request.
    fn needs_store(&self) -> bool {
        false
    }

    fn hydrate(&self, _ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let mut best = [f32::MIN_POSITIVE; MAX_SOURCES];
        for c in &cands.items {
            for s in c.source_slots() {
                best[s] = best[s].max(c.source_scores[s]);
            }
        }
        for c in &cands.items {
            let mut n = 0u32;
            for (s, &[score, norm, rank]) in self.cols.iter().enumerate() {
                if c.has_source(s) {
                    n += 1;
                    cands.features.set(c.row, score, c.source_scores[s]);
                    cands
                        .features
                        .set(c.row, norm, c.source_scores[s] / best[s]);
                    cands
                        .features
                        .set(c.row, rank, f32::from(c.source_ranks[s]));
                }
            }
            cands.features.set(c.row, self.n_sources, n as f32);
        }
        Ok(())
    }
}

/// Item popularity and trend, feedback rates (smoothed), age and category.
#[derive(Debug)]
pub struct ItemHydrator {
    cols: [usize; 12],
}

impl ItemHydrator {
    pub fn new(schema: &FeatureSchema) -> Result<Self, ComponentError> {
        let names = [
            ITEM_POPULARITY,
            ITEM_POPULARITY_SHORT,
            ITEM_TREND,
            ITEM_ENGAGEMENTS,
            ITEM_IMPRESSIONS,
            ITEM_CTR,
            ITEM_LIKE_RATE,
            ITEM_SKIP_RATE,
            ITEM_WATCH_COMPLETION,
            ITEM_AGE_DAYS,
            ITEM_CATEGORY,
            ITEM_CREATOR,
        ];
        Ok(Self {
            cols: columns(schema, names)?,
        })
    }
}

impl Hydrator for ItemHydrator {
    fn name(&self) -> &str {
        "item"
    }

    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let [
            pop_c,
            short_c,
            trend_c,
            eng_c,
            imp_c,
            ctr_c,
            like_c,
            skip_c,
            watch_c,
            age_c,
            cat_c,
            creator_c,
        ] = self.cols;
        let now = ctx.query.now;
        let g = ctx.state.read();
        // Live counters include every event up to the watermark; when `now` lies before it
        // (a replayed request), only the popular list built for `now` may be read and the
        // feedback counters (which would leak the future) stay at their defaults.
        let live = ctx.live;
        let past: Vec<(u32, f32)> = if live {
            Vec::new()
        } else {
            let mut v = ctx.popular.global.clone();
            v.sort_unstable_by_key(|&(i, _)| i);
            v
        };
        let f = &mut cands.features;
        for c in &cands.items {
            let i = c.item as usize;
            let decayed = |log: Option<&f64>, d: &cascade_features::Decay| {
                log.filter(|s| **s > f64::NEG_INFINITY)
                    .map(|&s| d.value_at(s, now) as f32)
            };
            let pop = if live {
                decayed(g.popularity.get(i), &g.decay)
            } else {
                past.binary_search_by_key(&c.item, |&(i, _)| i)
                    .ok()
                    .map(|p| past[p].1)
            };
            match pop {
                Some(p) => f.set(c.row, pop_c, p.ln_1p()),
                None => f.missing += 1,
            }
            if live {
                let short = decayed(g.popularity_short.get(i), &g.decay_short).unwrap_or(0.0);
                f.set(c.row, short_c, short.ln_1p());
                f.set(
                    c.row,
                    trend_c,
                    short.ln_1p() - pop.unwrap_or(0.0).ln_1p() * 0.5,
                );
                let eng = g.engagements.get(i).copied().unwrap_or(0) as f32;
                let imp = g.impressions.get(i).copied().unwrap_or(0) as f32;
                f.set(c.row, eng_c, eng.ln_1p());
                f.set(c.row, imp_c, imp.ln_1p());
                if let Some(s) = g.item_stats.get(i) {
                    let acted = (s.views + s.clicks + s.likes + s.watches + s.shares) as f32;
                    let all = acted + (s.skips + s.hides) as f32;
                    // Beta-prior smoothing so a handful of events cannot dominate.
                    f.set(c.row, ctr_c, (acted + 1.0) / (imp.max(acted) + 20.0));
                    f.set(c.row, like_c, (s.likes as f32 + 1.0) / (all + 10.0));
                    f.set(
                        c.row,
                        skip_c,
                        ((s.skips + s.hides) as f32 + 0.5) / (all + 10.0),
                    );
                    f.set(
                        c.row,
                        watch_c,
                        (s.watch_fraction + 0.5) / (s.watches as f32 + 1.0),
                    );
                } else {
                    f.missing += 1;
                }
            }
            let hot = g.hot(c.item);
            if hot.exists() {
                let age = (now / 1000 - i64::from(hot.created_s)).max(0) as f32 / 86_400.0;
                f.set(c.row, age_c, age);
                if hot.cats[0] != NONE_IDX {
                    f.set(c.row, cat_c, hot.cats[0] as f32);
                }
                if hot.creator != NONE_IDX {
                    f.set(c.row, creator_c, hot.creator as f32);
                }
            } else {
                f.missing += 1;
            }
        }
        Ok(())
    }
}

/// The user's activity: how much, how recently, since when; the same for every candidate, so
/// the ranker can condition item signals on the kind of user.
#[derive(Debug)]
pub struct UserHydrator {
    cols: [usize; 12],
}

impl UserHydrator {
    pub fn new(schema: &FeatureSchema) -> Result<Self, ComponentError> {
        let names = [
            USER_INTERACTIONS,
            USER_EVENTS_1H,
            USER_EVENTS_1D,
            USER_EVENTS_7D,
            USER_EVENTS_30D,
            USER_SKIP_SHARE,
            USER_HOURS_SINCE_LAST,
            USER_ACCOUNT_DAYS,
            USER_CLICKS_7D,
            USER_LIKES_7D,
            USER_WATCHES_7D,
            USER_SKIPS_7D,
        ];
        Ok(Self {
            cols: columns(schema, names)?,
        })
    }
}

impl Hydrator for UserHydrator {
    fn name(&self) -> &str {
        "user"
    }

    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let u = &ctx.user;
        if u.idx.is_none() {
            cands.features.missing += cands.items.len() as u64;
            return Ok(());
        }
        let now_s = ctx.query.now / 1000;
        let mut windows = [0f32; 4];
        let mut skips = 0f32;
        // Per event type within the week: clicks, likes, watches, skips and hides.
        let mut kinds = [0f32; 4];
        for it in &u.recent {
            let age = (now_s - i64::from(it.ts_s)).max(0);
            if age < 7 * 86_400 {
                match it.kind {
                    EventKind::Click => kinds[0] += 1.0,
                    EventKind::Like => kinds[1] += 1.0,
                    EventKind::Watch => kinds[2] += 1.0,
                    EventKind::Skip | EventKind::Hide => kinds[3] += 1.0,
                    _ => {}
                }
            }
            for (w, limit) in windows
                .iter_mut()
                .zip([3600, 86_400, 7 * 86_400, 30 * 86_400])
            {
                if age < limit {
                    *w += 1.0;
                }
            }
            if matches!(it.kind, EventKind::Skip | EventKind::Hide) {
                skips += 1.0;
            }
        }
        let last = u.recent.last().map(|it| i64::from(it.ts_s));
        let values = [
            (u.interactions as f32).ln_1p(),
            windows[0],
            windows[1],
            windows[2],
            windows[3],
            skips / u.recent.len().max(1) as f32,
            last.map_or(-1.0, |t| ((now_s - t).max(0) as f32 / 3600.0).ln_1p()),
            if u.first_s > 0 {
                (now_s - i64::from(u.first_s)).max(0) as f32 / 86_400.0
            } else {
                0.0
            },
            kinds[0],
            kinds[1],
            kinds[2],
            kinds[3],
        ];
        for c in &cands.items {
            for (&col, &v) in self.cols.iter().zip(&values) {
                cands.features.set(c.row, col, v);
            }
        }
        Ok(())
    }
}

/// How the candidate relates to this user: category and creator affinity, follows, the
/// embedding dot product, similarity to the latest items, and co-visitation with them.
#[derive(Debug)]
pub struct UserItemHydrator {
    cols: [usize; 8],
}

impl UserItemHydrator {
    pub fn new(schema: &FeatureSchema) -> Result<Self, ComponentError> {
        let names = [
            USER_CATEGORY_AFFINITY,
            USER_CREATOR_AFFINITY,
            USER_FOLLOWS_CREATOR,
            USER_ITEM_DOT,
            ITEM_LAST_SIMILARITY,
            ITEM_RECENT_SIMILARITY,
            COVIS_LAST,
            COVIS_RECENT,
        ];
        Ok(Self {
            cols: columns(schema, names)?,
        })
    }
}

impl Hydrator for UserItemHydrator {
    fn name(&self) -> &str {
        "user_item"
    }

    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let [
            cat_col,
            cre_col,
            fol_col,
            dot_col,
            last_col,
            recent_col,
            cv_last,
            cv_recent,
        ] = self.cols;
        let g = ctx.state.read();
        // Category and creator counts of the recent history: small sorted vectors.
        let mut cats: Vec<(u32, f32)> = Vec::new();
        let mut creators: Vec<(u32, f32)> = Vec::new();
        let recent = &ctx.user.recent;
        let total = recent.len().max(1) as f32;
        let mut seeds: Vec<Idx> = Vec::with_capacity(RECENT_SEEDS);
        for &i in ctx.session.iter().rev() {
            if seeds.len() < RECENT_SEEDS && !seeds.contains(&i) {
                seeds.push(i);
            }
        }
        for it in recent.iter().rev().filter(|i| i.kind.is_positive()) {
            if seeds.len() < RECENT_SEEDS && !seeds.contains(&it.item) {
                seeds.push(it.item);
            }
        }
        for it in recent.iter().filter(|i| i.kind.is_positive()) {
            let h = g.hot(it.item);
            for c in h.cats.into_iter().filter(|&c| c != NONE_IDX) {
                bump(&mut cats, c, 1.0);
            }
            if h.creator != NONE_IDX {
                bump(&mut creators, h.creator, 1.0);
            }
        }
        // Co-visitation from the latest items, each list scaled by its strongest entry.
        let models = &ctx.models;
        let mut covis: Vec<(u32, f32)> = Vec::new();
        let mut covis_first: Vec<(u32, f32)> = Vec::new();
        let mut w = 1.0f32;
        for (k, &s) in seeds.iter().enumerate() {
            let (nb, ws) = models.covis.neighbors(s);
            let top = ws.first().copied().unwrap_or(1.0).max(f32::MIN_POSITIVE);
            for (&b, &x) in nb.iter().zip(ws) {
                covis.push((b, w * x / top));
                if k == 0 {
                    covis_first.push((b, x / top));
                }
            }
            w *= 0.7;
        }
        merge_sum(&mut covis);
        merge_sum(&mut covis_first);
        // Embeddings: the user's vector and the unit vectors of the latest items.
        let emb = models.embeddings.as_deref();
        let user_vec = emb.and_then(|e| ctx.user.idx.and_then(|u| e.user(u)));
        let seed_vecs: Vec<&[f32]> = emb
            .map(|e| seeds.iter().filter_map(|&s| e.item(s)).collect())
            .unwrap_or_default();
        let seed_norms: Vec<f32> = seed_vecs.iter().map(|v| dot(v, v).sqrt()).collect();
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
            cands.features.set(c.row, cv_recent, lookup(&covis, c.item));
            cands
                .features
                .set(c.row, cv_last, lookup(&covis_first, c.item));
            match emb.and_then(|e| e.item(c.item)) {
                Some(v) => {
                    if let Some(u) = user_vec {
                        cands.features.set(c.row, dot_col, dot(u, v));
                    }
                    let norm = dot(v, v).sqrt().max(1e-12);
                    let mut best = 0f32;
                    for (k, (s, n)) in seed_vecs.iter().zip(&seed_norms).enumerate() {
                        let cos = dot(s, v) / (norm * n.max(1e-12));
                        if k == 0 {
                            cands.features.set(c.row, last_col, cos);
                        }
                        best = best.max(cos);
                    }
                    cands.features.set(c.row, recent_col, best);
                }
                None => cands.features.missing += 1,
            }
        }
        Ok(())
    }
}

/// Request context: hour of day and day of week (UTC) of `now`, device and surface codes.
#[derive(Debug)]
pub struct ContextHydrator {
    cols: [usize; 4],
}

impl ContextHydrator {
    pub fn new(schema: &FeatureSchema) -> Result<Self, ComponentError> {
        Ok(Self {
            cols: columns(schema, [HOUR_OF_DAY, DAY_OF_WEEK, DEVICE, SURFACE])?,
        })
    }
}

impl Hydrator for ContextHydrator {
    fn name(&self) -> &str {
        "context"
    }

    /// Time, device and surface come with the request.
    fn needs_store(&self) -> bool {
        false
    }

    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let secs = ctx.query.now.div_euclid(1000);
        let hour = secs.rem_euclid(86_400) / 3600;
        // 1970-01-01 was a Thursday; 0 = Monday.
        let dow = (secs.div_euclid(86_400) + 3).rem_euclid(7);
        let device = ctx.query.context.device.as_deref().map_or(-1.0, code);
        let values = [hour as f32, dow as f32, device, code(&ctx.query.surface)];
        for c in &cands.items {
            for (&col, &v) in self.cols.iter().zip(&values) {
                cands.features.set(c.row, col, v);
            }
        }
        Ok(())
    }
}

fn bump(v: &mut Vec<(u32, f32)>, k: u32, w: f32) {
    match v.binary_search_by_key(&k, |&(x, _)| x) {
        Ok(p) => v[p].1 += w,
        Err(p) => v.insert(p, (k, w)),
    }
}

/// Sorts by key and sums duplicates.
fn merge_sum(v: &mut Vec<(u32, f32)>) {
    v.sort_unstable_by_key(|&(k, _)| k);
    v.dedup_by(|next, kept| {
        if next.0 == kept.0 {
            kept.1 += next.1;
            true
        } else {
            false
        }
    });
}

fn lookup(v: &[(u32, f32)], k: u32) -> f32 {
    v.binary_search_by_key(&k, |&(x, _)| x)
        .map_or(0.0, |p| v[p].1)
}
