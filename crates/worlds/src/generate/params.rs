//! The world's fixed shape (taste dimension, Zipf exponents, probabilities, vocabularies,
//! hash streams) and the parameters a caller chooses.

use cascade_core::Millis;

/// Dimension of the latent taste space.
pub(crate) const DIM: usize = 16;
/// Records per sink call.
pub(crate) const BATCH: usize = 10_000;
/// Users simulated per parallel chunk: bounds the per-user buffers alive at once.
pub(crate) const USER_CHUNK: usize = 4_096;
pub(crate) const DAY_MS: i64 = 86_400_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Average catalog size of a creator.
pub(crate) const ITEMS_PER_CREATOR: usize = 25;
/// Tags in each category's vocabulary.
pub(crate) const VOCAB: usize = 8;
/// Zipf exponent of item popularity within a category.
pub(crate) const ITEM_ZIPF: f64 = 1.0;
/// Zipf exponent of category sizes.
pub(crate) const CATEGORY_ZIPF: f64 = 0.8;
/// Share of users who never act (cold-start users).
pub(crate) const COLD_SHARE: f64 = 0.1;
/// Mean events per session, before per-user variation.
pub(crate) const EVENTS_PER_SESSION: f64 = 12.0;
/// Per-dimension noise of item vectors around their centroid.
pub(crate) const ITEM_NOISE: f32 = 0.15;
/// Per-dimension noise of user tastes around their favourites' mixture.
pub(crate) const TASTE_NOISE: f32 = 0.15;
/// Sharpness of the category softmax over taste·centroid.
pub(crate) const CATEGORY_BETA: f64 = 6.0;
/// Probability that a session's next item continues from the previous one.
pub(crate) const P_CONTINUE: f64 = 0.5;
/// Probability of a fresh pick coming from a followed creator (when the user follows any).
pub(crate) const P_FOLLOWED: f64 = 0.1;
/// Probability that a fresh pick starts from a favourite category rather than the taste softmax.
pub(crate) const P_FAVOURITE: f64 = 0.75;
/// Recent items a user avoids being shown again.
pub(crate) const RECENT: usize = 32;

// Independent hash streams, so that adding a draw to one attribute never shifts another.
pub(crate) const S_CENTROID: u64 = 1;
pub(crate) const S_CREATOR: u64 = 2;
pub(crate) const S_ITEM: u64 = 3;
pub(crate) const S_VEC: u64 = 4;
pub(crate) const S_TEXT: u64 = 5;
pub(crate) const S_VOCAB: u64 = 6;
pub(crate) const S_RELATED: u64 = 7;
pub(crate) const S_ACTIVITY: u64 = 8;
pub(crate) const S_BUDGET: u64 = 9;
pub(crate) const S_USER: u64 = 10;
pub(crate) const S_SIM: u64 = 11;
pub(crate) const S_ARRIVAL: u64 = 12;

pub(crate) const CATEGORY_NAMES: [&str; 24] = [
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

pub(crate) const ADJECTIVES: [&str; 32] = [
    "Quiet", "Golden", "Hidden", "Broken", "Electric", "Silent", "Wild", "Lost", "Bright",
    "Midnight", "Secret", "Endless", "Little", "Crimson", "Frozen", "Brave", "Hollow", "Lucky",
    "Ancient", "Restless", "Gentle", "Burning", "Curious", "Distant", "Final", "Honest", "Iron",
    "Lonely", "Modern", "Northern", "Simple", "Velvet",
];

pub(crate) const NOUNS: [&str; 32] = [
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

pub(crate) const TAG_POOL: [&str; 48] = [
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

pub(crate) const LOCALES: [(&str, f64); 8] = [
    ("en-US", 0.35),
    ("en-GB", 0.10),
    ("de-DE", 0.10),
    ("fr-FR", 0.08),
    ("es-ES", 0.10),
    ("pt-BR", 0.10),
    ("ja-JP", 0.07),
    ("hi-IN", 0.10),
];

pub(crate) const AGE_BANDS: [(&str, f64); 6] = [
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
    /// When set, each user arrives at a random time and stays this many days (arrivals
    /// spread so that the active population is the same all period: a product with
    /// sign-ups and churn, whose account ages and lifetime counts are stationary). Unset
    /// (the default), most users are there from the start and stay to the end.
    pub lifetime_days: Option<u32>,
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
            lifetime_days: None,
        }
    }

    pub(crate) fn start_ms(&self) -> Millis {
        self.end_ms - i64::from(self.days) * DAY_MS
    }
}
