//! The live drift monitor: served lists (the `drift` side effect) and applied events reach it
//! through a bounded queue, never waiting; its thread counts them into time-bucketed windows
//! over the active bundle's reference (a bundle without one gets the first window after its
//! activation as its reference). Reports compare a window with the reference and join each
//! model version's offline metrics with its online rates; the thread keeps the gauges and
//! logs status changes over the default window.
//!
//! Scale-out: every replica keeps its own windows. Each applies every event from the bus, so
//! the event signals are the whole stream on every replica; served lists are the replica's
//! share of the traffic, a uniform sample of it behind a load balancer. Alerting on any
//! replica's gauge (or the maximum across replicas) needs no shared state on the request path.

use cascade_core::{Event, EventKind, Millis, Mutation};
use cascade_drift::{DriftSection, Profile, ProfileBuilder, Signal, Status, Windows, evaluate};
use cascade_features::State;
use cascade_pipeline::{PipelineResult, RequestCtx};
use cascade_surfaces::ServedObserver;
use cascade_training::drift::{
    Coverage, Names, Served, observe_click, observe_event, observe_served,
};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

/// Request ids remembered to attribute feedback to the model version and the sources that
/// served it.
const MAX_REQUESTS: usize = 100_000;

/// A served list as feedback finds it by request id.
#[derive(Debug)]
struct Joined {
    version: String,
    surface: String,
    /// `(item, sources)` of each served item.
    items: Box<[(cascade_core::Idx, u16)]>,
    names: Arc<[String]>,
}

impl Joined {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.version.len()
            + self.surface.len()
            + self.items.len() * std::mem::size_of::<(cascade_core::Idx, u16)>()
    }
}

enum Obs {
    Served(Box<Served>),
    Events(Vec<Event>),
}

/// See the module documentation.
#[derive(Debug)]
pub struct DriftMonitor {
    cfg: DriftSection,
    tx: SyncSender<Obs>,
    live: Arc<Mutex<Live>>,
    names: RwLock<HashMap<String, Names>>,
    dropped: Arc<AtomicU64>,
    /// Observations queued, and folded by the thread (see [`DriftMonitor::flush`]).
    sent: AtomicU64,
    folded: Arc<AtomicU64>,
    models_dir: PathBuf,
    /// The second being admitted (unix s) and the lists taken in it (`lists_per_s`).
    second: AtomicU64,
    taken: AtomicU64,
}

#[derive(Debug)]
struct Live {
    reference: Profile,
    windows: Windows,
    /// Collecting the first window as the reference (the bundle had none) until this time.
    adopting: Option<(ProfileBuilder, Millis)>,
    active: String,
    versions: BTreeMap<String, VersionStats>,
    requests: HashMap<String, Joined>,
    order: VecDeque<String>,
    /// Bytes the request join holds now (bounded by `MAX_REQUESTS` lists).
    join_bytes: usize,
    /// Signals the training log cannot show (clicks on Cascade's own lists: the click source
    /// mix), collected over the first window after activation and then added to a bundle's
    /// reference.
    late: Option<(ProfileBuilder, Millis)>,
    coverage: Coverage,
    status: HashMap<String, Status>,
    observed: u64,
    /// Engagements an item needs to be among the most engaged 1 % (refreshed per bucket).
    top_engagements: u32,
}

#[derive(Debug, Clone, Default)]
struct VersionStats {
    first_ms: Millis,
    last_ms: Millis,
    requests: u64,
    impressions: u64,
    clicks: u64,
    likes: u64,
}

impl DriftMonitor {
    /// A monitor for the bundle `version` whose reference is `reference` (`None`: adopt the
    /// first window), and its thread.
    pub fn spawn(
        cfg: DriftSection,
        state: Arc<State>,
        models_dir: PathBuf,
        version: &str,
        reference: Option<Profile>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue);
        let live = Arc::new(Mutex::new(Live::new(&cfg, version, reference)));
        let m = Arc::new(Self {
            cfg: cfg.clone(),
            tx,
            live: live.clone(),
            names: RwLock::new(HashMap::new()),
            dropped: Arc::new(AtomicU64::new(0)),
            sent: AtomicU64::new(0),
            folded: Arc::new(AtomicU64::new(0)),
            models_dir,
            second: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        });
        let folded = m.folded.clone();
        let thread = std::thread::Builder::new()
            .name("cascade-drift".into())
            .spawn(move || run(cfg, rx, live, state, stop, folded))?;
        Ok((m, thread))
    }

    /// The active bundle changed: its reference (or the first window) from now on.
    pub fn activate(&self, version: &str, reference: Option<Profile>) {
        let mut l = self.live.lock();
        let versions = std::mem::take(&mut l.versions);
        *l = Live::new(&self.cfg, version, reference);
        l.versions = versions;
    }

    /// Events as they are applied (never waits; a full queue drops them, counted).
    pub fn observe_mutation(&self, m: &Mutation) {
        if let Mutation::Events(v) = m {
            self.send(Obs::Events(v.clone()));
        }
    }

    /// Events read back from the log (`cascade drift --data-dir`): waits for room in the
    /// queue instead of dropping — for offline tools, never the request path.
    pub fn feed(&self, events: Vec<Event>) {
        if self.tx.send(Obs::Events(events)).is_ok() {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a list served at `now_ms` is taken: at most `lists_per_s` per second of the
    /// server's clock. Two threads crossing a second may both reset the count; a second then
    /// takes a few lists more, which the sample does not mind.
    fn admit(&self, now_ms: Millis) -> bool {
        let max = u64::from(self.cfg.lists_per_s);
        if max == 0 {
            return true;
        }
        let sec = now_ms.max(0) as u64 / 1000;
        if self.second.load(Ordering::Relaxed) != sec {
            self.second.store(sec, Ordering::Relaxed);
            self.taken.store(0, Ordering::Relaxed);
        }
        self.taken.fetch_add(1, Ordering::Relaxed) < max
    }

    fn send(&self, o: Obs) {
        match self.tx.try_send(o) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("cascade_drift_dropped_total").increment(1);
            }
        }
    }

    /// Waits (up to `timeout`) until the thread has folded everything queued so far; true
    /// when it has. For tools and tests that read a report right after their traffic.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.sent.load(Ordering::Relaxed);
        let until = std::time::Instant::now() + timeout;
        while self.folded.load(Ordering::Relaxed) < target {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// The report over the last `window_s` seconds (the default window when `None`).
    pub fn report(&self, window_s: Option<u64>) -> DriftReport {
        self.report_at(cascade_core::time::now_millis(), window_s)
    }

    /// The report over the `window_s` seconds up to `now` (server clock, unix ms): the
    /// buckets are in server time, so a past `now` reads an earlier window still retained.
    pub fn report_at(&self, now: Millis, window_s: Option<u64>) -> DriftReport {
        let window_s = window_s.unwrap_or(self.cfg.window_s);
        let l = self.live.lock();
        let window = l.windows.window(now, (window_s * 1000) as i64);
        let signals = evaluate(&l.reference, &window, &self.cfg);
        let reference_bytes: usize = l
            .reference
            .sketches
            .iter()
            .map(|s| {
                s.name.len()
                    + s.edges.len() * 4
                    + s.labels.iter().map(String::len).sum::<usize>()
                    + s.counts.len() * 8
            })
            .sum();
        let reference = ReferenceInfo {
            source: if l.adopting.is_some() {
                "collecting the first window after activation".into()
            } else {
                l.reference.source.clone()
            },
            model_version: l.active.clone(),
            captured_at_ms: l.reference.captured_at_ms,
            signals: l.reference.sketches.len(),
        };
        let info = WindowInfo {
            seconds: window_s,
            from_ms: now - (window_s * 1000) as i64,
            to_ms: now,
            observed: l.observed,
            dropped: self.dropped.load(Ordering::Relaxed),
            memory_bytes: l.windows.max_bytes(),
            join_bytes: l.join_bytes,
            reference_bytes,
        };
        let versions = l
            .versions
            .iter()
            .map(|(v, s)| self.version_report(v, s, v == &l.active))
            .collect();
        DriftReport {
            reference,
            window: info,
            signals,
            versions,
        }
    }

    fn version_report(&self, version: &str, s: &VersionStats, active: bool) -> VersionReport {
        let manifest = cascade_index::Bundle::read_manifest(&self.models_dir.join(version)).ok();
        let rate = |k: u64| (s.impressions > 0).then(|| k as f64 / s.impressions as f64);
        VersionReport {
            version: version.to_string(),
            active,
            first_served_ms: s.first_ms,
            last_served_ms: s.last_ms,
            requests: s.requests,
            impressions: s.impressions,
            clicks: s.clicks,
            likes: s.likes,
            ctr: rate(s.clicks),
            like_rate: rate(s.likes),
            offline_recall_at_10: manifest
                .as_ref()
                .and_then(|m| m.metrics.holdout_recall_at_10),
            offline_ndcg_at_10: manifest
                .as_ref()
                .and_then(|m| m.metrics.ranker.as_ref())
                .and_then(|r| r.valid_ndcg_at_10),
        }
    }
}

impl ServedObserver for DriftMonitor {
    fn observe(&self, _ctx: &RequestCtx, result: &PipelineResult) {
        if !self.admit(cascade_core::time::now_millis()) {
            return;
        }
        let surface = &result.ctx.query.surface;
        let cached = self.names.read().get(surface).cloned();
        let names = match cached {
            Some(n)
                if result
                    .features
                    .as_ref()
                    .is_none_or(|f| f.schema.len() == n.1.len()) =>
            {
                n
            }
            _ => {
                let n = Served::names(result);
                self.names.write().insert(surface.clone(), n.clone());
                n
            }
        };
        let mut served = Served::of(result, &names);
        // Buckets follow the server's clock, not a client-supplied `now`.
        served.at_ms = cascade_core::time::now_millis();
        self.send(Obs::Served(Box::new(served)));
    }
}

impl Live {
    fn new(cfg: &DriftSection, version: &str, reference: Option<Profile>) -> Self {
        let now = cascade_core::time::now_millis();
        let (reference, adopting) = match reference.filter(|r| !r.is_empty()) {
            Some(r) => (r, None),
            None => (
                Profile::default(),
                Some((
                    ProfileBuilder::default(),
                    now + (cfg.window_s * 1000) as i64,
                )),
            ),
        };
        let buckets = (cfg.retention_s / cfg.bucket_s.max(1)).max(1) as usize;
        let late = (adopting.is_none()
            && !reference
                .sketches
                .iter()
                .any(|s| s.name.ends_with(".click_source_mix")))
        .then(|| {
            (
                ProfileBuilder::default(),
                now + (cfg.window_s * 1000) as i64,
            )
        });
        Self {
            windows: Windows::new(&reference, (cfg.bucket_s * 1000) as i64, buckets),
            reference,
            adopting,
            active: version.to_string(),
            versions: BTreeMap::new(),
            requests: HashMap::new(),
            order: VecDeque::new(),
            join_bytes: 0,
            late,
            coverage: Coverage::default(),
            status: HashMap::new(),
            observed: 0,
            top_engagements: u32::MAX,
        }
    }

    fn fold(&mut self, cfg: &DriftSection, o: &Obs, state: &State) {
        let now = cascade_core::time::now_millis();
        self.observed += 1;
        if self
            .adopting
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
            && let Some((b, _)) = self.adopting.take()
        {
            let r = b.finish(
                &format!("first window after activating {}", self.active),
                now,
                cfg.bins,
                cfg.max_labels,
            );
            let buckets = (cfg.retention_s / cfg.bucket_s.max(1)).max(1) as usize;
            self.windows = Windows::new(&r, (cfg.bucket_s * 1000) as i64, buckets);
            self.reference = r;
        }
        if self.late.as_ref().is_some_and(|(_, until)| now >= *until)
            && let Some((b, _)) = self.late.take()
        {
            let r = b.finish("", now, cfg.bins, cfg.max_labels);
            if r.is_empty() {
                // No click joined yet: another window.
                self.late = Some((
                    ProfileBuilder::default(),
                    now + (cfg.window_s * 1000) as i64,
                ));
            } else {
                self.windows.extend(&r.sketches);
                self.reference.sketches.extend(r.sketches);
                self.reference.sketches.sort_by(|a, b| a.name.cmp(&b.name));
                self.reference.sketches.dedup_by(|a, b| a.name == b.name);
            }
        }
        match o {
            Obs::Served(s) => {
                let v = self.versions.entry(s.model_version.clone()).or_default();
                if v.requests == 0 {
                    v.first_ms = s.at_ms;
                }
                v.requests += 1;
                v.last_ms = s.at_ms;
                // Feedback finds its version by request id; a request without one (an
                // embedding caller that sets none) is counted but cannot be joined.
                if !s.request_id.is_empty() {
                    if self.requests.len() >= MAX_REQUESTS
                        && let Some(old) = self.order.pop_front()
                        && let Some(j) = self.requests.remove(&old)
                    {
                        self.join_bytes -= j.bytes() + old.len();
                    }
                    let j = Joined {
                        version: s.model_version.clone(),
                        surface: s.surface.clone(),
                        items: s.items.iter().map(|i| (i.item, i.sources)).collect(),
                        names: s.source_names.clone(),
                    };
                    self.join_bytes += j.bytes() + s.request_id.len();
                    if let Some(j) = self.requests.insert(s.request_id.clone(), j) {
                        // A repeated id: the newer list answers its feedback.
                        self.join_bytes -= j.bytes() + s.request_id.len();
                    } else {
                        self.order.push_back(s.request_id.clone());
                    }
                }
                match &mut self.adopting {
                    Some((b, _)) => {
                        observe_served(b, s);
                        self.coverage.observe(b, s);
                    }
                    None => {
                        let mut w = self.windows.at(s.at_ms);
                        observe_served(&mut w, s);
                        self.coverage.observe(&mut w, s);
                    }
                }
            }
            Obs::Events(events) => {
                let g = state.read();
                let top = self.top_engagements;
                for e in events {
                    match &mut self.adopting {
                        Some((b, _)) => observe_event(b, e, &g, top),
                        None => observe_event(&mut self.windows.at(now), e, &g, top),
                    }
                    let Some(j) = e.request_id.as_ref().and_then(|r| self.requests.get(r)) else {
                        continue;
                    };
                    if matches!(e.kind, EventKind::Click | EventKind::View)
                        && let cascade_core::Target::Item(id) = &e.target
                        && let Some(i) = g.items.get(id)
                        && let Some(&(_, sources)) = j.items.iter().find(|(x, _)| *x == i)
                    {
                        match (&mut self.adopting, &mut self.late) {
                            (Some((b, _)), _) | (None, Some((b, _))) => {
                                observe_click(b, &j.surface, sources, &j.names)
                            }
                            (None, None) => observe_click(
                                &mut self.windows.at(now),
                                &j.surface,
                                sources,
                                &j.names,
                            ),
                        }
                    }
                    let Some(v) = self.versions.get_mut(&j.version) else {
                        continue;
                    };
                    match e.kind {
                        EventKind::Impression => v.impressions += 1,
                        EventKind::Click | EventKind::View => v.clicks += 1,
                        EventKind::Like | EventKind::Share | EventKind::Purchase => v.likes += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Gauges and status-change log lines over the default window.
    fn publish(&mut self, cfg: &DriftSection) {
        let now = cascade_core::time::now_millis();
        let window = self.windows.window(now, (cfg.window_s * 1000) as i64);
        for s in evaluate(&self.reference, &window, cfg) {
            metrics::gauge!("cascade_drift", "signal" => s.name.clone()).set(s.value);
            let before = self.status.insert(s.name.clone(), s.status);
            if before.is_some_and(|b| b != s.status) {
                let was = before.map_or("none", Status::as_str);
                match s.status {
                    Status::Alert | Status::Warn => tracing::warn!(
                        signal = %s.name, value = s.value, was, now = s.status.as_str(),
                        "drift signal changed status"
                    ),
                    _ => tracing::info!(
                        signal = %s.name, value = s.value, was, now = s.status.as_str(),
                        "drift signal changed status"
                    ),
                }
            }
        }
    }
}

fn run(
    cfg: DriftSection,
    rx: Receiver<Obs>,
    live: Arc<Mutex<Live>>,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    folded: Arc<AtomicU64>,
) {
    let every = Duration::from_secs(cfg.bucket_s.max(1));
    let mut last = std::time::Instant::now();
    let top = cascade_training::drift::top_engagements(&state.read());
    live.lock().top_engagements = top;
    while !stop.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(o) => {
                let mut l = live.lock();
                l.fold(&cfg, &o, &state);
                let mut n = 1;
                // Drain what else waits under the same lock.
                while let Ok(o) = rx.try_recv() {
                    l.fold(&cfg, &o, &state);
                    n += 1;
                }
                folded.fetch_add(n, Ordering::Relaxed);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if last.elapsed() >= every {
            // The selection over every item's count runs outside both locks.
            let (counts, live_items) = {
                let g = state.read();
                (g.engagements.clone(), g.live_items)
            };
            let top = cascade_training::drift::top_of(counts, live_items);
            let mut l = live.lock();
            l.top_engagements = top;
            l.publish(&cfg);
            last = std::time::Instant::now();
        }
    }
}

/// `GET /v1/admin/drift`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub reference: ReferenceInfo,
    pub window: WindowInfo,
    /// Worst first.
    #[schema(value_type = Vec<Object>)]
    pub signals: Vec<Signal>,
    /// Each model version served: offline metrics from its manifest beside its online rates.
    pub versions: Vec<VersionReport>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReferenceInfo {
    /// `bundle <version>`, `first window after activating <version>`, or still collecting.
    pub source: String,
    pub model_version: String,
    pub captured_at_ms: i64,
    pub signals: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WindowInfo {
    pub seconds: u64,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Observations (served lists and event batches) folded since the monitor started.
    pub observed: u64,
    /// Observations dropped because the monitor's queue was full.
    pub dropped: u64,
    /// Bytes the windows' counts take at most (the ring full): fixed by the reference's
    /// shape and `retention_s / bucket_s`, whatever the traffic.
    pub memory_bytes: usize,
    /// Bytes the join of feedback to served lists holds now (request ids, versions and each
    /// list's items and sources; at most the newest 100,000 lists).
    pub join_bytes: usize,
    /// Bytes of the reference's edges, labels and counts.
    pub reference_bytes: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionReport {
    pub version: String,
    pub active: bool,
    pub first_served_ms: i64,
    pub last_served_ms: i64,
    pub requests: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub likes: u64,
    pub ctr: Option<f64>,
    pub like_rate: Option<f64>,
    pub offline_recall_at_10: Option<f64>,
    pub offline_ndcg_at_10: Option<f64>,
}
