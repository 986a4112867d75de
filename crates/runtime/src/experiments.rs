//! Experiments and holdouts: sticky, deterministic assignment of a surface's users to arms by
//! hashing (salt + user id); an arm serves with its own pipeline (policy parameters) and/or
//! model bundle; the holdout always gets the baseline, the surface's popular list.

use crate::config::{EngineConfig, ExperimentConfig};
use crate::error::RuntimeError;
use cascade_index::ModelStore;
use cascade_pipeline::{Env, Pipeline};
use cascade_surfaces::{MutationQueue, SourceConfig, SourceKind, build_pipeline};
use std::sync::Arc;

/// Buckets users are hashed into (basis points).
pub const BUCKETS: u64 = 10_000;

/// The user's bucket for `salt`: FNV-1a over salt, a separator and the user id.
pub fn bucket(salt: &str, user: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain([0xff]).chain(user.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly on short keys: fold the high half in.
    (h ^ (h >> 32)) % BUCKETS
}

/// One arm, ready to serve.
pub struct Arm {
    pub name: String,
    /// `experiment:arm`, as responses and impressions name it.
    pub key: String,
    /// Buckets below this (and at or above the previous arm's) belong to it.
    pub(crate) upto: u64,
    pub pipeline: Arc<Pipeline>,
    /// Its own models (a pinned bundle), refreshed with live popular lists by the data loop.
    pub models: Option<Arc<ModelStore>>,
    /// The environment it serves in when it pins models.
    pub env: Option<Env>,
    pub model_version: Option<String>,
    pub weight: f64,
}

/// A running experiment.
pub struct Experiment {
    pub config: ExperimentConfig,
    salt: String,
    holdout_upto: u64,
    pub holdout: Arm,
    pub arms: Vec<Arm>,
}

impl Experiment {
    /// The arm of `user` (the holdout included).
    pub fn assign(&self, user: &str) -> &Arm {
        let b = bucket(&self.salt, user);
        if b < self.holdout_upto {
            return &self.holdout;
        }
        self.arms
            .iter()
            .find(|a| b < a.upto)
            .or(self.arms.last())
            .unwrap_or(&self.holdout)
    }
}

/// The experiments of a config, built at start. `load_model` loads a registry version into
/// a model store (the engine validates it as an activation would).
pub fn build(
    config: &EngineConfig,
    writer: Option<&Arc<dyn MutationQueue>>,
    base: &Env,
    mut load_model: impl FnMut(&str) -> Result<Arc<ModelStore>, RuntimeError>,
) -> Result<Vec<Experiment>, RuntimeError> {
    let pool = &base.pool;
    let mut out = Vec::new();
    for (i, x) in config.experiments.iter().enumerate() {
        let salt = x.salt.clone().unwrap_or_else(|| x.name.clone());
        let holdout_upto = (x.holdout * BUCKETS as f64).round() as u64;
        // The baseline: the surface's own filters and policy, over the popular list only,
        // without the heavy ranker or exploration.
        let mut base_cfg = config.clone();
        if let Some(s) = base_cfg.surfaces.get_mut(&x.surface) {
            s.sources = vec![SourceConfig::new(SourceKind::Popular, 300)];
            s.heavy_ranker = false;
            s.boosts.clear();
            s.exploration.share = 0.0;
        }
        let holdout = Arm {
            name: "holdout".into(),
            key: format!("{}:holdout", x.name),
            upto: holdout_upto,
            pipeline: Arc::new(surface_pipeline(&base_cfg, &x.surface, writer, pool)?),
            models: None,
            env: None,
            model_version: None,
            weight: 0.0,
        };
        let total: f64 = x.arms.iter().map(|a| a.weight).sum();
        let mut acc = 0.0;
        let mut arms = Vec::new();
        for (j, a) in x.arms.iter().enumerate() {
            acc += a.weight;
            let upto =
                holdout_upto + ((acc / total) * (BUCKETS - holdout_upto) as f64).round() as u64;
            let surface = a.pipeline.as_deref().unwrap_or(&x.surface);
            let mut p = surface_pipeline(config, surface, writer, pool)?;
            // Metrics and responses name the experiment's surface.
            p.surface = x.surface.clone();
            let models = match &a.model {
                Some(v) => Some(load_model(v).map_err(|e| {
                    RuntimeError::Config(format!("experiments[{i}].arms[{j}].model: {e}"))
                })?),
                None => None,
            };
            let env = models.as_ref().map(|m| base.with_models(m.clone()));
            arms.push(Arm {
                name: a.name.clone(),
                key: format!("{}:{}", x.name, a.name),
                upto,
                pipeline: Arc::new(p),
                env,
                models,
                model_version: a.model.clone(),
                weight: a.weight / total,
            });
        }
        out.push(Experiment {
            config: x.clone(),
            salt,
            holdout_upto,
            holdout,
            arms,
        });
    }
    Ok(out)
}

fn surface_pipeline(
    config: &EngineConfig,
    surface: &str,
    writer: Option<&Arc<dyn MutationQueue>>,
    pool: &Arc<cascade_pipeline::CpuPool>,
) -> Result<Pipeline, RuntimeError> {
    let s = config
        .surfaces
        .get(surface)
        .ok_or_else(|| RuntimeError::Config(format!("surfaces.{surface} missing")))?;
    build_pipeline(s, surface, writer, None, pool).map_err(RuntimeError::Config)
}
