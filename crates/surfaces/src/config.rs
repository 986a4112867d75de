//! A surface's typed configuration (the `[surfaces.NAME]` tables): its ordered components,
//! their parameters and its budgets, with the validation that names the offending key.

use cascade_pipeline::MAX_SOURCES;
use cascade_policy::ReasonTemplates;
use cascade_ranking::BlendConfig;
use cascade_sources::{EmbeddingConfig, FreshConfig, SimilarConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every configured surface by name.
pub type Surfaces = BTreeMap<String, SurfaceConfig>;

/// The built-in surfaces: `home`, and `feed`, which leans on what is popular now more than
/// on the user's history.
pub fn default_surfaces() -> Surfaces {
    let mut surfaces = BTreeMap::new();
    surfaces.insert("home".to_string(), SurfaceConfig::default());
    let mut feed = SurfaceConfig::default();
    feed.scorer.source_weights.insert("popular".into(), 0.8);
    surfaces.insert("feed".to_string(), feed);
    surfaces
}

/// One surface: its ordered components and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurfaceConfig {
    /// Whole-request deadline.
    pub budget_ms: u64,
    /// Budget of all hydrators together (and of the feature store's answer).
    pub hydrate_ms: u64,
    /// Budget of the heavy ranker's answer; past it the pre-ranker's order stands.
    pub rank_ms: u64,
    /// Candidates the pre-ranker keeps for the heavy ranker.
    pub prerank_keep: usize,
    /// Score the pre-ranker's survivors with the trained GBDT ranker (when one is loaded).
    pub heavy_ranker: bool,
    /// Most merged candidates passed to ranking.
    pub candidate_budget: usize,
    pub sources: Vec<SourceConfig>,
    pub hydrators: Vec<HydratorKind>,
    pub filters: Vec<FilterKind>,
    pub scorer: BlendConfig,
    pub selectors: Vec<SelectorKind>,
    /// Parameters of the `frequency_cap` filter.
    pub frequency_cap: cascade_policy::FrequencyCapConfig,
    /// Parameters of the `diversity` selector.
    pub diversity: cascade_policy::DiversityConfig,
    /// Parameters of the `mmr` selector.
    pub mmr: cascade_policy::MmrConfig,
    /// Parameters of the `exploration` selector.
    pub exploration: cascade_policy::ExplorationConfig,
    /// Parameters of the `sponsored` selector.
    pub sponsored: cascade_policy::SponsoredConfig,
    /// What the `blocklist` filter removes on this surface.
    pub blocklist: cascade_policy::BlocklistConfig,
    /// Boosts (positive `add`) and demotions (negative) applied after the ranker.
    pub boosts: Vec<cascade_policy::BoostRule>,
    pub side_effects: Vec<SideEffectKind>,
    pub reasons: ReasonTemplates,
    /// Pad short lists from the popular list (then the newest items) through the filters.
    pub fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// Quota: most candidates from this source.
    #[serde(default = "default_source_limit")]
    pub limit: usize,
    #[serde(default = "default_source_timeout")]
    pub timeout_ms: u64,
    /// Parameters of the `similar` source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similar: Option<SimilarConfig>,
    /// Parameters of the `fresh` source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<FreshConfig>,
    /// Parameters of the `embedding` source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
    /// Its candidates skip the candidate budget and the pre-ranker's cut (default: true for
    /// `editorial` and `fresh`, which the pinned and exploration rules draw on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
}

impl SourceConfig {
    /// A source with default parameters and timeout.
    pub fn new(kind: SourceKind, limit: usize) -> Self {
        Self {
            kind,
            limit,
            timeout_ms: default_source_timeout(),
            similar: None,
            fresh: None,
            embedding: None,
            protected: None,
        }
    }
}

fn default_source_limit() -> usize {
    500
}

fn default_source_timeout() -> u64 {
    50
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Popular,
    Similar,
    Trending,
    Fresh,
    Follows,
    Embedding,
    Editorial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HydratorKind {
    Retrieval,
    Item,
    User,
    UserItem,
    Context,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    Safety,
    Seen,
    /// Impression caps per user and item (`frequency_cap` parameters).
    FrequencyCap,
    /// The surface's `blocklist` (fail closed).
    Blocklist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectorKind {
    TopScore,
    /// Category and creator caps in every window (`diversity` parameters); replaces
    /// `top_score`.
    Diversity,
    /// Maximal marginal relevance on item embeddings (`mmr` parameters); replaces
    /// `top_score`.
    Mmr,
    /// Exploration slots by Thompson sampling (`exploration` parameters); after `top_score`.
    Exploration,
    /// Pinned editorial slots (editorial lists with a `pin` position).
    Pinned,
    /// Sponsored-slot limits (`sponsored` parameters); must come last.
    Sponsored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffectKind {
    Impressions,
    /// Served lists to the drift monitor.
    Drift,
}

impl Default for SurfaceConfig {
    fn default() -> Self {
        Self {
            budget_ms: 200,
            hydrate_ms: 50,
            rank_ms: 50,
            prerank_keep: 300,
            heavy_ranker: true,
            candidate_budget: 1000,
            sources: vec![
                SourceConfig::new(SourceKind::Similar, 500),
                SourceConfig::new(SourceKind::Embedding, 300),
                SourceConfig::new(SourceKind::Popular, 300),
                SourceConfig::new(SourceKind::Editorial, 50),
                SourceConfig::new(SourceKind::Trending, 100),
                SourceConfig::new(SourceKind::Follows, 100),
                SourceConfig::new(SourceKind::Fresh, 100),
            ],
            hydrators: vec![
                HydratorKind::Retrieval,
                HydratorKind::Item,
                HydratorKind::User,
                HydratorKind::UserItem,
                HydratorKind::Context,
            ],
            filters: vec![FilterKind::Safety, FilterKind::Blocklist, FilterKind::Seen],
            scorer: BlendConfig::default(),
            selectors: vec![
                SelectorKind::TopScore,
                SelectorKind::Exploration,
                SelectorKind::Pinned,
                SelectorKind::Sponsored,
            ],
            diversity: cascade_policy::DiversityConfig::default(),
            mmr: cascade_policy::MmrConfig::default(),
            exploration: cascade_policy::ExplorationConfig::default(),
            sponsored: cascade_policy::SponsoredConfig::default(),
            blocklist: cascade_policy::BlocklistConfig::default(),
            boosts: Vec::new(),
            frequency_cap: cascade_policy::FrequencyCapConfig::default(),
            side_effects: vec![SideEffectKind::Impressions, SideEffectKind::Drift],
            reasons: ReasonTemplates::default(),
            fallback: true,
        }
    }
}

/// Rejects surfaces that cannot work, naming the key (`surfaces.home.selectors`).
pub fn validate_surfaces(surfaces: &Surfaces) -> Result<(), String> {
    if surfaces.is_empty() {
        return Err("surfaces: at least one surface is needed".into());
    }
    for (name, s) in surfaces {
        s.validate(name)?;
    }
    Ok(())
}

impl SurfaceConfig {
    /// Checks this surface (named `name`); the error starts with the offending key.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let s = self;
        let bad = |k: &str, m: &str| Err(format!("{k}: {m}"));
        let k = |f: &str| format!("surfaces.{name}.{f}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(
                &format!("surfaces.{name}"),
                "surface names use [A-Za-z0-9_-]",
            );
        }
        if s.budget_ms == 0 {
            return bad(&k("budget_ms"), "must be positive");
        }
        if s.sources.is_empty() || s.sources.len() > MAX_SOURCES {
            return bad(&k("sources"), &format!("needs 1..={MAX_SOURCES} sources"));
        }
        if s.sources.iter().any(|x| x.limit == 0 || x.timeout_ms == 0) {
            return bad(&k("sources"), "limit and timeout_ms must be positive");
        }
        if let Err(e) = s.diversity.validate() {
            return bad(&k("diversity"), &e);
        }
        if let Err(e) = s.mmr.validate() {
            return bad(&k("mmr"), &e);
        }
        if let Err(e) = s.exploration.validate() {
            return bad(&k("exploration"), &e);
        }
        for r in &s.boosts {
            if let Err(e) = r.validate() {
                return bad(&k("boosts"), &e);
            }
        }
        // Order matters: rules that lock slots run after the score order is set and
        // before the selectors that keep them; sponsored limits see the final order.
        let at = |kind: SelectorKind| s.selectors.iter().position(|&x| x == kind);
        if let Some(p) = at(SelectorKind::Sponsored)
            && p + 1 != s.selectors.len()
        {
            return bad(&k("selectors"), "`sponsored` must be the last selector");
        }
        for lock in [SelectorKind::Exploration, SelectorKind::Pinned] {
            if let (Some(l), Some(t)) = (at(lock), at(SelectorKind::TopScore))
                && l < t
            {
                return bad(
                    &k("selectors"),
                    "`exploration` and `pinned` must come after `top_score`",
                );
            }
        }
        if s.prerank_keep == 0 {
            return bad(&k("prerank_keep"), "must be positive");
        }
        if s.candidate_budget == 0 {
            return bad(&k("candidate_budget"), "must be positive");
        }
        if !s.filters.contains(&FilterKind::Safety) {
            return bad(&k("filters"), "the safety filter cannot be removed");
        }
        Ok(())
    }
}
