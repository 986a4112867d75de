//! How much each kind of feedback counts, and exponential time decay in log space.

use cascade_core::{EventKind, Millis};
use serde::{Deserialize, Serialize};

/// Engagement weight per event kind for popularity and co-visitation. Negative signals
/// (skip, hide) weigh zero here; they act through filters and, later, ranking labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventWeights {
    pub view: f32,
    pub click: f32,
    pub like: f32,
    /// Added to `watch_base` times the watched fraction.
    pub watch_base: f32,
    pub watch_fraction: f32,
    pub share: f32,
    pub purchase: f32,
}

impl Default for EventWeights {
    fn default() -> Self {
        Self {
            view: 1.0,
            click: 1.0,
            like: 2.0,
            watch_base: 1.0,
            watch_fraction: 1.0,
            share: 3.0,
            purchase: 3.0,
        }
    }
}

impl EventWeights {
    /// Weight of one event; `value` is the client's optional weight (watch: seconds).
    pub fn weight(&self, kind: EventKind, value: f32, fraction: Option<f32>) -> f32 {
        let client = if kind == EventKind::Watch || value.is_nan() || value <= 0.0 {
            1.0
        } else {
            value.min(100.0)
        };
        let base = match kind {
            EventKind::View => self.view,
            EventKind::Click => self.click,
            EventKind::Like => self.like,
            EventKind::Watch => self.watch_base + self.watch_fraction * fraction.unwrap_or(0.5),
            EventKind::Share => self.share,
            EventKind::Purchase => self.purchase,
            EventKind::Impression | EventKind::Skip | EventKind::Hide | EventKind::Follow => 0.0,
        };
        base * client
    }
}

/// How the ranker's training label blends the feedback on one shown item: positive signals
/// add, skips and hides subtract, and the sum is rounded to a relevance grade in
/// `0..=max_grade`. Clicks alone are not the objective unless configured so.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelWeights {
    pub view: f32,
    pub click: f32,
    pub like: f32,
    pub share: f32,
    pub purchase: f32,
    /// Times the watched fraction (0.5 when unknown).
    pub watch: f32,
    pub skip: f32,
    pub hide: f32,
    pub max_grade: f32,
}

impl Default for LabelWeights {
    fn default() -> Self {
        Self {
            view: 1.0,
            click: 1.0,
            like: 2.0,
            share: 3.0,
            purchase: 3.0,
            watch: 2.0,
            skip: -1.0,
            hide: -3.0,
            max_grade: 3.0,
        }
    }
}

impl LabelWeights {
    /// Contribution of one event to its item's label.
    pub fn weight(&self, kind: EventKind, fraction: Option<f32>) -> f32 {
        match kind {
            EventKind::View => self.view,
            EventKind::Click => self.click,
            EventKind::Like => self.like,
            EventKind::Share => self.share,
            EventKind::Purchase => self.purchase,
            EventKind::Watch => self.watch * fraction.unwrap_or(0.5).clamp(0.0, 1.0),
            EventKind::Skip => self.skip,
            EventKind::Hide => self.hide,
            EventKind::Impression | EventKind::Follow => 0.0,
        }
    }

    /// The relevance grade of a summed label.
    pub fn grade(&self, sum: f32) -> f32 {
        if sum.is_finite() {
            sum.round().clamp(0.0, self.max_grade.max(1.0))
        } else {
            0.0
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.view,
            self.click,
            self.like,
            self.share,
            self.purchase,
            self.watch,
            self.skip,
            self.hide,
        ];
        if all.iter().any(|w| !w.is_finite()) {
            return Err("label weights must be finite".into());
        }
        if !(1.0..=10.0).contains(&self.max_grade) {
            return Err("max_grade must be in 1..=10".into());
        }
        Ok(())
    }
}

/// Exponential decay with a half-life. Scores are kept as `ln(Σ w·e^{λ(t−T0)})`, so an update
/// is O(1), ordering never changes as time passes, and no value overflows for any date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decay {
    lambda_per_ms: f64,
}

/// Fixed anchor of the log-space scores (2020-09-13).
const T0: Millis = 1_600_000_000_000;

impl Decay {
    pub fn from_half_life_hours(h: f64) -> Self {
        let ms = (h.max(1e-6)) * 3_600_000.0;
        Self {
            lambda_per_ms: std::f64::consts::LN_2 / ms,
        }
    }

    /// Log-space contribution of weight `w` at time `ts`.
    pub fn log_term(&self, w: f32, ts: Millis) -> f64 {
        f64::from(w).ln() + self.lambda_per_ms * (ts - T0) as f64
    }

    /// Decayed value of a log-space score seen at `now`.
    pub fn value_at(&self, log_score: f64, now: Millis) -> f64 {
        (log_score - self.lambda_per_ms * (now - T0) as f64).exp()
    }

    /// The decay rate λ (per millisecond).
    pub fn lambda_per_ms(&self) -> f64 {
        self.lambda_per_ms
    }

    /// Multiplier for an event `age_ms` old.
    pub fn factor(&self, age_ms: i64) -> f64 {
        (-self.lambda_per_ms * age_ms.max(0) as f64).exp()
    }
}

/// `ln(e^a + e^b)` without overflow.
pub fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_space_decay_matches_direct_sum() {
        let d = Decay::from_half_life_hours(24.0);
        let day = 86_400_000;
        let mut s = f64::NEG_INFINITY;
        s = log_add(s, d.log_term(1.0, 0));
        s = log_add(s, d.log_term(2.0, day));
        let at = d.value_at(s, 2 * day);
        // 1 event two half-lives old + 2 events one half-life old = 0.25 + 1.0
        assert!((at - 1.25).abs() < 1e-9, "{at}");
        assert!((d.factor(day) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn weights_ignore_negative_signals() {
        let w = EventWeights::default();
        assert_eq!(w.weight(EventKind::Skip, 1.0, None), 0.0);
        assert_eq!(w.weight(EventKind::Like, 1.0, None), 2.0);
        assert_eq!(w.weight(EventKind::Like, 5.0, None), 10.0);
        assert!((w.weight(EventKind::Watch, 300.0, Some(1.0)) - 2.0).abs() < 1e-6);
    }
}
