//! The runtime's configuration: its own sections (`storage`, `bus`, `experiments`) composed
//! with the sections other crates declare (`features`, `models`, `pipeline`, `faults`,
//! `surfaces`, `drift`), and the checks that span sections. The HTTP layer adds its own on top.

use cascade_features::FeaturesSection;
use cascade_pipeline::{FaultsSection, PipelineSection};
use cascade_surfaces::Surfaces;
use cascade_training::ModelsSection;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::error::RuntimeError;

/// Everything the engine runs on. Flattened into the top-level configuration, which rejects
/// unknown top-level keys; every section rejects unknown keys of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub storage: StorageSection,
    /// Where accepted mutations go: the local log (`embedded`) or NATS JetStream (`nats`).
    pub bus: BusSection,
    pub features: FeaturesSection,
    pub models: ModelsSection,
    pub pipeline: PipelineSection,
    pub faults: FaultsSection,
    pub surfaces: Surfaces,
    /// Experiments with holdouts, each on one surface.
    pub experiments: Vec<ExperimentConfig>,
    /// Distribution-shift monitoring against the active bundle's reference.
    pub drift: cascade_drift::DriftSection,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cascade-data"),
            storage: StorageSection::default(),
            bus: BusSection::default(),
            features: FeaturesSection::default(),
            models: ModelsSection::default(),
            pipeline: PipelineSection::default(),
            faults: FaultsSection::default(),
            surfaces: cascade_surfaces::default_surfaces(),
            experiments: Vec::new(),
            drift: cascade_drift::DriftSection::default(),
        }
    }
}

cascade_training::impl_train_config!(EngineConfig);

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
    /// Compaction drops events older than this many days (0: kept forever). Hides and
    /// follows are kept at any age; the catalog and users always, at their latest state.
    pub retention_days: u32,
    /// Past this many MB of event records, compaction drops the oldest events (0: no bound).
    pub retention_mb: u64,
    /// Seconds between compactions of the local log, which run when a retention is set or an
    /// erasure is waiting: an erased user's records leave the log and the snapshots within
    /// this bound (plus the compaction's own time).
    pub compaction_interval_s: u64,
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
            retention_days: 0,
            retention_mb: 0,
            compaction_interval_s: 3600,
            redis: Default::default(),
        }
    }
}

impl StorageSection {
    /// What compaction keeps of the events.
    pub fn retention(&self) -> cascade_storage::Retention {
        cascade_storage::Retention {
            max_age_ms: (self.retention_days > 0)
                .then(|| i64::from(self.retention_days) * 86_400_000),
            max_bytes: (self.retention_mb > 0).then_some(self.retention_mb << 20),
        }
    }
}

impl EngineConfig {
    /// Rejects configurations that cannot work, naming the key: each section's own checks,
    /// then those that span sections.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |k: &str, m: &str| Err(RuntimeError::Config(format!("{k}: {m}")));
        if self.storage.queue == 0 || self.storage.segment_mb == 0 {
            return bad("storage.queue / storage.segment_mb", "must be positive");
        }
        if !(1..=86_400).contains(&self.storage.compaction_interval_s) {
            return bad(
                "storage.compaction_interval_s",
                "must be within 1..=86400: erased users leave the log within a day",
            );
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
        let own = [
            self.features.validate(),
            self.models.validate(),
            cascade_surfaces::validate_surfaces(&self.surfaces),
            self.drift.validate(),
        ];
        if let Some(Err(e)) = own.into_iter().find(Result::is_err) {
            return Err(RuntimeError::Config(e));
        }
        let r = &self.models.ranker;
        if r.enabled && !self.surfaces.contains_key(&r.surface) {
            return bad("models.ranker.surface", "names no configured surface");
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
        Ok(())
    }
}
