//! The server's own metrics history for the dashboard: requests, latencies per surface and
//! per stage, errors, shed load, `degraded` reasons and ingest, folded every
//! [`INTERVAL`] into a bounded ring (the last [`KEEP`] samples), so the page needs no
//! Prometheus. Recording is a short lock and a few counter bumps, never an allocation once a
//! surface, stage or reason has been seen.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How often the current window becomes a sample.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: 30 minutes at [`INTERVAL`].
pub const KEEP: usize = 900;
/// Buckets of a latency histogram: bucket `b` holds [`lower(b)`, `lower(b + 1)`) ms.
const BUCKETS: usize = 64;
/// The first bucket's upper edge and the growth per bucket (0.01 ms ×1.25: up to ~16 s).
const FIRST_MS: f64 = 0.01;
const GROWTH: f64 = 1.25;

/// A fixed log-bucket latency histogram.
#[derive(Debug, Clone)]
struct Latency {
    counts: [u32; BUCKETS],
    n: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            n: 0,
        }
    }
}

impl Latency {
    fn record(&mut self, ms: f64) {
        let b = if ms <= FIRST_MS {
            0
        } else {
            ((ms / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[b.min(BUCKETS - 1)] += 1;
        self.n += 1;
    }

    /// The upper edge of the bucket holding quantile `q` (within a factor 1.25 of the truth).
    fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = (q * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return FIRST_MS * GROWTH.powi(b as i32);
            }
        }
        FIRST_MS * GROWTH.powi(BUCKETS as i32 - 1)
    }

    fn summary(&self, seconds: f64) -> LatencySummary {
        LatencySummary {
            per_s: self.n as f64 / seconds,
            p50_ms: self.quantile(0.50),
            p95_ms: self.quantile(0.95),
            p99_ms: self.quantile(0.99),
        }
    }
}

/// Rate and latency quantiles over one interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// What one interval saw.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// End of the interval, Unix ms.
    pub t_ms: i64,
    /// Recommendation requests per surface.
    pub surfaces: BTreeMap<String, LatencySummary>,
    /// Pipeline stages (over every surface).
    pub stages: BTreeMap<String, LatencySummary>,
    /// Responses per second that named each `degraded` reason.
    pub degraded: BTreeMap<String, f64>,
    /// HTTP responses per second: all, 4xx, 5xx, and shed (503 `overloaded`).
    pub http_per_s: f64,
    pub client_errors_per_s: f64,
    pub server_errors_per_s: f64,
    pub shed_per_s: f64,
    /// Events applied per second (the state's counter).
    pub events_per_s: f64,
    /// `POST /v1/events` from receipt to durable and applied (visible to requests): the
    /// embedded server's freshness lag.
    pub ingest: LatencySummary,
}

#[derive(Debug, Default)]
struct Window {
    surfaces: HashMap<String, Latency>,
    stages: HashMap<&'static str, Latency>,
    degraded: HashMap<String, u64>,
    http: u64,
    client_errors: u64,
    server_errors: u64,
    shed: u64,
    ingest: Latency,
}

#[derive(Debug, Default)]
struct Inner {
    window: Window,
    ring: VecDeque<Sample>,
    last_events: Option<u64>,
}

/// The history; one per server.
#[derive(Debug, Default)]
pub struct History(Mutex<Inner>);

impl History {
    /// One recommendation response: its surface, total and per-stage milliseconds and what
    /// degraded.
    pub fn recommendation(
        &self,
        surface: &str,
        ms: f64,
        stages: &[(&'static str, f64)],
        degraded: &[String],
    ) {
        let mut g = self.0.lock();
        let w = &mut g.window;
        match w.surfaces.get_mut(surface) {
            Some(l) => l.record(ms),
            None => {
                let mut l = Latency::default();
                l.record(ms);
                w.surfaces.insert(surface.to_string(), l);
            }
        }
        for &(stage, ms) in stages {
            w.stages.entry(stage).or_default().record(ms);
        }
        for d in degraded {
            // The reason without its detail (`features:redis` → `features`), so a detail
            // per request cannot grow the window.
            let key = d.split(':').next().unwrap_or(d);
            match w.degraded.get_mut(key) {
                Some(c) => *c += 1,
                None => {
                    if w.degraded.len() < 64 {
                        w.degraded.insert(key.to_string(), 1);
                    }
                }
            }
        }
    }

    /// One HTTP response's status (`shed`: refused by the in-flight limit).
    pub fn http(&self, status: u16, shed: bool) {
        let mut g = self.0.lock();
        let w = &mut g.window;
        w.http += 1;
        w.client_errors += u64::from((400..500).contains(&status));
        w.server_errors += u64::from(status >= 500);
        w.shed += u64::from(shed);
    }

    /// One accepted events batch: milliseconds until it was durable and applied.
    pub fn ingest(&self, ms: f64) {
        self.0.lock().window.ingest.record(ms);
    }

    /// Closes the current window as a sample at `t_ms`, given the state's events counter.
    pub fn tick(&self, t_ms: i64, events: u64, seconds: f64) {
        let mut g = self.0.lock();
        let w = std::mem::take(&mut g.window);
        let per = |n: u64| n as f64 / seconds;
        let events_per_s = g.last_events.map_or(0.0, |e| per(events.saturating_sub(e)));
        g.last_events = Some(events);
        let sample = Sample {
            t_ms,
            surfaces: w
                .surfaces
                .iter()
                .map(|(k, l)| (k.clone(), l.summary(seconds)))
                .collect(),
            stages: w
                .stages
                .iter()
                .map(|(k, l)| ((*k).to_string(), l.summary(seconds)))
                .collect(),
            degraded: w
                .degraded
                .iter()
                .map(|(k, &c)| (k.clone(), per(c)))
                .collect(),
            http_per_s: per(w.http),
            client_errors_per_s: per(w.client_errors),
            server_errors_per_s: per(w.server_errors),
            shed_per_s: per(w.shed),
            events_per_s,
            ingest: w.ingest.summary(seconds),
        };
        // The surfaces, stages and reasons seen stay as keys: recording never allocates again.
        for (k, _) in w.surfaces {
            g.window.surfaces.insert(k, Latency::default());
        }
        if g.ring.len() >= KEEP {
            g.ring.pop_front();
        }
        g.ring.push_back(sample);
    }

    /// The samples after `since_ms`, oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<Sample> {
        let g = self.0.lock();
        g.ring
            .iter()
            .filter(|s| s.t_ms > since_ms)
            .cloned()
            .collect()
    }
}

/// Ticks `history` every [`INTERVAL`] while the server holds it (the task keeps a weak
/// reference to it and only the state, never the engine, whose data dir a restart reopens).
pub fn spawn_sampler(history: &Arc<History>, state: Arc<cascade_features::State>) {
    let weak = Arc::downgrade(history);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = std::time::Instant::now();
        loop {
            tick.tick().await;
            let Some(h) = weak.upgrade() else {
                return;
            };
            let seconds = last.elapsed().as_secs_f64().max(0.001);
            last = std::time::Instant::now();
            let events = state.stats().events;
            h.tick(cascade_core::time::now_millis(), events, seconds);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket_of_the_truth() {
        let mut l = Latency::default();
        for k in 1..=1000 {
            l.record(f64::from(k) / 100.0); // 0.01 .. 10 ms
        }
        for (q, truth) in [(0.5, 5.0), (0.95, 9.5), (0.99, 9.9)] {
            let got = l.quantile(q);
            assert!(
                got >= truth && got <= truth * GROWTH,
                "q{q}: {got} vs {truth}"
            );
        }
        assert_eq!(Latency::default().quantile(0.5), 0.0);
    }

    #[test]
    fn a_tick_turns_the_window_into_rates_and_the_ring_stays_bounded() {
        let h = History::default();
        h.tick(0, 100, 2.0);
        for _ in 0..10 {
            h.recommendation("home", 4.0, &[("gbdt", 1.0)], &["features:redis".into()]);
        }
        h.http(200, false);
        h.http(503, true);
        h.ingest(3.0);
        h.tick(2000, 160, 2.0);
        let s = h.since(0);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.surfaces["home"].per_s, 5.0);
        assert!(s.surfaces["home"].p50_ms >= 4.0 && s.surfaces["home"].p50_ms <= 5.0);
        assert_eq!(s.stages["gbdt"].per_s, 5.0);
        assert_eq!(s.degraded["features"], 5.0);
        assert_eq!(
            (s.http_per_s, s.server_errors_per_s, s.shed_per_s),
            (1.0, 0.5, 0.5)
        );
        assert_eq!(s.events_per_s, 30.0);
        assert_eq!(s.ingest.per_s, 0.5);
        for k in 0..(KEEP as i64 + 5) {
            h.tick(4000 + k, 160, 2.0);
        }
        assert_eq!(h.since(i64::MIN).len(), KEEP);
        // A quiet surface still reports, at zero.
        assert_eq!(
            h.since(i64::MIN).last().map(|s| s.surfaces["home"].per_s),
            Some(0.0)
        );
    }
}
