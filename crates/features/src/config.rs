//! The `[features]` section: how the live state weighs, decays and bounds what it keeps.

use crate::state::{State, StateConfig};
use crate::weights::EventWeights;
use serde::{Deserialize, Serialize};

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

impl FeaturesSection {
    /// Rejects settings that cannot work; the error starts with the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let h = self.popularity_half_life_hours;
        if h.is_nan() || h <= 0.0 {
            return Err("features.popularity_half_life_hours: must be positive".into());
        }
        Ok(())
    }

    /// An empty state configured as this section says.
    pub fn new_state(&self) -> State {
        State::with_segments(
            StateConfig {
                weights: self.weights,
                popularity_half_life_hours: self.popularity_half_life_hours,
                trending_half_life_hours: self.trending_half_life_hours,
                history_cap: self.history_cap,
                seen_cap: self.seen_cap,
                time_log_cap: self.time_log_cap,
            },
            self.segments.clone(),
        )
    }
}
