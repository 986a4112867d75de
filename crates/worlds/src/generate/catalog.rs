//! The catalog: items derived from hashes of their index (category, creator, quality, taste
//! vector, text), and the index arrays that sample them by popularity.

use super::draw::*;
use super::params::*;
use cascade_core::{Item, Millis, TimeInput};
use rayon::prelude::*;
use serde_json::{Map, Value};

/// Everything about an item that the simulation needs, derived from hash(seed, index).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemCore {
    pub(crate) creator: u32,
    pub(crate) cat: u32,
    pub(crate) cat2: Option<u32>,
    pub(crate) created_at: Millis,
    /// Appeal beyond taste match, in logit units.
    pub(crate) quality: f32,
    /// Orders items by popularity within their category (higher is more popular).
    pub(crate) popkey: f32,
    pub(crate) duration_s: u32,
    pub(crate) hidden: bool,
    pub(crate) mature: bool,
}

/// What exists before any item is placed: the taste space and the category and creator shares.
pub(crate) struct Base {
    pub(crate) seed: u64,
    pub(crate) n_cats: usize,
    pub(crate) n_creators: usize,
    pub(crate) start_ms: Millis,
    pub(crate) end_ms: Millis,
    /// How long each user stays, when users arrive and leave (see `GenerateParams`).
    pub(crate) lifetime_ms: Option<i64>,
    pub(crate) centroids: Vec<[f32; DIM]>,
    pub(crate) share: Vec<f64>,
    pub(crate) share_cum: Vec<f64>,
    pub(crate) cat_names: Vec<String>,
    pub(crate) vocab: Vec<[&'static str; VOCAB]>,
}

impl Base {
    pub(crate) fn new(p: &GenerateParams) -> Self {
        let n_cats = p.categories;
        let centroids = (0..n_cats)
            .map(|c| {
                let mut h = Hrng::new(p.seed, S_CENTROID, c as u64);
                let mut v = [0f32; DIM];
                for x in &mut v {
                    *x = h.gauss() as f32;
                }
                normalize(&mut v);
                v
            })
            .collect();
        let share: Vec<f64> = (0..n_cats)
            .map(|c| 1.0 / (c as f64 + 1.0).powf(CATEGORY_ZIPF))
            .collect();
        let share_cum = cumulative(share.iter().copied());
        let vocab = (0..n_cats)
            .map(|c| {
                let mut v = [""; VOCAB];
                for (j, t) in v.iter_mut().enumerate() {
                    let h = hash(p.seed, S_VOCAB, (c * VOCAB + j) as u64);
                    *t = TAG_POOL[(h % TAG_POOL.len() as u64) as usize];
                }
                v
            })
            .collect();
        Self {
            seed: p.seed,
            n_cats,
            n_creators: (p.items / ITEMS_PER_CREATOR).max(1),
            start_ms: p.start_ms(),
            end_ms: p.end_ms,
            lifetime_ms: p.lifetime_days.map(|d| i64::from(d.max(1)) * DAY_MS),
            centroids,
            share,
            share_cum,
            cat_names: (0..n_cats).map(category_name).collect(),
            vocab,
        }
    }

    pub(crate) fn draw_share(&self, u: f64) -> u32 {
        cum_draw(&self.share_cum, u) as u32
    }

    /// The category a creator mostly works in.
    pub(crate) fn creator_cat(&self, k: u32) -> u32 {
        self.draw_share(to_unit(hash(self.seed, S_CREATOR, u64::from(k))))
    }

    pub(crate) fn item_core(&self, i: u32) -> ItemCore {
        let mut h = Hrng::new(self.seed, S_ITEM, u64::from(i));
        // Squaring a uniform piles items onto low creator indexes: power-law creator sizes.
        let u = h.unit();
        let creator = ((u * u * self.n_creators as f64) as usize).min(self.n_creators - 1) as u32;
        let cat = if h.unit() < 0.85 {
            self.creator_cat(creator)
        } else {
            self.draw_share(h.unit())
        };
        let cat2 = if h.unit() < 0.25 {
            let c = self.draw_share(h.unit());
            (c != cat).then_some(c)
        } else {
            None
        };
        let period = (self.end_ms - self.start_ms) as f64;
        // A back catalog from before the period, and releases during it.
        let created_at = if h.unit() < 0.6 {
            self.start_ms - (h.unit() * 2.0 * period) as i64
        } else {
            self.start_ms + (h.unit() * period) as i64
        };
        let quality = (0.5 * h.gauss()) as f32;
        // Popularity leans on quality, so popular items also tend to be liked.
        let popkey = quality + (0.8 * h.gauss()) as f32;
        let d = h.unit();
        let duration_s = (30.0 + 1800.0 * d * d * d) as u32;
        ItemCore {
            creator,
            cat,
            cat2,
            created_at: created_at.clamp(0, self.end_ms - 1),
            quality,
            popkey,
            duration_s,
            hidden: h.unit() < 0.01,
            mature: h.unit() < 0.03,
        }
    }

    pub(crate) fn item_vec(&self, i: u32, core: &ItemCore) -> [f32; DIM] {
        let mut v = self.centroids[core.cat as usize];
        if let Some(c2) = core.cat2 {
            for (x, y) in v.iter_mut().zip(&self.centroids[c2 as usize]) {
                *x += 0.5 * y;
            }
        }
        let mut h = Hrng::new(self.seed, S_VEC, u64::from(i));
        for x in &mut v {
            *x += ITEM_NOISE * approx_gauss(h.next_u64());
        }
        v
    }

    pub(crate) fn make_item(&self, i: u32, core: &ItemCore) -> Item {
        let mut h = Hrng::new(self.seed, S_TEXT, u64::from(i));
        let adjective = ADJECTIVES[h.below(ADJECTIVES.len())];
        let noun = NOUNS[h.below(NOUNS.len())];
        let cat_name = &self.cat_names[core.cat as usize];
        let n_tags = 1 + h.below(3);
        let mut tags: Vec<String> = Vec::with_capacity(n_tags);
        for _ in 0..n_tags {
            // Skewed toward the first words of the vocabulary: some tags are common.
            let u = h.unit();
            let tag =
                self.vocab[core.cat as usize][((u * u * VOCAB as f64) as usize).min(VOCAB - 1)];
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
        let mut categories = vec![cat_name.clone()];
        if let Some(c2) = core.cat2 {
            categories.push(self.cat_names[c2 as usize].clone());
        }
        let mut attributes = Map::new();
        attributes.insert("duration_s".to_string(), Value::from(core.duration_s));
        Item {
            id: format!("i{i}"),
            title: format!("{cat_name} #{i}: {adjective} {noun}"),
            categories,
            tags,
            creator_id: Some(format!("c{}", core.creator)),
            created_at: Some(TimeInput(core.created_at)),
            attributes,
            hidden: core.hidden,
            mature: core.mature,
        }
    }

    /// Activity level: 0 for cold-start users, else Pareto(1.5) capped at 100.
    pub(crate) fn activity(&self, u: u32) -> f64 {
        let mut h = Hrng::new(self.seed, S_ACTIVITY, u64::from(u));
        if h.unit() < COLD_SHARE {
            return 0.0;
        }
        (1.0 - h.unit()).powf(-1.0 / 1.5).min(100.0)
    }
}

/// Index arrays over the placed items: per-category popularity order and per-creator lists.
pub(crate) struct Catalog {
    /// Items grouped by primary category, most popular first within each group.
    pub(crate) cat_items: Vec<u32>,
    pub(crate) cat_off: Vec<usize>,
    /// harm[r] = Σ_{k ≤ r} 1/(k+1)^ITEM_ZIPF: the cumulative popularity weight shared by every
    /// category, since weights depend on rank only.
    pub(crate) harm: Vec<f64>,
    /// Items grouped by creator, in index order (a creator's "series").
    pub(crate) creator_items: Vec<u32>,
    pub(crate) creator_off: Vec<usize>,
    /// Category shares with empty categories zeroed.
    pub(crate) live_cum: Vec<f64>,
}

impl Catalog {
    pub(crate) fn build(base: &Base, cat_of: &[u32], creator_of: &[u32], popkey: &[f32]) -> Self {
        let n = cat_of.len();
        let mut cat_off = vec![0usize; base.n_cats + 1];
        for &c in cat_of {
            cat_off[c as usize + 1] += 1;
        }
        for c in 0..base.n_cats {
            cat_off[c + 1] += cat_off[c];
        }
        let mut cat_items: Vec<u32> = (0..n as u32).collect();
        cat_items.par_sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            cat_of[a]
                .cmp(&cat_of[b])
                .then(popkey[b].total_cmp(&popkey[a]))
                .then(a.cmp(&b))
        });
        let max_len = cat_off.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let harm = cumulative((0..max_len).map(|r| 1.0 / (r as f64 + 1.0).powf(ITEM_ZIPF)));

        let mut creator_off = vec![0usize; base.n_creators + 1];
        for &k in creator_of {
            creator_off[k as usize + 1] += 1;
        }
        for k in 0..base.n_creators {
            creator_off[k + 1] += creator_off[k];
        }
        let mut fill = creator_off.clone();
        let mut creator_items = vec![0u32; n];
        for (i, &k) in creator_of.iter().enumerate() {
            let slot = &mut fill[k as usize];
            creator_items[*slot] = i as u32;
            *slot += 1;
        }

        let live_cum = cumulative((0..base.n_cats).map(|c| {
            if cat_off[c + 1] > cat_off[c] {
                base.share[c]
            } else {
                0.0
            }
        }));
        Self {
            cat_items,
            cat_off,
            harm,
            creator_items,
            creator_off,
            live_cum,
        }
    }

    pub(crate) fn cat_slice(&self, c: u32) -> &[u32] {
        let c = c as usize;
        &self.cat_items[self.cat_off[c]..self.cat_off[c + 1]]
    }

    pub(crate) fn is_live(&self, c: usize) -> bool {
        self.cat_off[c + 1] > self.cat_off[c]
    }

    /// An item of category `c` drawn by Zipf popularity.
    pub(crate) fn pop_draw(&self, c: u32, u: f64) -> Option<u32> {
        let items = self.cat_slice(c);
        let n = items.len();
        if n == 0 {
            return None;
        }
        let r = cum_draw(&self.harm[..n], u);
        items.get(r).copied()
    }

    /// An item of category `c` drawn uniformly.
    pub(crate) fn uniform_in_cat(&self, c: u32, u: f64) -> Option<u32> {
        let items = self.cat_slice(c);
        let r = ((u * items.len() as f64) as usize).min(items.len().saturating_sub(1));
        items.get(r).copied()
    }

    pub(crate) fn creator_slice(&self, k: u32) -> &[u32] {
        let k = k as usize;
        &self.creator_items[self.creator_off[k]..self.creator_off[k + 1]]
    }
}

// ---------------------------------------------------------------------------------------------
// Users and events
