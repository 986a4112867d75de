//! Experiments and holdouts: sticky, deterministic assignment of a surface's users to arms by
//! hashing (salt + user id); an arm serves with its own pipeline (policy parameters) and/or
//! model bundle; the holdout always gets the baseline, the surface's popular list.

use crate::config::{Config, ExperimentConfig, SourceConfig, SourceKind};
use crate::engine::build_pipeline;
use crate::error::ServerError;
use cascade_features::experiments::ArmStats;
use cascade_index::ModelStore;
use cascade_pipeline::{Env, Pipeline};
use serde::Serialize;
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
    upto: u64,
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
    config: &Config,
    writer: Option<&crate::engine::Sink>,
    base: &Env,
    mut load_model: impl FnMut(&str) -> Result<Arc<ModelStore>, ServerError>,
) -> Result<Vec<Experiment>, ServerError> {
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
            pipeline: Arc::new(build_pipeline(&base_cfg, &x.surface, writer, pool)?),
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
            let mut p = build_pipeline(config, surface, writer, pool)?;
            // Metrics and responses name the experiment's surface.
            p.surface = x.surface.clone();
            let models = match &a.model {
                Some(v) => Some(load_model(v).map_err(|e| {
                    ServerError::Config(format!("experiments[{i}].arms[{j}].model: {e}"))
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

/// A proportion with its 95 % Wilson interval.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Wilson score interval for `k` successes in `n`.
pub fn wilson(k: u64, n: u64) -> Rate {
    if n == 0 {
        return Rate {
            value: 0.0,
            low: 0.0,
            high: 0.0,
        };
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = (k / n).min(1.0);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt()) / denom;
    Rate {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// The mean of a per-impression value (sum, sum of squares over `n`) with a 95 % normal
/// interval.
pub fn mean(sum: f64, sum_sq: f64, n: u64) -> Rate {
    if n == 0 {
        return Rate {
            value: 0.0,
            low: 0.0,
            high: 0.0,
        };
    }
    let n = n as f64;
    let m = sum / n;
    let var = (sum_sq / n - m * m).max(0.0);
    let half = 1.96 * (var / n).sqrt();
    Rate {
        value: m,
        low: m - half,
        high: m + half,
    }
}

/// One arm's online metrics.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ArmReport {
    pub arm: String,
    /// Configured share of users (the holdout's is the experiment's `holdout`).
    pub share: f64,
    pub pipeline: Option<String>,
    /// The pinned bundle, or the active one when the arm pins none.
    pub model_version: String,
    /// That bundle's offline metrics, when it is in the registry.
    #[schema(value_type = Option<Object>)]
    pub offline_metrics: Option<serde_json::Value>,
    pub requests: u64,
    pub impressions: u64,
    /// Clicks (and views) per impression.
    pub ctr: Rate,
    /// Likes, shares and purchases per impression.
    pub like_rate: Rate,
    pub skip_rate: Rate,
    pub hide_rate: Rate,
    pub watch_seconds_per_impression: Rate,
}

pub fn report(
    arm: &str,
    share: f64,
    pipeline: Option<String>,
    model_version: String,
    offline_metrics: Option<serde_json::Value>,
    s: &ArmStats,
) -> ArmReport {
    let n = s.impressions;
    ArmReport {
        arm: arm.to_string(),
        share,
        pipeline,
        model_version,
        offline_metrics,
        requests: s.requests,
        impressions: n,
        ctr: wilson(s.clicks.min(n), n),
        like_rate: wilson(s.likes.min(n), n),
        skip_rate: wilson(s.skips.min(n), n),
        hide_rate: wilson(s.hides.min(n), n),
        watch_seconds_per_impression: mean(s.watch_seconds, s.watch_seconds_sq, n),
    }
}

impl crate::engine::Engine {
    /// The online report of experiment `name`.
    pub fn experiment_report(&self, name: &str) -> Option<crate::api::ExperimentReport> {
        let x = self.experiments.iter().find(|x| x.config.name == name)?;
        let active = self.env.models.load().version.clone();
        let registry = self.list_models().unwrap_or_default();
        let offline = |v: &str| {
            registry
                .iter()
                .find(|m| m.version == v)
                .and_then(|m| m.metrics.clone())
        };
        let stats = self.env.state.read().experiments.arms.clone();
        let one = |arm: &Arm, share: f64, pipeline: Option<String>| {
            let version = arm.model_version.clone().unwrap_or_else(|| active.clone());
            let key = format!("{}:{}", x.config.name, arm.name);
            report(
                &arm.name,
                share,
                pipeline,
                version.clone(),
                offline(&version),
                stats.get(&key).unwrap_or(&ArmStats::default()),
            )
        };
        let mut arms = vec![one(&x.holdout, x.config.holdout, None)];
        for (a, c) in x.arms.iter().zip(&x.config.arms) {
            arms.push(one(
                a,
                a.weight * (1.0 - x.config.holdout),
                c.pipeline.clone(),
            ));
        }
        Some(crate::api::ExperimentReport {
            name: x.config.name.clone(),
            surface: x.config.surface.clone(),
            holdout: x.config.holdout,
            arms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_brackets_the_rate() {
        let r = wilson(30, 1000);
        assert!((r.value - 0.03).abs() < 1e-12);
        assert!(r.low < 0.03 && 0.03 < r.high);
        assert!(r.low > 0.02 && r.high < 0.045, "{r:?}");
        // Ten ones: no spread.
        let m = mean(10.0, 10.0, 10);
        assert_eq!((m.value, m.low, m.high), (1.0, 1.0, 1.0));
        // One 10 and nine 0s: variance 9, half-width 1.96 * sqrt(9 / 10).
        let m = mean(10.0, 100.0, 10);
        assert!(
            (m.high - m.value - 1.96 * 0.9f64.sqrt()).abs() < 1e-9,
            "{m:?}"
        );
    }
}
