//! Online metrics per experiment arm: impressions (which carry their arm) joined with later
//! feedback by request id, with bounded memory.

use cascade_core::{Event, EventKind};
use std::collections::{HashMap, VecDeque};

/// Requests remembered for joining feedback to its arm (oldest forgotten first).
pub const MAX_TRACKED_REQUESTS: usize = 200_000;

/// Counters of one arm (`experiment:arm`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArmStats {
    pub requests: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub likes: u64,
    pub skips: u64,
    pub hides: u64,
    pub watches: u64,
    /// Seconds watched, and their squares (for the interval of the mean per impression).
    pub watch_seconds: f64,
    pub watch_seconds_sq: f64,
}

/// Arms' counters and the request → arm map that attributes feedback.
#[derive(Debug, Default)]
pub struct ExperimentStats {
    pub arms: HashMap<String, ArmStats>,
    requests: HashMap<String, String>,
    order: VecDeque<String>,
}

/// [`ExperimentStats`] in a serializable, canonical form (snapshots).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatsParts {
    /// Sorted by arm.
    arms: Vec<(String, ArmStats)>,
    /// Tracked requests and their arm, oldest first.
    requests: Vec<(String, String)>,
}

impl ExperimentStats {
    pub fn parts(&self) -> StatsParts {
        let mut arms: Vec<(String, ArmStats)> = self
            .arms
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        arms.sort_by(|a, b| a.0.cmp(&b.0));
        let requests = self
            .order
            .iter()
            .filter_map(|r| self.requests.get(r).map(|a| (r.clone(), a.clone())))
            .collect();
        StatsParts { arms, requests }
    }

    pub fn from_parts(p: StatsParts) -> Self {
        Self {
            arms: p.arms.into_iter().collect(),
            order: p.requests.iter().map(|(r, _)| r.clone()).collect(),
            requests: p.requests.into_iter().collect(),
        }
    }

    pub fn apply(&mut self, e: &Event) {
        if e.kind == EventKind::Impression {
            let (Some(arm), Some(req)) = (&e.experiment, &e.request_id) else {
                return;
            };
            let stats = self.arms.entry(arm.clone()).or_default();
            stats.impressions += 1;
            if !self.requests.contains_key(req) {
                stats.requests += 1;
                self.requests.insert(req.clone(), arm.clone());
                self.order.push_back(req.clone());
                if self.order.len() > MAX_TRACKED_REQUESTS
                    && let Some(old) = self.order.pop_front()
                {
                    self.requests.remove(&old);
                }
            }
            return;
        }
        let Some(arm) = e.request_id.as_ref().and_then(|r| self.requests.get(r)) else {
            return;
        };
        let Some(s) = self.arms.get_mut(arm) else {
            return;
        };
        match e.kind {
            EventKind::Click | EventKind::View => s.clicks += 1,
            EventKind::Like | EventKind::Share | EventKind::Purchase => s.likes += 1,
            EventKind::Skip => s.skips += 1,
            EventKind::Hide => s.hides += 1,
            EventKind::Watch => {
                s.watches += 1;
                let v = f64::from(e.value);
                s.watch_seconds += v;
                s.watch_seconds_sq += v * v;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::Target;

    fn ev(kind: EventKind, req: &str, arm: Option<&str>, value: f32) -> Event {
        Event {
            kind,
            user_id: "u".into(),
            target: Target::Item("i".into()),
            value,
            fraction: None,
            ts: 0,
            request_id: Some(req.into()),
            surface: None,
            position: None,
            propensity: None,
            experiment: arm.map(str::to_string),
        }
    }

    #[test]
    fn feedback_is_attributed_to_the_arm_that_served_the_request() {
        let mut s = ExperimentStats::default();
        for _ in 0..3 {
            s.apply(&ev(EventKind::Impression, "r1", Some("x:a"), 1.0));
        }
        s.apply(&ev(EventKind::Impression, "r2", Some("x:b"), 1.0));
        s.apply(&ev(EventKind::Click, "r1", None, 1.0));
        s.apply(&ev(EventKind::Watch, "r2", None, 30.0));
        s.apply(&ev(EventKind::Click, "unknown", None, 1.0));
        let a = &s.arms["x:a"];
        assert_eq!((a.requests, a.impressions, a.clicks), (1, 3, 1));
        let b = &s.arms["x:b"];
        assert_eq!(
            (b.impressions, b.clicks, b.watches, b.watch_seconds),
            (1, 0, 1, 30.0)
        );
    }
}
