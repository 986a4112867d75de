//! `cascade generate`: a deterministic synthetic world (items, users, events) with learnable structure.
//!
//! The world is built around a 16-dimensional taste space:
//! - every category has a centroid; an item's vector is its category centroid (plus half of a
//!   second category's, for some items) plus noise;
//! - a user's taste is a mixture of 1–3 favourite categories' centroids plus noise;
//! - affinity = sigmoid(5·taste·item − 2 + item quality (+ a bonus for followed creators)).
//!
//! Events come from sessions. Within a session the next item is often a continuation of the
//! previous one (a fixed "related" item, the creator's next item, or a popular item of the same
//! category), otherwise a fresh pick: a category from the user's favourites or taste, then an
//! item by Zipf popularity within it. Each exposure turns into impression / click / view / watch /
//! like / share / purchase / skip / hide / follow events according to the affinity.
//!
//! Scale: item attributes are derived from hash(seed, index) whenever needed instead of being
//! stored, so the only per-item memory is a few `u32` index arrays; events are kept as a compact
//! 32-byte struct until they are sorted by time and materialized in batches.

use crate::world::{Counts, WorldSink};
use anyhow::{Context, bail};
use cascade_core::{Event, EventIn, EventKind, Item, Millis, Target, TimeInput, User};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Dimension of the latent taste space.
const DIM: usize = 16;
/// Records per sink call.
const BATCH: usize = 10_000;
/// Users simulated per parallel chunk: bounds the per-user buffers alive at once.
const USER_CHUNK: usize = 4_096;
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;
/// Average catalog size of a creator.
const ITEMS_PER_CREATOR: usize = 25;
/// Tags in each category's vocabulary.
const VOCAB: usize = 8;
/// Zipf exponent of item popularity within a category.
const ITEM_ZIPF: f64 = 1.0;
/// Zipf exponent of category sizes.
const CATEGORY_ZIPF: f64 = 0.8;
/// Share of users who never act (cold-start users).
const COLD_SHARE: f64 = 0.1;
/// Mean events per session, before per-user variation.
const EVENTS_PER_SESSION: f64 = 12.0;
/// Per-dimension noise of item vectors around their centroid.
const ITEM_NOISE: f32 = 0.15;
/// Per-dimension noise of user tastes around their favourites' mixture.
const TASTE_NOISE: f32 = 0.15;
/// Sharpness of the category softmax over taste·centroid.
const CATEGORY_BETA: f64 = 6.0;
/// Probability that a session's next item continues from the previous one.
const P_CONTINUE: f64 = 0.5;
/// Probability of a fresh pick coming from a followed creator (when the user follows any).
const P_FOLLOWED: f64 = 0.1;
/// Probability that a fresh pick starts from a favourite category rather than the taste softmax.
const P_FAVOURITE: f64 = 0.75;
/// Recent items a user avoids being shown again.
const RECENT: usize = 32;

// Independent hash streams, so that adding a draw to one attribute never shifts another.
const S_CENTROID: u64 = 1;
const S_CREATOR: u64 = 2;
const S_ITEM: u64 = 3;
const S_VEC: u64 = 4;
const S_TEXT: u64 = 5;
const S_VOCAB: u64 = 6;
const S_RELATED: u64 = 7;
const S_ACTIVITY: u64 = 8;
const S_BUDGET: u64 = 9;
const S_USER: u64 = 10;
const S_SIM: u64 = 11;

const CATEGORY_NAMES: [&str; 24] = [
    "Comedy",
    "Drama",
    "Documentary",
    "Music",
    "Sports",
    "Cooking",
    "Travel",
    "Gaming",
    "Science",
    "News",
    "Kids",
    "Fitness",
    "Fashion",
    "Tech",
    "History",
    "Nature",
    "Art",
    "Horror",
    "Romance",
    "Action",
    "Animation",
    "Education",
    "Finance",
    "Comedy Specials",
];

const ADJECTIVES: [&str; 32] = [
    "Quiet", "Golden", "Hidden", "Broken", "Electric", "Silent", "Wild", "Lost", "Bright",
    "Midnight", "Secret", "Endless", "Little", "Crimson", "Frozen", "Brave", "Hollow", "Lucky",
    "Ancient", "Restless", "Gentle", "Burning", "Curious", "Distant", "Final", "Honest", "Iron",
    "Lonely", "Modern", "Northern", "Simple", "Velvet",
];

const NOUNS: [&str; 32] = [
    "River",
    "Kitchen",
    "Signal",
    "Garden",
    "Machine",
    "Harbor",
    "Journey",
    "Summer",
    "Echo",
    "Engine",
    "Forest",
    "Market",
    "Mountain",
    "Letter",
    "Island",
    "Circuit",
    "Theory",
    "Road",
    "Window",
    "Festival",
    "Planet",
    "Recipe",
    "Workshop",
    "Canvas",
    "Season",
    "Border",
    "Studio",
    "Orchard",
    "Comet",
    "Lighthouse",
    "Bridge",
    "Archive",
];

const TAG_POOL: [&str; 48] = [
    "classic",
    "live",
    "indie",
    "short",
    "series",
    "beginner",
    "advanced",
    "tutorial",
    "behind-the-scenes",
    "interview",
    "review",
    "highlights",
    "family",
    "retro",
    "trending",
    "award-winning",
    "remastered",
    "diy",
    "quick",
    "deep-dive",
    "budget",
    "premium",
    "outdoor",
    "studio",
    "vlog",
    "compilation",
    "challenge",
    "explained",
    "history",
    "weekly",
    "daily",
    "q-and-a",
    "unboxing",
    "guide",
    "story",
    "documentary",
    "animated",
    "acoustic",
    "remix",
    "marathon",
    "top-10",
    "experimental",
    "local",
    "global",
    "slow",
    "fast-paced",
    "relaxing",
    "intense",
];

const LOCALES: [(&str, f64); 8] = [
    ("en-US", 0.35),
    ("en-GB", 0.10),
    ("de-DE", 0.10),
    ("fr-FR", 0.08),
    ("es-ES", 0.10),
    ("pt-BR", 0.10),
    ("ja-JP", 0.07),
    ("hi-IN", 0.10),
];

const AGE_BANDS: [(&str, f64); 6] = [
    ("13-17", 0.08),
    ("18-24", 0.22),
    ("25-34", 0.28),
    ("35-44", 0.20),
    ("45-54", 0.13),
    ("55+", 0.09),
];

/// Parameters of `cascade generate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateParams {
    pub items: usize,
    pub users: usize,
    /// Approximate number of events.
    pub events: usize,
    pub seed: u64,
    /// Number of categories (default 24).
    pub categories: usize,
    /// Length of the simulated period in days (default 42).
    pub days: u32,
    /// Event timestamps fall in `[end_ms - days, end_ms)`.
    pub end_ms: Millis,
}

impl GenerateParams {
    /// Parameters with the default number of categories (24) and days (42).
    pub fn new(items: usize, users: usize, events: usize, seed: u64, end_ms: Millis) -> Self {
        Self {
            items,
            users,
            events,
            seed,
            categories: 24,
            days: 42,
            end_ms,
        }
    }

    fn start_ms(&self) -> Millis {
        self.end_ms - i64::from(self.days) * DAY_MS
    }
}

/// Generates the world into `sink`: all items, then all users, then events sorted by time.
pub fn generate(
    p: &GenerateParams,
    sink: &mut dyn WorldSink,
    show_progress: bool,
) -> anyhow::Result<Counts> {
    check_params(p)?;
    let base = Base::new(p);
    let mut counts = Counts::default();

    // Items: streamed in batches; only the compact index arrays survive the phase.
    let pb = progress(show_progress, p.items as u64, "items");
    let mut cat_of: Vec<u32> = Vec::with_capacity(p.items);
    let mut creator_of: Vec<u32> = Vec::with_capacity(p.items);
    let mut popkey: Vec<f32> = Vec::with_capacity(p.items);
    for lo in (0..p.items).step_by(BATCH) {
        let hi = (lo + BATCH).min(p.items);
        let made: Vec<(Item, ItemCore)> = (lo..hi)
            .into_par_iter()
            .map(|i| {
                let core = base.item_core(i as u32);
                (base.make_item(i as u32, &core), core)
            })
            .collect();
        let mut batch = Vec::with_capacity(made.len());
        for (item, core) in made {
            cat_of.push(core.cat);
            creator_of.push(core.creator);
            popkey.push(core.popkey);
            batch.push(item);
        }
        counts.items += batch.len() as u64;
        sink.items(batch)?;
        pb.inc((hi - lo) as u64);
    }
    pb.finish_and_clear();
    let catalog = Catalog::build(&base, &cat_of, &creator_of, &popkey);
    drop((cat_of, creator_of, popkey));
    let sim = Sim {
        base: &base,
        cat: &catalog,
    };

    // Users.
    let pb = progress(show_progress, p.users as u64, "users");
    for lo in (0..p.users).step_by(BATCH) {
        let hi = (lo + BATCH).min(p.users);
        let batch: Vec<User> = (lo..hi)
            .into_par_iter()
            .map(|u| {
                let prof = sim.profile(u as u32);
                sim.make_user(u as u32, &prof)
            })
            .collect();
        counts.users += batch.len() as u64;
        sink.users(batch)?;
        pb.inc((hi - lo) as u64);
    }
    pb.finish_and_clear();

    // Event budgets: proportional to activity, rounded stochastically so the total matches.
    let activity: Vec<f64> = (0..p.users)
        .into_par_iter()
        .map(|u| base.activity(u as u32))
        .collect();
    // A sequential sum keeps the rounding below identical from run to run.
    let total_activity: f64 = activity.iter().sum();
    let budgets: Vec<u32> = activity
        .iter()
        .enumerate()
        .map(|(u, &a)| {
            if total_activity <= 0.0 {
                return 0;
            }
            let exact = p.events as f64 * a / total_activity;
            let frac = to_unit(hash(p.seed, S_BUDGET, u as u64));
            (exact + frac).floor() as u32
        })
        .collect();
    drop(activity);
    let total_budget: usize = budgets.iter().map(|&b| b as usize).sum();

    let pb = progress(show_progress, total_budget as u64, "events");
    let mut evs: Vec<Ev> = Vec::with_capacity(total_budget);
    for lo in (0..p.users).step_by(USER_CHUNK) {
        let hi = (lo + USER_CHUNK).min(p.users);
        let chunk: Vec<Vec<Ev>> = (lo..hi)
            .into_par_iter()
            .map(|u| sim.simulate(u as u32, budgets[u] as usize))
            .collect();
        for v in chunk {
            pb.inc(v.len() as u64);
            evs.extend(v);
        }
    }
    pb.finish_and_clear();
    drop(budgets);

    // (ts, user) is unique because each user's timestamps strictly increase, so the unstable
    // sort is deterministic.
    evs.par_sort_unstable_by(|a, b| a.ts.cmp(&b.ts).then(a.user.cmp(&b.user)));
    let pb = progress(show_progress, evs.len() as u64, "writing");
    for chunk in evs.chunks(BATCH) {
        let batch: Vec<Event> = chunk.par_iter().map(Ev::materialize).collect();
        counts.events += batch.len() as u64;
        sink.events(batch)?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(counts)
}

fn check_params(p: &GenerateParams) -> anyhow::Result<()> {
    if p.categories == 0 {
        bail!("--categories must be at least 1");
    }
    if p.categories > 100_000 {
        bail!("--categories must be at most 100000");
    }
    if p.days == 0 {
        bail!("--days must be at least 1");
    }
    if p.items > u32::MAX as usize - 1 || p.users > u32::MAX as usize - 1 {
        bail!("--items and --users must each be below {}", u32::MAX);
    }
    if p.events > u32::MAX as usize {
        bail!("--events must be at most {}", u32::MAX);
    }
    if p.start_ms() < 0 {
        bail!(
            "the generated period ({} days before the end time) must start after 1970",
            p.days
        );
    }
    if p.events > 0 && (p.items == 0 || p.users == 0) {
        bail!("events need at least one item and one user");
    }
    Ok(())
}

fn progress(show: bool, len: u64, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>8} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

// ---------------------------------------------------------------------------------------------
// Hashing and randomness

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer: a cheap, well-mixed bijection on u64.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of (seed, stream, index): the root of every derived attribute.
fn hash(seed: u64, stream: u64, a: u64) -> u64 {
    let s = mix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    mix64(s.wrapping_add(a.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Uniform in [0, 1) from the top 53 bits.
fn to_unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Approximately standard normal from one u64: Irwin–Hall sum of four 16-bit uniforms. Cheap
/// enough to recompute item vectors on every exposure; bounded tails do not matter here.
fn approx_gauss(h: u64) -> f32 {
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    (s as f32 / 65_536.0 - 2.0) * 1.732_050_8
}

fn gauss<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    f64::from(approx_gauss(rng.random::<u64>()))
}

/// Exponential with mean 1.
fn exp1<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -(1.0 - rng.random::<f64>()).ln()
}

/// A splitmix64 stream for per-entity attributes: portable and independent of `rand` versions.
struct Hrng(u64);

impl Hrng {
    fn new(seed: u64, stream: u64, a: u64) -> Self {
        Self(hash(seed, stream, a))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    fn unit(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }

    fn gauss(&mut self) -> f64 {
        f64::from(approx_gauss(self.next_u64()))
    }
}

/// Inverse-CDF draw over a cumulative weight array; zero-weight entries are never chosen.
fn cum_draw(cum: &[f64], u: f64) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    cum.partition_point(|&x| x <= u * total)
        .min(cum.len().saturating_sub(1))
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

fn weighted<'a, R: Rng + ?Sized>(rng: &mut R, table: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = table.iter().map(|&(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for &(name, w) in table {
        if x < w {
            return name;
        }
        x -= w;
    }
    table.last().map_or("", |&(name, _)| name)
}

fn normalize(v: &mut [f32; DIM]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in v.iter_mut() {
            *x /= n;
        }
    }
}

fn dot(a: &[f32; DIM], b: &[f32; DIM]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn category_name(c: usize) -> String {
    let name = CATEGORY_NAMES[c % CATEGORY_NAMES.len()];
    let round = c / CATEGORY_NAMES.len();
    if round == 0 {
        name.to_string()
    } else {
        format!("{name} {}", round + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Items

/// Everything about an item that the simulation needs, derived from hash(seed, index).
#[derive(Debug, Clone, Copy)]
struct ItemCore {
    creator: u32,
    cat: u32,
    cat2: Option<u32>,
    created_at: Millis,
    /// Appeal beyond taste match, in logit units.
    quality: f32,
    /// Orders items by popularity within their category (higher is more popular).
    popkey: f32,
    duration_s: u32,
    hidden: bool,
    mature: bool,
}

/// What exists before any item is placed: the taste space and the category and creator shares.
struct Base {
    seed: u64,
    n_cats: usize,
    n_creators: usize,
    start_ms: Millis,
    end_ms: Millis,
    centroids: Vec<[f32; DIM]>,
    share: Vec<f64>,
    share_cum: Vec<f64>,
    cat_names: Vec<String>,
    vocab: Vec<[&'static str; VOCAB]>,
}

impl Base {
    fn new(p: &GenerateParams) -> Self {
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
            centroids,
            share,
            share_cum,
            cat_names: (0..n_cats).map(category_name).collect(),
            vocab,
        }
    }

    fn draw_share(&self, u: f64) -> u32 {
        cum_draw(&self.share_cum, u) as u32
    }

    /// The category a creator mostly works in.
    fn creator_cat(&self, k: u32) -> u32 {
        self.draw_share(to_unit(hash(self.seed, S_CREATOR, u64::from(k))))
    }

    fn item_core(&self, i: u32) -> ItemCore {
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

    fn item_vec(&self, i: u32, core: &ItemCore) -> [f32; DIM] {
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

    fn make_item(&self, i: u32, core: &ItemCore) -> Item {
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
    fn activity(&self, u: u32) -> f64 {
        let mut h = Hrng::new(self.seed, S_ACTIVITY, u64::from(u));
        if h.unit() < COLD_SHARE {
            return 0.0;
        }
        (1.0 - h.unit()).powf(-1.0 / 1.5).min(100.0)
    }
}

/// Index arrays over the placed items: per-category popularity order and per-creator lists.
struct Catalog {
    /// Items grouped by primary category, most popular first within each group.
    cat_items: Vec<u32>,
    cat_off: Vec<usize>,
    /// harm[r] = Σ_{k ≤ r} 1/(k+1)^ITEM_ZIPF: the cumulative popularity weight shared by every
    /// category, since weights depend on rank only.
    harm: Vec<f64>,
    /// Items grouped by creator, in index order (a creator's "series").
    creator_items: Vec<u32>,
    creator_off: Vec<usize>,
    /// Category shares with empty categories zeroed.
    live_cum: Vec<f64>,
}

impl Catalog {
    fn build(base: &Base, cat_of: &[u32], creator_of: &[u32], popkey: &[f32]) -> Self {
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

    fn cat_slice(&self, c: u32) -> &[u32] {
        let c = c as usize;
        &self.cat_items[self.cat_off[c]..self.cat_off[c + 1]]
    }

    fn is_live(&self, c: usize) -> bool {
        self.cat_off[c + 1] > self.cat_off[c]
    }

    /// An item of category `c` drawn by Zipf popularity.
    fn pop_draw(&self, c: u32, u: f64) -> Option<u32> {
        let items = self.cat_slice(c);
        let n = items.len();
        if n == 0 {
            return None;
        }
        let r = cum_draw(&self.harm[..n], u);
        items.get(r).copied()
    }

    /// An item of category `c` drawn uniformly.
    fn uniform_in_cat(&self, c: u32, u: f64) -> Option<u32> {
        let items = self.cat_slice(c);
        let r = ((u * items.len() as f64) as usize).min(items.len().saturating_sub(1));
        items.get(r).copied()
    }

    fn creator_slice(&self, k: u32) -> &[u32] {
        let k = k as usize;
        &self.creator_items[self.creator_off[k]..self.creator_off[k + 1]]
    }
}

// ---------------------------------------------------------------------------------------------
// Users and events

/// A user's hidden preferences, derived from hash(seed, user).
struct Profile {
    /// Favourite categories with weights summing to 1.
    favs: Vec<(u32, f64)>,
    taste: [f32; DIM],
    /// Creator indexes followed at the start.
    follows: Vec<u32>,
    locale: &'static str,
    age_band: &'static str,
    /// Hour of day (UTC) around which the user's sessions start.
    pref_hour: f64,
}

/// One event, compact until materialized: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Ev {
    ts: Millis,
    user: u32,
    /// Item index, or creator index for `follow`.
    target: u32,
    value: f32,
    /// Negative when absent.
    fraction: f32,
    kind: EventKind,
}

impl Ev {
    fn materialize(&self) -> Event {
        let target = if self.kind == EventKind::Follow {
            Target::Creator(format!("c{}", self.target))
        } else {
            Target::Item(format!("i{}", self.target))
        };
        Event {
            kind: self.kind,
            user_id: format!("u{}", self.user),
            target,
            value: self.value,
            fraction: (self.fraction >= 0.0).then_some(self.fraction),
            ts: self.ts,
            request_id: None,
            surface: None,
            position: None,
            propensity: None,
            experiment: None,
        }
    }
}

/// The mutable side of one user's simulation.
struct UserState {
    user: u32,
    budget: usize,
    end_ms: Millis,
    /// The time of the next event; only ever moves forward.
    t: Millis,
    /// Multiplies every time step: below 1 for users with more events than the period holds at
    /// a human pace, so that their events still fit.
    pace: f64,
    out: Vec<Ev>,
    followed: Vec<u32>,
    recent: VecDeque<u32>,
}

impl UserState {
    fn full(&self) -> bool {
        self.out.len() >= self.budget || self.t >= self.end_ms
    }

    fn emit(&mut self, kind: EventKind, target: u32, value: f32, fraction: Option<f32>) {
        if self.full() {
            return;
        }
        self.out.push(Ev {
            ts: self.t,
            user: self.user,
            target,
            value,
            fraction: fraction.unwrap_or(-1.0),
            kind,
        });
        // Strictly increasing timestamps per user make (ts, user) a unique sort key.
        self.t += 1;
    }

    fn advance(&mut self, ms: f64) {
        self.t += (ms * self.pace) as i64;
    }

    fn wait<R: Rng + ?Sized>(&mut self, rng: &mut R, min_ms: i64, spread_ms: i64) {
        let ms = min_ms + rng.random_range(0..spread_ms.max(1));
        self.advance(ms as f64);
    }
}

struct Sim<'a> {
    base: &'a Base,
    cat: &'a Catalog,
}

impl Sim<'_> {
    fn profile(&self, u: u32) -> Profile {
        let b = self.base;
        let mut rng = SmallRng::seed_from_u64(hash(b.seed, S_USER, u64::from(u)));
        let r: f64 = rng.random();
        let want = if r < 0.4 {
            1
        } else if r < 0.8 {
            2
        } else {
            3
        };
        let mut favs: Vec<(u32, f64)> = Vec::with_capacity(want);
        for _ in 0..want * 8 {
            if favs.len() == want {
                break;
            }
            let c = cum_draw(&self.cat.live_cum, rng.random()) as u32;
            if favs.iter().all(|&(f, _)| f != c) {
                // The first favourite dominates.
                let lead = if favs.is_empty() { 2.0 } else { 1.0 };
                favs.push((c, lead * (0.5 + rng.random::<f64>())));
            }
        }
        let total: f64 = favs.iter().map(|&(_, w)| w).sum();
        for f in &mut favs {
            f.1 /= total;
        }
        let mut taste = [0f32; DIM];
        for &(c, w) in &favs {
            for (t, x) in taste.iter_mut().zip(&b.centroids[c as usize]) {
                *t += w as f32 * x;
            }
        }
        for t in &mut taste {
            *t += TASTE_NOISE * gauss(&mut rng) as f32;
        }
        normalize(&mut taste);
        let locale = weighted(&mut rng, &LOCALES);
        let age_band = weighted(&mut rng, &AGE_BANDS);
        let pref_hour = (20.0 + 3.0 * gauss(&mut rng)).rem_euclid(24.0);
        // Follows: creators of popular items in the favourite categories, i.e. mostly creators
        // whose items the user will meet and like.
        let n_follows = if rng.random::<f64>() < 0.35 {
            0
        } else {
            1 + rng.random_range(0..5usize)
        };
        let mut follows = Vec::with_capacity(n_follows);
        for _ in 0..n_follows {
            let c = pick_fav(&mut rng, &favs);
            if let Some(i) = self.cat.pop_draw(c, rng.random()) {
                let k = b.item_core(i).creator;
                if !follows.contains(&k) {
                    follows.push(k);
                }
            }
        }
        Profile {
            favs,
            taste,
            follows,
            locale,
            age_band,
            pref_hour,
        }
    }

    fn make_user(&self, u: u32, prof: &Profile) -> User {
        let mut attributes = Map::new();
        attributes.insert("locale".to_string(), Value::from(prof.locale));
        attributes.insert("age_band".to_string(), Value::from(prof.age_band));
        User {
            id: format!("u{u}"),
            attributes,
            follows: prof.follows.iter().map(|k| format!("c{k}")).collect(),
        }
    }

    /// All events of one user, in time order, at most `budget` of them.
    fn simulate(&self, u: u32, budget: usize) -> Vec<Ev> {
        if budget == 0 {
            return Vec::new();
        }
        let b = self.base;
        let prof = self.profile(u);
        let mut rng = SmallRng::seed_from_u64(hash(b.seed, S_SIM, u64::from(u)));
        let taste_cum = cumulative((0..b.n_cats).map(|c| {
            if self.cat.is_live(c) {
                let d = f64::from(dot(&prof.taste, &b.centroids[c]));
                (CATEGORY_BETA * (d - 1.0)).exp()
            } else {
                0.0
            }
        }));
        // About four minutes per event at a human pace; compress time when that would fill
        // more than 40% of the period.
        let needed = budget as f64 * 4.0 * MINUTE_MS as f64;
        let pace = (0.4 * (b.end_ms - b.start_ms) as f64 / needed).min(1.0);
        let mut st = UserState {
            user: u,
            budget,
            end_ms: b.end_ms,
            t: 0,
            pace,
            out: Vec::with_capacity(budget),
            followed: prof.follows.clone(),
            recent: VecDeque::with_capacity(RECENT),
        };
        let starts = self.session_starts(&mut rng, &prof, budget);
        // Guards against users whose picks keep failing (e.g. a catalog of future items).
        let mut exposures_left = budget * 8 + 64;
        for (s, &start) in starts.iter().enumerate() {
            let remaining = budget - st.out.len();
            if remaining == 0 || exposures_left == 0 || st.t >= b.end_ms {
                break;
            }
            let sessions_left = starts.len() - s;
            let target = if sessions_left == 1 {
                remaining
            } else {
                let share = remaining as f64 / sessions_left as f64;
                ((share * (0.4 + 1.2 * rng.random::<f64>())).ceil() as usize).clamp(1, remaining)
            };
            let goal = st.out.len() + target;
            // Sessions never overlap: a planned start inside the previous session moves past it.
            let pause = (MINUTE_MS + rng.random_range(0..10 * MINUTE_MS)) as f64 * pace;
            st.t = start.max(st.t + pause as i64);
            let mut prev: Option<(u32, ItemCore)> = None;
            while st.out.len() < goal && exposures_left > 0 && !st.full() {
                exposures_left -= 1;
                match self.pick(&mut rng, &prof, &taste_cum, &st, prev) {
                    Some((item, core)) => {
                        self.expose(&mut rng, &prof, &mut st, item, &core);
                        if st.recent.len() == RECENT {
                            st.recent.pop_front();
                        }
                        st.recent.push_back(item);
                        prev = Some((item, core));
                    }
                    None => prev = None,
                }
                // Seconds to a few minutes between items.
                st.advance(3_000.0 + exp1(&mut rng) * 40_000.0);
            }
        }
        st.out
    }

    /// Session start times: bursts on random days near the user's usual hour, with follow-up
    /// sessions minutes to hours later.
    fn session_starts(&self, rng: &mut SmallRng, prof: &Profile, budget: usize) -> Vec<Millis> {
        let b = self.base;
        let per_session = EVENTS_PER_SESSION * (0.6 + 0.8 * rng.random::<f64>());
        let n = ((budget as f64 / per_session).round() as usize).clamp(1, budget);
        let period = b.end_ms - b.start_ms;
        // Some light users join during the period instead of being there from its start.
        let first = if budget < 200 && rng.random::<f64>() < 0.3 {
            b.start_ms + (rng.random::<f64>() * 0.8 * period as f64) as i64
        } else {
            b.start_ms
        };
        // Keep starts away from the very end so sessions are not cut off.
        let last = (b.end_ms - 2 * HOUR_MS).max(first);
        let span = (b.end_ms - first).max(1);
        let mut starts = Vec::with_capacity(n);
        let mut anchor = first;
        for s in 0..n {
            if s == 0 || rng.random::<f64>() < 0.35 {
                let at = first + rng.random_range(0..span);
                let day0 = at - at.rem_euclid(DAY_MS);
                let hour = (prof.pref_hour + 2.0 * gauss(rng)).rem_euclid(24.0);
                anchor = day0 + (hour * HOUR_MS as f64) as i64;
            } else {
                anchor += 5 * MINUTE_MS + (exp1(rng) * 90.0 * MINUTE_MS as f64) as i64;
            }
            starts.push(anchor.clamp(first, last));
        }
        starts.sort_unstable();
        starts
    }

    /// The next item to show: a proposal, then fresh picks if it is not yet released or was
    /// just seen. Gives up after a few tries (the exposure is then lost).
    fn pick(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        taste_cum: &[f64],
        st: &UserState,
        prev: Option<(u32, ItemCore)>,
    ) -> Option<(u32, ItemCore)> {
        for attempt in 0..4 {
            let cand = if attempt == 0 {
                self.propose(rng, prof, taste_cum, &st.followed, prev)
            } else {
                self.fresh(rng, prof, taste_cum)
            };
            let Some(i) = cand else { continue };
            let core = self.base.item_core(i);
            if core.created_at > st.t {
                continue;
            }
            // The last attempt accepts a repeat: people do rewatch.
            if attempt < 3 && st.recent.contains(&i) {
                continue;
            }
            return Some((i, core));
        }
        None
    }

    fn propose(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        taste_cum: &[f64],
        followed: &[u32],
        prev: Option<(u32, ItemCore)>,
    ) -> Option<u32> {
        if let Some((p, core)) = prev
            && rng.random::<f64>() < P_CONTINUE
        {
            return self.continuation(rng, p, &core);
        }
        if !followed.is_empty() && rng.random::<f64>() < P_FOLLOWED {
            let k = followed[rng.random_range(0..followed.len())];
            let items = self.cat.creator_slice(k);
            if !items.is_empty() {
                return Some(items[rng.random_range(0..items.len())]);
            }
        }
        self.fresh(rng, prof, taste_cum)
    }

    /// What follows item `p` in a session. The related items are fixed per item (the same for
    /// every user), which is the item-to-item signal sequence models can learn.
    fn continuation(&self, rng: &mut SmallRng, p: u32, core: &ItemCore) -> Option<u32> {
        let r: f64 = rng.random();
        if r < 0.5 {
            let k = if rng.random::<f64>() < 0.7 {
                0
            } else {
                1 + rng.random_range(0..2u64)
            };
            let u = to_unit(hash(self.base.seed, S_RELATED, u64::from(p) * 4 + k));
            self.cat.uniform_in_cat(core.cat, u)
        } else if r < 0.75 {
            let items = self.cat.creator_slice(core.creator);
            if items.is_empty() {
                return None;
            }
            if rng.random::<f64>() < 0.6 {
                // The creator's next item, like the next episode of a series.
                let pos = items.binary_search(&p).unwrap_or(0);
                Some(items[(pos + 1) % items.len()])
            } else {
                Some(items[rng.random_range(0..items.len())])
            }
        } else {
            self.cat.pop_draw(core.cat, rng.random())
        }
    }

    /// A fresh pick: a category by favourites or taste, then an item by popularity.
    fn fresh(&self, rng: &mut SmallRng, prof: &Profile, taste_cum: &[f64]) -> Option<u32> {
        let c = if rng.random::<f64>() < P_FAVOURITE {
            pick_fav(rng, &prof.favs)
        } else {
            cum_draw(taste_cum, rng.random()) as u32
        };
        self.cat.pop_draw(c, rng.random())
    }

    /// Turns one exposure into events according to the user's affinity for the item.
    fn expose(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        st: &mut UserState,
        item: u32,
        core: &ItemCore,
    ) {
        let v = self.base.item_vec(item, core);
        let follows_creator = st.followed.contains(&core.creator);
        let logit = 5.0 * f64::from(dot(&prof.taste, &v)) - 2.0
            + f64::from(core.quality)
            + if follows_creator { 0.5 } else { 0.0 };
        let p = 1.0 / (1.0 + (-logit).exp());

        if rng.random::<f64>() < 0.35 {
            st.emit(EventKind::Impression, item, 1.0, None);
            st.wait(rng, 500, 2_500);
        }
        if rng.random::<f64>() < 0.08 + 0.84 * p {
            let kind = if rng.random::<f64>() < 0.6 {
                EventKind::Click
            } else {
                EventKind::View
            };
            st.emit(kind, item, 1.0, None);
            st.wait(rng, 1_000, 4_000);
            if p > 0.4 && rng.random::<f64>() < p {
                // Better matches are watched further.
                let fraction = (0.1 + 0.8 * p + 0.15 * gauss(rng)).clamp(0.02, 1.0);
                let fraction = (fraction * 1000.0).round() / 1000.0;
                let secs = (fraction * f64::from(core.duration_s)).round().max(1.0);
                // Logged when the watching ends.
                st.advance(secs * 1000.0);
                st.emit(EventKind::Watch, item, secs as f32, Some(fraction as f32));
            }
            if p > 0.6 && rng.random::<f64>() < (p - 0.45) * 1.5 {
                st.wait(rng, 500, 3_000);
                st.emit(EventKind::Like, item, 1.0, None);
            }
            if rng.random::<f64>() < 0.03 * p {
                st.wait(rng, 1_000, 5_000);
                st.emit(EventKind::Share, item, 1.0, None);
            }
            if rng.random::<f64>() < 0.008 * p {
                st.wait(rng, 2_000, 20_000);
                st.emit(EventKind::Purchase, item, 1.0, None);
            }
            if p > 0.7 && !follows_creator && rng.random::<f64>() < 0.015 {
                st.wait(rng, 500, 3_000);
                st.emit(EventKind::Follow, core.creator, 1.0, None);
                st.followed.push(core.creator);
            }
        } else if p < 0.4 && rng.random::<f64>() < 0.55 {
            st.wait(rng, 300, 2_000);
            st.emit(EventKind::Skip, item, 1.0, None);
        } else if rng.random::<f64>() < 0.02 {
            st.wait(rng, 500, 2_000);
            st.emit(EventKind::Hide, item, 1.0, None);
        }
    }
}

fn pick_fav<R: Rng + ?Sized>(rng: &mut R, favs: &[(u32, f64)]) -> u32 {
    let mut x = rng.random::<f64>();
    for &(c, w) in favs {
        if x < w {
            return c;
        }
        x -= w;
    }
    favs.last().map_or(0, |&(c, _)| c)
}

// ---------------------------------------------------------------------------------------------
// JSONL output

/// Writes a world as `items.jsonl`, `users.jsonl` and `events.jsonl` (events in the
/// `POST /v1/events` form), the layout `cascade import --format jsonl` reads.
pub struct JsonlDirSink {
    dir: PathBuf,
    items: BufWriter<File>,
    users: BufWriter<File>,
    events: BufWriter<File>,
}

impl JsonlDirSink {
    /// Creates `dir` if needed and truncates the three files.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<BufWriter<File>> {
            let path = dir.join(name);
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            Ok(BufWriter::with_capacity(1 << 20, f))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            items: open("items.jsonl")?,
            users: open("users.jsonl")?,
            events: open("events.jsonl")?,
        })
    }

    /// Flushes the files; errors that dropping would swallow surface here.
    pub fn finish(mut self) -> anyhow::Result<()> {
        for (name, w) in [
            ("items.jsonl", &mut self.items),
            ("users.jsonl", &mut self.users),
            ("events.jsonl", &mut self.events),
        ] {
            w.flush()
                .with_context(|| format!("writing {}", self.dir.join(name).display()))?;
        }
        Ok(())
    }
}

fn write_line<T: Serialize>(w: &mut BufWriter<File>, v: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *w, v)?;
    w.write_all(b"\n")?;
    Ok(())
}

impl WorldSink for JsonlDirSink {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        for item in &batch {
            write_line(&mut self.items, item).context("writing items.jsonl")?;
        }
        Ok(())
    }

    fn users(&mut self, batch: Vec<User>) -> anyhow::Result<()> {
        for user in &batch {
            write_line(&mut self.users, user).context("writing users.jsonl")?;
        }
        Ok(())
    }

    fn events(&mut self, batch: Vec<Event>) -> anyhow::Result<()> {
        for e in batch {
            write_line(&mut self.events, &event_to_input(e)).context("writing events.jsonl")?;
        }
        Ok(())
    }
}

/// The API form of a stored event; `EventIn::into_event` turns it back into the same `Event`.
pub fn event_to_input(e: Event) -> EventIn {
    let (item_id, creator_id) = match e.target {
        Target::Item(i) => (Some(i), None),
        Target::Creator(c) => (None, Some(c)),
    };
    EventIn {
        kind: e.kind,
        user_id: e.user_id,
        item_id,
        creator_id,
        value: Some(exact_f64(e.value)),
        fraction: e.fraction.map(exact_f64),
        timestamp: Some(TimeInput(e.ts)),
        request_id: e.request_id,
        surface: e.surface,
        position: e.position,
        propensity: e.propensity.map(exact_f64),
        experiment: e.experiment,
    }
}

/// Widens an f32 for JSON without its binary noise (0.1 would print as 0.10000000149011612):
/// the shortest decimal form, kept only if it reads back to the very same f32.
fn exact_f64(v: f32) -> f64 {
    if v.fract() == 0.0 || !v.is_finite() {
        return f64::from(v);
    }
    match v.to_string().parse::<f64>() {
        Ok(d) if d as f32 == v => d,
        _ => f64::from(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::VecSink;
    use std::collections::{HashMap, HashSet};

    const END: Millis = 1_700_000_000_000;

    fn small() -> GenerateParams {
        GenerateParams::new(2_000, 300, 20_000, 42, END)
    }

    fn run(p: &GenerateParams) -> VecSink {
        let mut sink = VecSink::default();
        let counts = generate(p, &mut sink, false).expect("generate");
        assert_eq!(counts.items as usize, sink.items.len());
        assert_eq!(counts.users as usize, sink.users.len());
        assert_eq!(counts.events as usize, sink.events.len());
        sink
    }

    #[test]
    fn same_seed_same_world() {
        let p = small();
        let a = run(&p);
        let b = run(&p);
        assert_eq!(a.items, b.items);
        assert_eq!(a.users, b.users);
        assert_eq!(a.events, b.events);
        let c = run(&GenerateParams {
            seed: 43,
            ..small()
        });
        assert_ne!(a.events, c.events);
    }

    #[test]
    fn counts_references_and_times() {
        let p = small();
        let w = run(&p);
        assert_eq!(w.items.len(), p.items);
        assert_eq!(w.users.len(), p.users);
        let n = w.events.len() as f64;
        let want = p.events as f64;
        assert!(
            (n - want).abs() <= 0.1 * want,
            "{n} events for {want} asked"
        );

        let items: HashSet<&str> = w.items.iter().map(|i| i.id.as_str()).collect();
        let users: HashSet<&str> = w.users.iter().map(|u| u.id.as_str()).collect();
        let creators: HashSet<&str> = w
            .items
            .iter()
            .filter_map(|i| i.creator_id.as_deref())
            .collect();
        let start = p.end_ms - i64::from(p.days) * DAY_MS;
        let mut active = HashSet::new();
        let mut last = i64::MIN;
        for e in &w.events {
            assert!(
                users.contains(e.user_id.as_str()),
                "unknown user {}",
                e.user_id
            );
            match &e.target {
                Target::Item(i) => assert!(items.contains(i.as_str()), "unknown item {i}"),
                Target::Creator(c) => {
                    assert_eq!(e.kind, EventKind::Follow);
                    assert!(creators.contains(c.as_str()), "unknown creator {c}");
                }
            }
            assert!(e.ts >= start && e.ts < p.end_ms, "ts {} out of range", e.ts);
            assert!(e.ts >= last, "events not sorted by time");
            last = e.ts;
            if let Some(f) = e.fraction {
                assert!((0.0..=1.0).contains(&f));
            }
            active.insert(e.user_id.as_str());
        }
        for u in &w.users {
            for c in &u.follows {
                assert!(
                    creators.contains(c.as_str()),
                    "user follows unknown creator {c}"
                );
            }
        }
        assert!(active.len() < users.len(), "expected some cold-start users");
        for kind in [
            EventKind::Click,
            EventKind::Like,
            EventKind::Watch,
            EventKind::Skip,
        ] {
            assert!(
                w.events.iter().any(|e| e.kind == kind),
                "no {} events",
                kind.as_str()
            );
        }
        // Every event validates through the API form.
        for e in w.events.iter().take(2_000) {
            let back = event_to_input(e.clone())
                .into_event(e.ts)
                .expect("valid event");
            assert_eq!(&back, e);
        }
        for item in &w.items {
            item.clone().validate(0).expect("valid item");
        }
    }

    #[test]
    fn engagement_concentrates_in_favourite_categories() {
        let p = small();
        let w = run(&p);
        let cat_of: HashMap<&str, &str> = w
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.categories[0].as_str()))
            .collect();
        let mut per_user: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
        for e in &w.events {
            if !matches!(e.kind, EventKind::Click | EventKind::Like) {
                continue;
            }
            if let Target::Item(i) = &e.target {
                let c = cat_of[i.as_str()];
                *per_user
                    .entry(e.user_id.as_str())
                    .or_default()
                    .entry(c)
                    .or_default() += 1;
            }
        }
        let shares: Vec<f64> = per_user
            .values()
            .filter_map(|m| {
                let total: usize = m.values().sum();
                let top = m.values().copied().max().unwrap_or(0);
                (total >= 10).then(|| top as f64 / total as f64)
            })
            .collect();
        assert!(
            shares.len() >= 20,
            "only {} users with 10+ clicks/likes",
            shares.len()
        );
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        let baseline = 2.0 / p.categories as f64;
        assert!(
            mean > baseline,
            "top-category share {mean:.3} not above {baseline:.3}"
        );
    }

    #[test]
    fn sessions_repeat_item_transitions() {
        // The fixed related items make some (a → b) transitions recur across users.
        let w = run(&small());
        let mut last: HashMap<&str, &str> = HashMap::new();
        let mut pairs: HashMap<(&str, &str), HashSet<&str>> = HashMap::new();
        for e in &w.events {
            if e.kind != EventKind::Click && e.kind != EventKind::View {
                continue;
            }
            let Target::Item(i) = &e.target else { continue };
            if let Some(prev) = last.insert(e.user_id.as_str(), i.as_str())
                && prev != i.as_str()
            {
                pairs
                    .entry((prev, i.as_str()))
                    .or_default()
                    .insert(e.user_id.as_str());
            }
        }
        let shared = pairs.values().filter(|users| users.len() >= 2).count();
        assert!(shared >= 20, "only {shared} transitions seen by 2+ users");
    }

    #[test]
    fn bad_params_are_rejected() {
        let mut p = small();
        p.days = 0;
        assert!(generate(&p, &mut VecSink::default(), false).is_err());
        let p = GenerateParams::new(0, 10, 100, 1, END);
        assert!(generate(&p, &mut VecSink::default(), false).is_err());
        let p = GenerateParams::new(10, 10, 0, 1, END);
        let w = run(&p);
        assert_eq!(w.items.len(), 10);
        assert!(w.events.is_empty());
    }

    #[test]
    fn category_names_cycle() {
        assert_eq!(category_name(0), "Comedy");
        assert_eq!(category_name(24), "Comedy 2");
        assert_eq!(category_name(25), "Drama 2");
    }

    #[test]
    fn exact_f64_round_trips() {
        for v in [0.1f32, 0.123, 1.0, 37.0, 0.999, 1e-7, 12345.679] {
            let d = exact_f64(v);
            assert_eq!(d as f32, v);
        }
        assert_eq!(exact_f64(0.1), 0.1f64);
    }
}
