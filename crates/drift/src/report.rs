//! Comparing a live window with the reference: one signal per sketch, its measure, its
//! status against the thresholds (defaults, or the signal's own), and the bins that moved
//! most; and the configuration section that holds those thresholds.

use crate::measure::{clustered_z, jensen_shannon, psi};
use crate::profile::{Profile, Sketch, SketchKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a signal stands, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Alert,
    Warn,
    Ok,
    /// Too few observations on either side to say anything.
    InsufficientData,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alert => "alert",
            Status::Warn => "warn",
            Status::Ok => "ok",
            Status::InsufficientData => "insufficient_data",
        }
    }
}

/// Warn and alert levels of a measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub warn: f64,
    pub alert: f64,
}

/// `[drift]`: distribution-shift monitoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSection {
    pub enabled: bool,
    /// Live counts are kept per bucket of this many seconds...
    pub bucket_s: u64,
    /// ...for this long (the longest `window_s` a report can ask for).
    pub retention_s: u64,
    /// The window the gauges, the status log lines and `cascade drift` use by default.
    pub window_s: u64,
    /// Observations each side needs before a signal can warn or alert.
    pub min_count: u64,
    /// PSI levels (numeric and categorical signals).
    pub psi: Threshold,
    /// Jensen–Shannon levels (mixes: the candidate sources).
    pub js: Threshold,
    /// |z| levels of the two-proportion test (rates)...
    pub rate_z: Threshold,
    /// ...which also need the rate to move by at least this share of the reference's (a
    /// large sample makes a trivial change significant).
    pub rate_min_change: f64,
    /// The measure's levels rise to these multiples of a signal's own variation over the
    /// reference's period (`Sketch::noise`: between its parts), so a signal that normal
    /// traffic moves that much warns and alerts only beyond it.
    pub noise_warn: f64,
    pub noise_alert: f64,
    /// Per-signal levels by signal name, overriding the measure's (and the noise floor).
    pub signals: BTreeMap<String, Threshold>,
    /// Requests served at training time to capture a bundle's reference.
    pub reference_requests: usize,
    /// Bins per numeric signal (the reference's quantiles).
    pub bins: usize,
    /// Labels kept per categorical signal (the rest count as `other`).
    pub max_labels: usize,
    /// Observations waiting for the monitor's thread; beyond, new ones are dropped (and
    /// counted), so the request path never waits.
    pub queue: usize,
    /// Served lists the monitor takes per second at most (0: every one). The lists it takes
    /// are a uniform sample of the traffic, and at the default a five-minute window still
    /// holds 30,000 of them; above it a list costs the request path one atomic add. The
    /// events (the rates, the event mix) are always counted whole.
    pub lists_per_s: u32,
}

impl Default for DriftSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bucket_s: 10,
            retention_s: 3600,
            window_s: 300,
            min_count: 200,
            psi: Threshold {
                warn: 0.1,
                alert: 0.25,
            },
            js: Threshold {
                warn: 0.05,
                alert: 0.1,
            },
            rate_z: Threshold {
                warn: 3.0,
                alert: 5.0,
            },
            rate_min_change: 0.2,
            noise_warn: 1.5,
            noise_alert: 3.0,
            signals: BTreeMap::new(),
            reference_requests: 2000,
            bins: 10,
            max_labels: 30,
            queue: 4096,
            lists_per_s: 100,
        }
    }
}

impl DriftSection {
    /// Errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let check = |key: &str, t: &Threshold| {
            if !(t.warn.is_finite() && t.alert.is_finite() && 0.0 <= t.warn && t.warn <= t.alert) {
                return Err(format!("drift.{key}: need 0 <= warn <= alert"));
            }
            Ok(())
        };
        check("psi", &self.psi)?;
        check("js", &self.js)?;
        check("rate_z", &self.rate_z)?;
        if !(self.noise_warn.is_finite()
            && self.noise_alert.is_finite()
            && 0.0 <= self.noise_warn
            && self.noise_warn <= self.noise_alert)
        {
            return Err(
                "drift.noise_warn, drift.noise_alert: need 0 <= noise_warn <= noise_alert".into(),
            );
        }
        for (name, t) in &self.signals {
            check(&format!("signals.{name}"), t)?;
        }
        if self.bucket_s == 0 || self.bucket_s > 3600 {
            return Err("drift.bucket_s: must be 1..=3600".into());
        }
        if self.retention_s < self.bucket_s || self.retention_s / self.bucket_s > 10_000 {
            return Err(
                "drift.retention_s: must be at least bucket_s and at most 10,000 buckets".into(),
            );
        }
        if self.window_s == 0 || self.window_s > self.retention_s {
            return Err("drift.window_s: must be 1..=retention_s".into());
        }
        if !(2..=64).contains(&self.bins) {
            return Err("drift.bins: must be 2..=64".into());
        }
        if !(1..=1000).contains(&self.max_labels) {
            return Err("drift.max_labels: must be 1..=1000".into());
        }
        if !(0.0..=10.0).contains(&self.rate_min_change) {
            return Err("drift.rate_min_change: must be 0..=10".into());
        }
        if self.queue == 0 {
            return Err("drift.queue: must be positive".into());
        }
        Ok(())
    }

    /// The levels of a signal whose reference varies by `noise` between its halves.
    fn threshold(&self, name: &str, kind: SketchKind, noise: f64) -> Threshold {
        if let Some(t) = self.signals.get(name) {
            return *t;
        }
        let t = match kind {
            SketchKind::Numeric | SketchKind::Categorical => self.psi,
            SketchKind::Mix => self.js,
            // A rate's noise (its dispersion) widens the z's standard error instead.
            SketchKind::Rate => return self.rate_z,
        };
        Threshold {
            warn: t.warn.max(self.noise_warn * noise),
            alert: t.alert.max(self.noise_alert * noise),
        }
    }
}

/// A bin's share on each side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    pub bin: String,
    pub reference: f64,
    pub window: f64,
}

/// One compared signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub name: String,
    /// `psi`, `js` or `z` (the two-proportion statistic).
    pub kind: &'static str,
    pub value: f64,
    pub status: Status,
    pub reference_count: u64,
    pub window_count: u64,
    /// Rates: the reference's and the window's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_rate: Option<f64>,
    /// The bins whose share moved most (at most three).
    pub top_bins: Vec<Bin>,
    /// Every bin in order, reference against window (empty for rates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<Bin>,
    /// The reference's own variation ([`crate::profile::Sketch::noise`]) and the levels
    /// applied.
    pub noise: f64,
    pub warn_at: f64,
    pub alert_at: f64,
}

/// Every signal the window and the reference share, worst first (status, then value).
pub fn evaluate(reference: &Profile, window: &Profile, cfg: &DriftSection) -> Vec<Signal> {
    let mut out: Vec<Signal> = window
        .sketches
        .iter()
        .filter_map(|w| {
            let r = reference.get(&w.name)?;
            (r.kind == w.kind && r.counts.len() == w.counts.len()).then(|| compare(r, w, cfg))
        })
        .collect();
    out.sort_by(|a, b| {
        a.status
            .cmp(&b.status)
            .then(b.value.abs().total_cmp(&a.value.abs()))
            .then(a.name.cmp(&b.name))
    });
    out
}

fn compare(r: &Sketch, w: &Sketch, cfg: &DriftSection) -> Signal {
    let (rn, wn) = (r.total(), w.total());
    let t = cfg.threshold(&w.name, w.kind, r.noise);
    let enough = rn >= cfg.min_count && wn >= cfg.min_count;
    let level = |v: f64| {
        if !enough {
            Status::InsufficientData
        } else if v >= t.alert {
            Status::Alert
        } else if v >= t.warn {
            Status::Warn
        } else {
            Status::Ok
        }
    };
    let shares = |s: &Sketch| -> Vec<f64> {
        let n = s.total().max(1) as f64;
        s.counts.iter().map(|&c| c as f64 / n).collect()
    };
    match w.kind {
        SketchKind::Rate => {
            let (rh, wh) = (r.counts[0], w.counts[0]);
            // Over-dispersed in its reference (clustered engagements): a wider error.
            let z = clustered_z([rh, rn, r.units()], [wh, wn, w.units()]) / r.noise.max(1.0).sqrt();
            let (rr, wr) = (rh as f64 / rn.max(1) as f64, wh as f64 / wn.max(1) as f64);
            let moved = (wr - rr).abs() >= cfg.rate_min_change * rr.max(1.0 / rn.max(1) as f64);
            let status = match level(z.abs()) {
                Status::Alert | Status::Warn if !moved => Status::Ok,
                s => s,
            };
            Signal {
                name: w.name.clone(),
                kind: "z",
                value: z,
                status,
                reference_count: rn,
                window_count: wn,
                reference_rate: Some(rr),
                window_rate: Some(wr),
                top_bins: Vec::new(),
                bins: Vec::new(),
                noise: r.noise,
                warn_at: t.warn,
                alert_at: t.alert,
            }
        }
        kind => {
            let value = if kind == SketchKind::Mix {
                jensen_shannon(&r.counts, &w.counts)
            } else {
                psi(&r.counts, &w.counts)
            };
            let (rs, ws) = (shares(r), shares(w));
            let mut bins: Vec<Bin> = (0..w.counts.len())
                .map(|i| Bin {
                    bin: w.label(i),
                    reference: rs[i],
                    window: ws[i],
                })
                .collect();
            let all = bins.clone();
            bins.sort_by(|a, b| {
                (b.window - b.reference)
                    .abs()
                    .total_cmp(&(a.window - a.reference).abs())
            });
            bins.truncate(3);
            Signal {
                name: w.name.clone(),
                kind: if kind == SketchKind::Mix { "js" } else { "psi" },
                value,
                status: level(value),
                reference_count: rn,
                window_count: wn,
                reference_rate: None,
                window_rate: None,
                top_bins: bins,
                bins: all,
                noise: r.noise,
                warn_at: t.warn,
                alert_at: t.alert,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileBuilder;
    use crate::window::Windows;

    fn reference() -> Profile {
        let mut b = ProfileBuilder::default();
        for i in 0..5000 {
            b.numeric("score", (i % 100) as f32);
            b.trial("ctr", i % 10 == 0);
            b.labels("mix", true, &["a", "b"]);
            b.label("mix", true, if i % 2 == 0 { "a" } else { "b" }, 1);
        }
        b.finish("ref", 0, 10, 10)
    }

    #[test]
    fn the_same_population_is_ok_a_moved_one_alerts_and_few_observations_say_so() {
        let r = reference();
        let cfg = DriftSection::default();
        let mut w = Windows::new(&r, 1000, 100);
        let (s, c, m) = (
            w.slot("score").expect("score"),
            w.slot("ctr").expect("ctr"),
            w.slot("mix").expect("mix"),
        );
        for i in 0..5000 {
            w.add_numeric(0, s, ((i * 7) % 100) as f32);
            w.add_rate(0, c, i % 10 == 0);
            w.add_label(0, m, if i % 2 == 0 { "a" } else { "b" }, 1);
        }
        let same = evaluate(&r, &w.window(0, 1000), &cfg);
        assert_eq!(same.len(), 3);
        assert!(same.iter().all(|x| x.status == Status::Ok), "{same:?}");
        // Scores piled into the top decile, a CTR halved, one source gone.
        for i in 0..5000 {
            w.add_numeric(5000, s, 95.0 + (i % 5) as f32);
            w.add_rate(5000, c, i % 20 == 0);
            w.add_label(5000, m, "a", 1);
        }
        let moved = evaluate(&r, &w.window(5000, 1000), &cfg);
        assert!(moved.iter().all(|x| x.status == Status::Alert), "{moved:?}");
        let score = moved.iter().find(|x| x.name == "score").expect("score");
        assert_eq!(score.top_bins[0].bin, "> 89");
        // Ten observations: nothing to say.
        let mut few = Windows::new(&r, 1000, 100);
        for _ in 0..10 {
            few.add_numeric(0, s, 99.0);
        }
        let v = evaluate(&r, &few.window(0, 1000), &cfg);
        assert!(
            v.iter().all(|x| x.status == Status::InsufficientData),
            "{v:?}"
        );
        // A per-signal threshold wins over the measure's.
        let mut strict = cfg.clone();
        strict.signals.insert(
            "score".into(),
            Threshold {
                warn: 0.0,
                alert: 0.0,
            },
        );
        let v = evaluate(&r, &w.window(0, 1000), &strict);
        assert_eq!(
            v.iter().find(|x| x.name == "score").map(|x| x.status),
            Some(Status::Alert)
        );
    }

    #[test]
    fn a_signal_that_varies_within_its_reference_alarms_only_beyond_that() {
        // "What is trending": high in the first parts of the period, low in the last.
        let mut b = ProfileBuilder::default();
        for p in 0..crate::profile::PARTS {
            b.part(p);
            for i in 0..400 {
                let shift = if p < crate::profile::PARTS / 2 {
                    50.0
                } else {
                    0.0
                };
                b.numeric("trend", (i % 50) as f32 + shift);
                b.numeric("steady", (i % 100) as f32);
            }
        }
        let r = b.finish("ref", 0, 10, 10);
        let (trend, steady) = (r.get("trend").expect("t"), r.get("steady").expect("s"));
        assert!(trend.noise > 0.5, "{}", trend.noise);
        assert!(steady.noise < 0.01, "{}", steady.noise);
        // A window like the first parts: far from the whole reference, yet no further than
        // normal traffic moves it.
        let mut w = Windows::new(&r, 1000, 10);
        let (t, s) = (w.slot("trend").expect("t"), w.slot("steady").expect("s"));
        for i in 0..4000 {
            w.add_numeric(0, t, (i % 50) as f32 + 50.0);
            w.add_numeric(0, s, 95.0 + (i % 5) as f32);
        }
        let cfg = DriftSection::default();
        let v = evaluate(&r, &w.window(0, 1000), &cfg);
        let get = |n: &str| v.iter().find(|x| x.name == n).expect("signal");
        assert!(get("trend").value > cfg.psi.alert, "{:?}", get("trend"));
        assert_eq!(get("trend").status, Status::Ok, "{:?}", get("trend"));
        assert_eq!(get("trend").alert_at, cfg.noise_alert * trend.noise);
        // The steady signal keeps the configured levels.
        assert_eq!(get("steady").status, Status::Alert);
        assert_eq!(get("steady").alert_at, cfg.psi.alert);
    }
}
