//! Typed configuration: TOML file + `CASCADE_*` environment overrides, unknown keys rejected,
//! validated once at start.

use cascade_features::EventWeights;
use cascade_index::{AlsConfig, AnnConfig, CoVisConfig};
use cascade_pipeline::MAX_SOURCES;
use cascade_policy::ReasonTemplates;
use cascade_ranking::BlendConfig;
use cascade_sources::{EmbeddingConfig, FreshConfig, SimilarConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ServerError;

/// Top-level sections; environment variables `CASCADE_<SECTION>__<KEY>` override them.
const SECTIONS: &[&str] = &[
    "data_dir",
    "server",
    "auth",
    "storage",
    "bus",
    "features",
    "models",
    "pipeline",
    "faults",
    "surfaces",
    "experiments",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub server: ServerSection,
    pub auth: AuthSection,
    pub storage: StorageSection,
    /// Where accepted mutations go: the local log (`embedded`) or NATS JetStream (`nats`).
    pub bus: BusSection,
    pub features: FeaturesSection,
    pub models: ModelsSection,
    pub pipeline: PipelineSection,
    pub faults: FaultsSection,
    pub surfaces: BTreeMap<String, SurfaceConfig>,
    /// Experiments with holdouts, each on one surface.
    pub experiments: Vec<ExperimentConfig>,
}

/// `cascade train` compares its candidate with the active bundle on the newest
/// `window_fraction` of engagements (the candidate retrained without them) and promotes it only
/// if its NDCG@10 there is at most `tolerance` (relative) below the active one's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSection {
    pub enabled: bool,
    pub window_fraction: f64,
    /// Most window users asked (the first by id).
    pub users: usize,
    pub tolerance: f64,
}

impl Default for GateSection {
    fn default() -> Self {
        Self {
            enabled: true,
            window_fraction: 0.05,
            users: 1000,
            tolerance: 0.02,
        }
    }
}

/// An experiment: users of `surface` are assigned to arms by hashing `salt` + user id (sticky,
/// deterministic); a `holdout` share always gets the baseline (the surface's popular list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    pub surface: String,
    /// Defaults to the name; change it to reshuffle users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Share of users (0..=0.5) held out of every arm.
    #[serde(default)]
    pub holdout: f64,
    pub arms: Vec<ArmConfig>,
}

/// One arm: its share (by weight) and what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    pub name: String,
    pub weight: f64,
    /// Serve with another surface's pipeline (its sources, ranking and policy parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Serve with this model bundle (a version in the registry) instead of the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Fault injection (`/v1/admin/faults`), for chaos tests and game days; off unless enabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsSection {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub addr: String,
    /// Largest accepted request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Most entries in one items/users/events batch; more gets 413.
    pub max_batch: usize,
    /// Largest `n` of a recommendation request.
    pub max_n: usize,
    /// Requests in flight per route group (reads, writes, admin); past it, 503 with
    /// `Retry-After` at once instead of queueing into timeouts.
    pub max_inflight: usize,
}

/// API keys by role. With no key configured at all, the API is open (local use). Once any
/// key is set: reads need a read, write or admin key; writes need a write or admin key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub read_keys: Vec<String>,
    pub write_keys: Vec<String>,
    pub admin_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Where requests read user features: this process's state (`embedded`) or Redis.
    pub backend: StorageBackend,
    /// fdatasync every group commit (turn off only for throwaway data).
    pub fsync: bool,
    pub segment_mb: u64,
    /// Submissions waiting for a group commit before writers wait.
    pub queue: usize,
    /// Seconds between snapshots of the embedded state (restart = snapshot + log tail);
    /// 0 disables them. Not used on the `nats` bus (a replica rebuilds from the stream).
    pub snapshot_interval_s: u64,
    /// Log records that must have arrived since the last snapshot for a new one.
    pub snapshot_min_records: u64,
    /// Snapshots kept (the newest).
    pub snapshot_keep: usize,
    pub redis: cascade_scaleout::RedisConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusBackend {
    #[default]
    Embedded,
    Nats,
}

/// The event bus. `embedded`: the local log is the bus (one process). `nats`: every replica
/// publishes to one JetStream stream and replicates it (scale-out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSection {
    pub backend: BusBackend,
    /// At start, a replica serves only once it has replicated the stream as it was then;
    /// it gives up (and does not start) after this long.
    pub catch_up_s: u64,
    pub nats: cascade_scaleout::NatsConfig,
}

impl Default for BusSection {
    fn default() -> Self {
        Self {
            backend: BusBackend::Embedded,
            catch_up_s: 300,
            nats: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesSection {
    pub popularity_half_life_hours: f64,
    /// Short window that trending compares with the popularity window.
    pub trending_half_life_hours: f64,
    /// Interactions remembered per user.
    pub history_cap: usize,
    /// Items remembered per user as seen (and as engaged); past it the oldest are forgotten.
    pub seen_cap: usize,
    /// Engagements kept for point-in-time popularity (requests replaying the past); past it
    /// the oldest are dropped (16 bytes each).
    pub time_log_cap: usize,
    pub weights: EventWeights,
    /// User attributes whose values define segments with their own popular lists.
    pub segments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsSection {
    pub popular_size: usize,
    pub popular_per_category: usize,
    /// How often popular lists are rebuilt when events arrived.
    pub popular_refresh_ms: u64,
    /// How often co-visitation is rebuilt when events arrived.
    pub covis_refresh_s: u64,
    pub covis: CoVisConfig,
    /// Train embeddings (implicit ALS) for the `embedding` source.
    pub embeddings: bool,
    /// How often embeddings are retrained when events arrived.
    pub embeddings_refresh_s: u64,
    pub als: AlsConfig,
    /// Search the item vectors through an HNSW index (false: exact scan, for small catalogs
    /// or to measure the index against).
    pub ann: bool,
    pub hnsw: AnnConfig,
    /// Embedding neighbours kept per item for the `similar` source (0: none).
    pub item_neighbors: usize,
    /// Serve the data dir's current bundle (`cascade train`) at start instead of training.
    pub load_bundle: bool,
    pub ranker: RankerSection,
    /// `cascade train`'s promotion gate.
    pub gate: GateSection,
}

/// The heavy ranker: how its training lists are built and how the trees are grown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankerSection {
    /// Train a ranker with the other models (at start without a bundle, and in `cascade train`).
    pub enabled: bool,
    /// The surface whose pipeline produces the training candidates.
    pub surface: String,
    /// Share of each user's interactions, newest last, that provides labels; the rest (and
    /// everything before it) provides features, embeddings and candidates.
    pub label_fraction: f64,
    /// Users with fewer interactions give no list.
    pub min_interactions: usize,
    /// Most training lists (users sampled deterministically past it).
    pub max_lists: usize,
    /// Share of lists held out for early stopping and the reported NDCG.
    pub valid_fraction: f64,
    /// With at least this many logged responses (impressions with a request id) the lists
    /// are the served responses and their feedback; otherwise each user's history is split.
    pub min_impression_lists: usize,
    /// Feedback on a shown item without a request id counts for the latest response that
    /// showed it to the user at most this long before.
    pub attribution_window_s: u64,
    pub labels: cascade_features::LabelWeights,
    pub gbdt: cascade_gbdt::Params,
}

impl Default for RankerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            surface: "home".into(),
            label_fraction: 0.2,
            min_interactions: 5,
            max_lists: 20_000,
            valid_fraction: 0.1,
            min_impression_lists: 500,
            attribution_window_s: 3600,
            labels: cascade_features::LabelWeights::default(),
            gbdt: cascade_gbdt::Params::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Threads of the CPU pool for pipeline stages (0 = number of cores).
    pub cpu_threads: usize,
    /// Consecutive failures of a dependency that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips its dependency before one trial call.
    pub breaker_cooldown_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            cpu_threads: 0,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
        }
    }
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
}

impl Default for Config {
    fn default() -> Self {
        let mut surfaces = BTreeMap::new();
        surfaces.insert("home".to_string(), SurfaceConfig::default());
        let mut feed = SurfaceConfig::default();
        // The feed leans on what is popular now more than on the user's history.
        feed.scorer.source_weights.insert("popular".into(), 0.8);
        surfaces.insert("feed".to_string(), feed);
        Self {
            data_dir: PathBuf::from("cascade-data"),
            server: ServerSection::default(),
            auth: AuthSection::default(),
            storage: StorageSection::default(),
            bus: BusSection::default(),
            features: FeaturesSection::default(),
            models: ModelsSection::default(),
            pipeline: PipelineSection::default(),
            faults: FaultsSection::default(),
            surfaces,
            experiments: Vec::new(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            max_batch: 10_000,
            max_n: 500,
            max_inflight: 64,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Embedded,
            fsync: true,
            segment_mb: 256,
            queue: 4096,
            snapshot_interval_s: 300,
            snapshot_min_records: 1000,
            snapshot_keep: 2,
            redis: Default::default(),
        }
    }
}

impl Default for FeaturesSection {
    fn default() -> Self {
        Self {
            popularity_half_life_hours: 168.0,
            trending_half_life_hours: 6.0,
            history_cap: 200,
            seen_cap: 10_000,
            time_log_cap: 10_000_000,
            weights: EventWeights::default(),
            segments: vec!["locale".into(), "age_band".into()],
        }
    }
}

impl Default for ModelsSection {
    fn default() -> Self {
        Self {
            popular_size: 1000,
            popular_per_category: 200,
            popular_refresh_ms: 1000,
            covis_refresh_s: 30,
            covis: CoVisConfig::default(),
            embeddings: true,
            embeddings_refresh_s: 600,
            als: AlsConfig::default(),
            ann: true,
            hnsw: AnnConfig::default(),
            item_neighbors: 20,
            load_bundle: true,
            ranker: RankerSection::default(),
            gate: GateSection::default(),
        }
    }
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
            side_effects: vec![SideEffectKind::Impressions],
            reasons: ReasonTemplates::default(),
            fallback: true,
        }
    }
}

/// `server__max_n` or `server.max_n` → `server`. Other `CASCADE_*` variables (e.g. the test
/// services' URLs) are not configuration and are left alone.
fn section_of(key: &str) -> &str {
    let end = [key.find("__"), key.find('.')]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(key.len());
    &key[..end]
}

impl Config {
    /// Defaults, then the TOML file (if any), then `CASCADE_*` variables
    /// (`CASCADE_SERVER__ADDR=0.0.0.0:8080`, `CASCADE_STORAGE__FSYNC=false`, ...).
    pub fn load(file: Option<&Path>) -> Result<Self, ServerError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ServerError::Config(format!(
                    "config file {} not found",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(Env::prefixed("CASCADE_").split("__").filter(|k| {
            SECTIONS
                .iter()
                .any(|s| section_of(k.as_str()).eq_ignore_ascii_case(s))
        }));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects configurations that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |k: &str, m: &str| Err(ServerError::Config(format!("{k}: {m}")));
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes", "must be at least 1024");
        }
        if self.server.max_batch == 0 || self.server.max_n == 0 {
            return bad("server.max_batch / server.max_n", "must be positive");
        }
        if self.storage.queue == 0 || self.storage.segment_mb == 0 {
            return bad("storage.queue / storage.segment_mb", "must be positive");
        }
        if self.storage.backend == StorageBackend::Redis {
            if self.bus.backend != BusBackend::Nats {
                return bad(
                    "storage.backend",
                    "`redis` needs bus.backend = \"nats\": the bus's durable consumer is what writes events to Redis",
                );
            }
            if let Err(e) = self.storage.redis.validate() {
                return bad("storage.redis", &e.to_string());
            }
        }
        if self.bus.backend == BusBackend::Nats
            && let Err(e) = self.bus.nats.validate()
        {
            return bad("bus.nats", &e.to_string());
        }
        let h = self.features.popularity_half_life_hours;
        if h.is_nan() || h <= 0.0 {
            return bad("features.popularity_half_life_hours", "must be positive");
        }
        if self.models.popular_size == 0 {
            return bad("models.popular_size", "must be positive");
        }
        if self.models.covis.window == 0 || self.models.covis.top_k == 0 {
            return bad("models.covis", "window and top_k must be positive");
        }
        if let Err(e) = self.models.hnsw.validate() {
            return bad("models.hnsw", &e);
        }
        if self.models.als.factors == 0 || self.models.als.factors > 1024 {
            return bad("models.als.factors", "must be in 1..=1024");
        }
        let r = &self.models.ranker;
        if let Err(e) = r.gbdt.validate() {
            return bad("models.ranker.gbdt", &e.to_string());
        }
        if let Err(e) = r.labels.validate() {
            return bad("models.ranker.labels", &e);
        }
        if !(r.label_fraction > 0.0 && r.label_fraction < 1.0) {
            return bad("models.ranker.label_fraction", "must be in (0, 1)");
        }
        if !(0.0..0.5).contains(&r.valid_fraction) {
            return bad("models.ranker.valid_fraction", "must be in [0, 0.5)");
        }
        if r.enabled && !self.surfaces.contains_key(&r.surface) {
            return bad("models.ranker.surface", "names no configured surface");
        }
        for keys in [
            &self.auth.read_keys,
            &self.auth.write_keys,
            &self.auth.admin_keys,
        ] {
            if keys.iter().any(|k| k.len() < 8) {
                return bad("auth", "API keys must be at least 8 characters");
            }
        }
        if self.surfaces.is_empty() {
            return bad("surfaces", "at least one surface is needed");
        }
        let mut names = std::collections::HashSet::new();
        for (i, x) in self.experiments.iter().enumerate() {
            let k = |f: &str| format!("experiments[{i}].{f}");
            if x.name.is_empty() || x.name.contains(':') || !names.insert(&x.name) {
                return bad(&k("name"), "needs a unique name without `:`");
            }
            if !self.surfaces.contains_key(&x.surface) {
                return bad(&k("surface"), "names no configured surface");
            }
            if !(0.0..=0.5).contains(&x.holdout) {
                return bad(&k("holdout"), "must be within 0..=0.5");
            }
            if x.arms.is_empty() {
                return bad(&k("arms"), "needs at least one arm");
            }
            let mut arm_names = std::collections::HashSet::new();
            for (j, a) in x.arms.iter().enumerate() {
                let ka = |f: &str| format!("experiments[{i}].arms[{j}].{f}");
                if a.name.is_empty() || a.name == "holdout" || !arm_names.insert(&a.name) {
                    return bad(&ka("name"), "needs a unique name other than `holdout`");
                }
                if !(a.weight.is_finite() && a.weight > 0.0) {
                    return bad(&ka("weight"), "must be positive");
                }
                if let Some(p) = &a.pipeline
                    && !self.surfaces.contains_key(p)
                {
                    return bad(&ka("pipeline"), "names no configured surface");
                }
            }
        }
        for (name, s) in &self.surfaces {
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
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_have_home_and_feed() {
        let c = Config::default();
        c.validate().expect("valid");
        assert!(c.surfaces.contains_key("home") && c.surfaces.contains_key("feed"));
    }

    #[test]
    fn policy_settings_are_validated_naming_the_key() {
        let bad = |f: &dyn Fn(&mut SurfaceConfig)| {
            let mut c = Config::default();
            f(c.surfaces.get_mut("home").expect("home"));
            c.validate().expect_err("invalid").to_string()
        };
        let e = bad(&|s| {
            s.selectors = vec![
                SelectorKind::TopScore,
                SelectorKind::Sponsored,
                SelectorKind::Pinned,
            ]
        });
        assert!(
            e.contains("surfaces.home.selectors") && e.contains("last"),
            "{e}"
        );
        let e = bad(&|s| s.selectors = vec![SelectorKind::Exploration, SelectorKind::TopScore]);
        assert!(e.contains("surfaces.home.selectors"), "{e}");
        let e = bad(&|s| s.exploration.share = 0.9);
        assert!(e.contains("surfaces.home.exploration"), "{e}");
        let e = bad(&|s| s.mmr.lambda = 2.0);
        assert!(e.contains("surfaces.home.mmr"), "{e}");
        let e = bad(&|s| {
            s.boosts = vec![cascade_policy::BoostRule {
                name: "nothing".into(),
                add: 1.0,
                ..Default::default()
            }]
        });
        assert!(
            e.contains("surfaces.home.boosts") && e.contains("nothing"),
            "{e}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn scale_out_backends_are_chosen_by_env_and_checked_together() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CASCADE_STORAGE__BACKEND", "redis");
            let err = Config::load(None).expect_err("redis without the bus");
            assert!(err.to_string().contains("storage.backend"), "{err}");
            jail.set_env("CASCADE_BUS__BACKEND", "nats");
            jail.set_env("CASCADE_STORAGE__REDIS__PREFIX", "blue-1");
            let c = Config::load(None).expect("valid");
            assert_eq!(c.storage.backend, StorageBackend::Redis);
            assert_eq!(c.bus.backend, BusBackend::Nats);
            assert_eq!(c.storage.redis.prefix, "blue-1");
            jail.set_env("CASCADE_STORAGE__REDIS__PREFIX", "a b");
            let err = Config::load(None).expect_err("bad prefix");
            assert!(err.to_string().contains("storage.redis.prefix"), "{err}");
            jail.set_env("CASCADE_STORAGE__REDIS__PREFIX", "ok");
            jail.set_env("CASCADE_BUS__NATS__STREAM", "has.dot");
            let err = Config::load(None).expect_err("bad stream");
            assert!(err.to_string().contains("bus.nats"), "{err}");
            jail.set_env("CASCADE_BUS__BACKEND", "kafka");
            let err = Config::load(None).expect_err("unknown backend");
            assert!(err.to_string().contains("kafka"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn unknown_keys_are_rejected() {
        // Inside a Jail: environment-override tests change CASCADE_* variables meanwhile.
        figment::Jail::expect_with(|_jail| {
            let dir = tempfile::tempdir().expect("tmp");
            let f = dir.path().join("c.toml");
            std::fs::write(&f, "[server]\nadress = \"x\"\n").expect("write");
            let err = Config::load(Some(&f)).expect_err("must reject");
            assert!(err.to_string().contains("adress"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn environment_overrides_file_and_ignores_other_cascade_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[server]\nmax_n = 7\n")?;
            jail.set_env("CASCADE_SERVER__MAX_N", "9");
            jail.set_env("CASCADE_STORAGE__FSYNC", "false");
            jail.set_env("CASCADE_TEST_REDIS_URL", "redis://127.0.0.1:6379");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.max_n, 9);
            assert!(!c.storage.fsync);
            jail.set_env("CASCADE_SERVER__NOPE", "1");
            let err = Config::load(Some(Path::new("c.toml"))).expect_err("unknown key");
            assert!(err.to_string().contains("nope"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn file_values_apply_and_validation_names_the_key() {
        // Inside a Jail: environment-override tests change CASCADE_* variables meanwhile.
        figment::Jail::expect_with(|_jail| {
            let dir = tempfile::tempdir().expect("tmp");
            let f = dir.path().join("c.toml");
            std::fs::write(&f, "[server]\nmax_n = 7\n[surfaces.home]\nbudget_ms = 0\n")
                .expect("write");
            let err = Config::load(Some(&f)).expect_err("budget 0");
            assert!(err.to_string().contains("surfaces.home.budget_ms"), "{err}");
            std::fs::write(&f, "[server]\nmax_n = 7\n[surfaces.home]\nbudget_ms = 80\n")
                .expect("write");
            let c = Config::load(Some(&f)).expect("ok");
            assert_eq!(c.server.max_n, 7);
            assert_eq!(c.surfaces["home"].budget_ms, 80);
            // Other defaults of the surface survive the partial override.
            assert_eq!(c.surfaces["home"].sources.len(), 7);
            Ok(())
        });
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    /// The configuration shown in the README must load as it stands.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn readme_config_example_is_valid() {
        // Inside a Jail: environment-override tests change CASCADE_* variables meanwhile.
        figment::Jail::expect_with(|_jail| {
            let readme = include_str!("../../../README.md");
            let start = readme.find("```toml\n").expect("toml block") + "```toml\n".len();
            let len = readme[start..].find("```").expect("block end");
            let dir = tempfile::tempdir().expect("tmp");
            let f = dir.path().join("cascade.toml");
            std::fs::write(&f, &readme[start..start + len]).expect("write");
            let c = Config::load(Some(&f)).expect("README config loads");
            let home = &c.surfaces["home"];
            assert_eq!(home.sources.len(), 4);
            assert_eq!(home.boosts.len(), 2);
            assert_eq!(home.selectors.last(), Some(&SelectorKind::Sponsored));
            assert!(c.surfaces.contains_key("feed"));
            Ok(())
        });
    }
}
