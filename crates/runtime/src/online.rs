//! Online metrics of experiments: each arm's rates from the impressions it served and the
//! feedback they drew, with 95 % intervals, beside the arm's model and its offline metrics.

use crate::engine::Engine;
use crate::experiments::Arm;
use cascade_features::experiments::ArmStats;
use serde::Serialize;

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

impl Engine {
    /// The online report of experiment `name`.
    pub fn experiment_report(&self, name: &str) -> Option<ExperimentReport> {
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
        Some(ExperimentReport {
            name: x.config.name.clone(),
            surface: x.config.surface.clone(),
            holdout: x.config.holdout,
            arms,
        })
    }
}

/// One experiment's online report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperimentReport {
    pub name: String,
    pub surface: String,
    pub holdout: f64,
    /// The holdout first, then the arms.
    pub arms: Vec<ArmReport>,
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
