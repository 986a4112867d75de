//! The training sections (`[models]` with its `ranker` and `gate` tables) and the view of the
//! configuration that training reads ([`TrainConfig`]): features, models and surfaces.

pub use cascade_drift::DriftSection;
pub use cascade_features::FeaturesSection;
use cascade_index::{AlsConfig, AnnConfig, CoVisConfig};
use cascade_surfaces::SurfaceConfig;
pub use cascade_surfaces::Surfaces;
use serde::{Deserialize, Serialize};

/// What training reads of the configuration: the runtime's composed config implements it,
/// and [`TrainSettings`] holds just these sections (tests and tools).
pub trait TrainConfig: Sync {
    fn features(&self) -> &FeaturesSection;
    fn models(&self) -> &ModelsSection;
    fn surfaces(&self) -> &Surfaces;
    /// How a bundle's drift reference is captured (requests served, bins, labels).
    fn drift(&self) -> &cascade_drift::DriftSection;

    /// The surface named `name`; an error naming the key when it is not configured.
    fn surface(&self, name: &str) -> Result<&SurfaceConfig, String> {
        self.surfaces()
            .get(name)
            .ok_or_else(|| format!("surfaces.{name} missing"))
    }
}

/// The sections training reads, with the built-in defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    pub features: FeaturesSection,
    pub models: ModelsSection,
    pub surfaces: Surfaces,
    pub drift: cascade_drift::DriftSection,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            features: FeaturesSection::default(),
            models: ModelsSection::default(),
            surfaces: cascade_surfaces::default_surfaces(),
            drift: cascade_drift::DriftSection::default(),
        }
    }
}

crate::impl_train_config!(TrainSettings);

/// Implements [`TrainConfig`] for a configuration type with `features`, `models` and
/// `surfaces` fields, or with them under one field (`impl_train_config!(Config, engine)`).
#[macro_export]
macro_rules! impl_train_config {
    ($t:ty $(, $via:ident)?) => {
        impl $crate::TrainConfig for $t {
            fn features(&self) -> &$crate::config::FeaturesSection {
                &self$(.$via)?.features
            }

            fn models(&self) -> &$crate::ModelsSection {
                &self$(.$via)?.models
            }

            fn surfaces(&self) -> &$crate::config::Surfaces {
                &self$(.$via)?.surfaces
            }

            fn drift(&self) -> &$crate::config::DriftSection {
                &self$(.$via)?.drift
            }
        }
    };
}

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

impl ModelsSection {
    /// Rejects settings that cannot work; the error starts with the offending key. Whether
    /// `ranker.surface` names a configured surface is checked where the sections meet.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |k: &str, m: &str| Err(format!("{k}: {m}"));
        if self.popular_size == 0 {
            return bad("models.popular_size", "must be positive");
        }
        if self.covis.window == 0 || self.covis.top_k == 0 {
            return bad("models.covis", "window and top_k must be positive");
        }
        if let Err(e) = self.hnsw.validate() {
            return bad("models.hnsw", &e);
        }
        if self.als.factors == 0 || self.als.factors > 1024 {
            return bad("models.als.factors", "must be in 1..=1024");
        }
        let r = &self.ranker;
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
        Ok(())
    }
}
