//! The declared feature schema of a surface: every column's name, default and meaning, and
//! the lookups hydrators bind their columns with. Training and serving share it by name.

use cascade_features::{FeatureDef, FeatureSchema};
use cascade_pipeline::{ComponentError, MAX_SOURCES};

pub const ITEM_POPULARITY: &str = "item_popularity";
pub const ITEM_POPULARITY_SHORT: &str = "item_popularity_short";
pub const ITEM_TREND: &str = "item_trend";
pub const ITEM_ENGAGEMENTS: &str = "item_engagements";
pub const ITEM_IMPRESSIONS: &str = "item_impressions";
pub const ITEM_CTR: &str = "item_ctr";
pub const ITEM_LIKE_RATE: &str = "item_like_rate";
pub const ITEM_SKIP_RATE: &str = "item_skip_rate";
pub const ITEM_WATCH_COMPLETION: &str = "item_watch_completion";
pub const ITEM_AGE_DAYS: &str = "item_age_days";
pub const ITEM_CATEGORY: &str = "item_category";
pub const ITEM_CREATOR: &str = "item_creator";
pub const USER_INTERACTIONS: &str = "user_interactions";
pub const USER_EVENTS_1H: &str = "user_events_1h";
pub const USER_EVENTS_1D: &str = "user_events_1d";
pub const USER_EVENTS_7D: &str = "user_events_7d";
pub const USER_EVENTS_30D: &str = "user_events_30d";
pub const USER_SKIP_SHARE: &str = "user_skip_share";
pub const USER_CLICKS_7D: &str = "user_clicks_7d";
pub const USER_LIKES_7D: &str = "user_likes_7d";
pub const USER_WATCHES_7D: &str = "user_watches_7d";
pub const USER_SKIPS_7D: &str = "user_skips_7d";
pub const USER_HOURS_SINCE_LAST: &str = "user_hours_since_last";
pub const USER_ACCOUNT_DAYS: &str = "user_account_days";
pub const USER_CATEGORY_AFFINITY: &str = "user_category_affinity";
pub const USER_CREATOR_AFFINITY: &str = "user_creator_affinity";
pub const USER_FOLLOWS_CREATOR: &str = "user_follows_creator";
pub const USER_ITEM_DOT: &str = "user_item_dot";
pub const ITEM_LAST_SIMILARITY: &str = "item_last_similarity";
pub const ITEM_RECENT_SIMILARITY: &str = "item_recent_similarity";
pub const COVIS_LAST: &str = "covis_last";
pub const COVIS_RECENT: &str = "covis_recent";
pub const N_SOURCES: &str = "n_sources";
pub const HOUR_OF_DAY: &str = "hour_of_day";
pub const DAY_OF_WEEK: &str = "day_of_week";
pub const DEVICE: &str = "device";
pub const SURFACE: &str = "surface";

/// Rank given to a candidate a source did not produce.
pub const ABSENT_RANK: f32 = 1000.0;
/// Recent items whose embeddings and co-visitation lists describe the session.
pub(crate) const RECENT_SEEDS: usize = 5;

/// Column names of a source's three retrieval features.
pub fn source_features(source: &str) -> [String; 3] {
    [
        format!("src_{source}_score"),
        format!("src_{source}_norm"),
        format!("src_{source}_rank"),
    ]
}

/// The declared features of a surface whose candidate sources are `sources` (in slot order):
/// name and default of each column. Training and serving both build it from the surface.
pub fn schema_for(sources: &[String]) -> FeatureSchema {
    let mut defs = Vec::new();
    for s in sources.iter().take(MAX_SOURCES) {
        let [score, norm, rank] = source_features(s);
        defs.push(FeatureDef::new(score, 0.0));
        defs.push(FeatureDef::new(norm, 0.0));
        defs.push(FeatureDef::new(rank, ABSENT_RANK));
    }
    let fixed: &[(&str, f32)] = &[
        (N_SOURCES, 0.0),
        (ITEM_POPULARITY, 0.0),
        (ITEM_POPULARITY_SHORT, 0.0),
        (ITEM_TREND, 0.0),
        (ITEM_ENGAGEMENTS, 0.0),
        (ITEM_IMPRESSIONS, 0.0),
        (ITEM_CTR, 0.0),
        (ITEM_LIKE_RATE, 0.0),
        (ITEM_SKIP_RATE, 0.0),
        (ITEM_WATCH_COMPLETION, 0.0),
        (ITEM_AGE_DAYS, 30.0),
        (ITEM_CATEGORY, -1.0),
        (ITEM_CREATOR, -1.0),
        (USER_INTERACTIONS, 0.0),
        (USER_EVENTS_1H, 0.0),
        (USER_EVENTS_1D, 0.0),
        (USER_EVENTS_7D, 0.0),
        (USER_EVENTS_30D, 0.0),
        (USER_SKIP_SHARE, 0.0),
        (USER_CLICKS_7D, 0.0),
        (USER_LIKES_7D, 0.0),
        (USER_WATCHES_7D, 0.0),
        (USER_SKIPS_7D, 0.0),
        (USER_HOURS_SINCE_LAST, -1.0),
        (USER_ACCOUNT_DAYS, 0.0),
        (USER_CATEGORY_AFFINITY, 0.0),
        (USER_CREATOR_AFFINITY, 0.0),
        (USER_FOLLOWS_CREATOR, 0.0),
        (USER_ITEM_DOT, 0.0),
        (ITEM_LAST_SIMILARITY, 0.0),
        (ITEM_RECENT_SIMILARITY, 0.0),
        (COVIS_LAST, 0.0),
        (COVIS_RECENT, 0.0),
        (HOUR_OF_DAY, -1.0),
        (DAY_OF_WEEK, -1.0),
        (DEVICE, -1.0),
        (SURFACE, -1.0),
    ];
    defs.extend(fixed.iter().map(|&(n, d)| FeatureDef::new(n, d)));
    FeatureSchema::new(defs)
}

/// The default surfaces' sources, in slot order.
pub const DEFAULT_SOURCES: [&str; 7] = [
    "similar",
    "embedding",
    "popular",
    "editorial",
    "trending",
    "follows",
    "fresh",
];

/// The schema of a surface with the default sources (tests and tools).
pub fn default_schema() -> FeatureSchema {
    schema_for(&DEFAULT_SOURCES.map(String::from))
}

/// The columns of `names`, in order.
pub(crate) fn columns<const N: usize>(
    schema: &FeatureSchema,
    names: [&str; N],
) -> Result<[usize; N], ComponentError> {
    let mut cols = [0; N];
    for (c, n) in cols.iter_mut().zip(names) {
        *c = column(schema, n)?;
    }
    Ok(cols)
}

pub(crate) fn column(schema: &FeatureSchema, name: &str) -> Result<usize, ComponentError> {
    schema
        .index(name)
        .ok_or_else(|| ComponentError::Failed(format!("feature `{name}` is not in the schema")))
}

/// A small stable code for a string-valued context feature (trees split on it as a number).
pub(crate) fn code(s: &str) -> f32 {
    // FNV-1a, folded to 10 bits: stable across processes and releases.
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % 1024) as f32
}
