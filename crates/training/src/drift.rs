//! What drift monitoring observes, defined once for both sides: a served list (its items'
//! scores, sources, popularity and feature rows, whether the user was new) and an event
//! (its type, the item's category, the surface's rates), fed to a reference at training time
//! or to the live windows when serving; and the reference captured for a new bundle.

use crate::config::TrainConfig;
use crate::error::TrainingError;
use crate::lists::offline_env;
use crate::models::models_from_bundle_with;
use cascade_core::{Event, EventKind, Millis, Mutation, Target};
use cascade_drift::profile::PARTS;
use cascade_drift::{Observer, Profile, ProfileBuilder};
use cascade_features::{Inner, State};
use cascade_index::Bundle;
use cascade_pipeline::{Pipeline, PipelineResult, Query};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The reference's file in a bundle's directory (written beside the manifest).
pub const FILE: &str = "drift.json";

/// Share of the catalog counted as "the most popular" for the concentration signal.
const TOP_SHARE: f64 = 0.01;

/// One served item, as drift monitoring sees it.
#[derive(Debug, Clone, Copy)]
pub struct ServedItem {
    pub item: cascade_core::Idx,
    pub sources: u16,
    pub score: f32,
    pub prerank: f32,
    pub ranker: f32,
    /// Among the most popular 1 % of live items when served.
    pub popular: bool,
}

/// A served list, copied from the result (small: the request path hands it on at once).
#[derive(Debug, Clone)]
pub struct Served {
    pub at_ms: Millis,
    pub surface: String,
    pub model_version: String,
    pub request_id: String,
    /// The user, hashed (coverage counts each user once per block).
    pub user: u64,
    /// The user had no interaction before the request.
    pub cold: bool,
    pub items: Vec<ServedItem>,
    pub source_names: Arc<[String]>,
    /// Feature names, and the served items' rows (row-major), where features were hydrated.
    pub feature_names: Arc<[String]>,
    pub rows: Vec<f32>,
}

impl Served {
    /// Copies what drift monitoring needs from a result; `names` caches the source and
    /// feature names (they change only with the pipeline).
    pub fn of(r: &PipelineResult, names: &Names) -> Self {
        let ctx = &r.ctx;
        let global = &ctx.popular.global;
        let live = ctx.state.read().live_items;
        let top = ((live as f64 * TOP_SHARE).ceil() as usize).clamp(1, global.len().max(1));
        let popular = &global[..top.min(global.len())];
        let items = r
            .items
            .iter()
            .map(|c| ServedItem {
                item: c.item,
                sources: c.sources,
                score: c.score,
                prerank: c.prerank,
                ranker: c.ranker,
                popular: popular.iter().any(|&(i, _)| i == c.item),
            })
            .collect();
        let mut rows = Vec::new();
        if let Some(f) = &r.features {
            let width = f.schema.len();
            if width == names.1.len() {
                for c in &r.items {
                    let at = c.row as usize * width;
                    if c.sources != 0 && at + width <= f.values.len() {
                        rows.extend_from_slice(&f.values[at..at + width]);
                    }
                }
            }
        }
        Served {
            at_ms: ctx.query.now,
            surface: ctx.query.surface.clone(),
            model_version: r.model_version().to_string(),
            request_id: ctx.query.request_id.clone(),
            user: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                ctx.query.user_id.hash(&mut h);
                h.finish()
            },
            cold: ctx.user.interactions == 0,
            items,
            source_names: names.0.clone(),
            feature_names: names.1.clone(),
            rows,
        }
    }

    /// The source and feature names of a result, for [`Served::of`].
    pub fn names(r: &PipelineResult) -> Names {
        let features: Vec<String> = r
            .features
            .as_ref()
            .map(|f| f.schema.names().map(str::to_string).collect())
            .unwrap_or_default();
        (r.source_names.clone().into(), features.into())
    }
}

/// Features that read the clock: any window is one slice of their cycle (a five-minute window
/// has one hour of the day), so against a reference spread over days they would always
/// "drift". The rates per surface and the event mix carry what changes with the hour.
const CLOCK_FEATURES: [&str; 2] = ["hour_of_day", "day_of_week"];

/// Features of the user or the request, equal on every row of a list: counted once per
/// request, or a list of twenty would count as twenty independent users.
const PER_REQUEST_FEATURES: [&str; 14] = [
    "user_interactions",
    "user_events_1h",
    "user_events_1d",
    "user_events_7d",
    "user_events_30d",
    "user_skip_share",
    "user_clicks_7d",
    "user_likes_7d",
    "user_watches_7d",
    "user_skips_7d",
    "user_hours_since_last",
    "user_account_days",
    "device",
    "surface",
];

/// Signal names: `<surface>.<what>`, events' `events.<what>`.
pub fn observe_served(o: &mut dyn Observer, s: &Served) {
    let p = &s.surface;
    o.rate(&format!("{p}.cold_users"), u64::from(s.cold), 1);
    if s.items.is_empty() {
        return;
    }
    let (score, prerank, ranker) = (
        format!("{p}.score"),
        format!("{p}.prerank_score"),
        format!("{p}.ranker_score"),
    );
    let mix = format!("{p}.source_mix");
    let names: Vec<&str> = s
        .source_names
        .iter()
        .map(String::as_str)
        .chain(["fallback"])
        .collect();
    for n in &names {
        o.label(&mix, true, n, 0);
    }
    let mut popular = 0;
    for it in &s.items {
        o.numeric(&score, it.score);
        if it.prerank.is_finite() {
            o.numeric(&prerank, it.prerank);
        }
        if it.ranker.is_finite() {
            o.numeric(&ranker, it.ranker);
        }
        if it.sources == 0 {
            o.label(&mix, true, "fallback", 1);
        }
        for (slot, name) in s.source_names.iter().enumerate() {
            if it.sources & (1 << slot) != 0 {
                o.label(&mix, true, name, 1);
            }
        }
        popular += u64::from(it.popular);
    }
    o.rate(&format!("{p}.popular_share"), popular, s.items.len() as u64);
    let width = s.feature_names.len();
    if width > 0 {
        for (f, name) in s.feature_names.iter().enumerate() {
            if CLOCK_FEATURES.contains(&name.as_str()) {
                continue;
            }
            let key = format!("{p}.feature.{name}");
            if PER_REQUEST_FEATURES.contains(&name.as_str()) {
                // The same on every row: one observation per request, not per item.
                if let Some(row) = s.rows.chunks_exact(width).next() {
                    o.numeric(&key, row[f]);
                }
                continue;
            }
            for row in s.rows.chunks_exact(width) {
                o.numeric(&key, row[f]);
            }
        }
    }
}

/// A click (or view) on an item of a served list, joined by its request id: the item's
/// sources count in `<surface>.click_source_mix`, beside the mix of what was served. The
/// training log holds no clicks on Cascade's own lists, so this signal's reference is the
/// first window after activation (see the runtime's monitor).
pub fn observe_click(o: &mut dyn Observer, surface: &str, sources: u16, names: &[String]) {
    let mix = format!("{surface}.click_source_mix");
    for n in names.iter().map(String::as_str).chain(["fallback"]) {
        o.label(&mix, true, n, 0);
    }
    if sources == 0 {
        o.label(&mix, true, "fallback", 1);
    }
    for (slot, name) in names.iter().enumerate() {
        if sources & (1 << slot) != 0 {
            o.label(&mix, true, name, 1);
        }
    }
}

/// Served slots per observation of `<surface>.distinct_share`.
pub const COVERAGE_BLOCK: usize = 100;

/// Catalog coverage at a fixed sample size: per surface, the share of distinct items among
/// the lists of consecutive requests of different users, at least [`COVERAGE_BLOCK`] slots
/// at a time. Distinct items over a whole window grow with its traffic; over a fixed block
/// they do not, and they fall when lists converge on the same head items (a stuck trending
/// list, a collapsed embedding). A user's repeated requests (a session's refreshes, which a
/// reference sampled from the log hardly has) wait for the next block. Judged as a rate
/// (distinct items of the block's slots, one unit per block) by the two-proportion test,
/// not by PSI over its histogram: a collapse moves its level, while the histogram's shape
/// follows which users share a block (the live replay of the training world's continuation
/// reached PSI 0.25 on the shape alone, at the same mean). Holds one block per surface.
#[derive(Debug, Default)]
pub struct Coverage {
    blocks: HashMap<String, (Vec<u64>, Vec<cascade_core::Idx>)>,
}

impl Coverage {
    pub fn observe(&mut self, o: &mut dyn Observer, s: &Served) {
        if s.items.is_empty() {
            return;
        }
        if !self.blocks.contains_key(&s.surface) {
            self.blocks.insert(s.surface.clone(), Default::default());
        }
        let Some((users, block)) = self.blocks.get_mut(&s.surface) else {
            return;
        };
        if users.contains(&s.user) {
            return;
        }
        users.push(s.user);
        block.extend(s.items.iter().map(|it| it.item));
        if block.len() >= COVERAGE_BLOCK {
            let len = block.len();
            block.sort_unstable();
            block.dedup();
            o.rate(
                &format!("{}.distinct_share", s.surface),
                block.len() as u64,
                len as u64,
            );
            block.clear();
            users.clear();
        }
    }
}

/// Engagements an item needs to be among the most engaged 1 % of items (`u32::MAX` when
/// none has any): the bar of the `events.top_item_share` signal.
pub fn top_engagements(g: &Inner) -> u32 {
    top_of(g.engagements.clone(), g.live_items)
}

/// [`top_engagements`] of a copy of the counts, so a caller can take it under the state's
/// lock and select outside it.
pub fn top_of(mut counts: Vec<u32>, live_items: usize) -> u32 {
    counts.retain(|&c| c > 0);
    if counts.is_empty() {
        return u32::MAX;
    }
    let k = ((live_items as f64 * TOP_SHARE).ceil() as usize).clamp(1, counts.len()) - 1;
    let (_, nth, _) = counts.select_nth_unstable_by(k, |a, b| b.cmp(a));
    (*nth).max(1)
}

/// An event: engagements by type and by the item's first category, and whether the item was
/// among the most engaged 1 % (`top`: see [`top_engagements`]) — the concentration of what
/// users engage with; per surface, impressions as trials and clicks, likes and skips as hits
/// of their rates.
pub fn observe_event(o: &mut dyn Observer, e: &Event, g: &Inner, top: u32) {
    if e.kind != EventKind::Impression {
        for k in EventKind::ALL
            .iter()
            .filter(|k| **k != EventKind::Impression)
        {
            o.label("events.type", false, k.as_str(), 0);
        }
        o.label("events.type", false, e.kind.as_str(), 1);
        if let Target::Item(id) = &e.target {
            let cat = g
                .items
                .get(id)
                .and_then(|i| g.item(i))
                .and_then(|r| r.categories.first().copied())
                .and_then(|c| g.categories.name(c))
                .unwrap_or("none");
            o.label("events.category", false, cat, 1);
            let count = g
                .items
                .get(id)
                .and_then(|i| g.engagements.get(i as usize).copied())
                .unwrap_or(0);
            o.rate("events.top_item_share", u64::from(count >= top), 1);
        }
    }
    let Some(surface) = &e.surface else { return };
    let (hits, trials) = match e.kind {
        EventKind::Impression => (0, 1),
        _ => (1, 0),
    };
    match e.kind {
        EventKind::Impression => {
            for r in ["ctr", "like_rate", "skip_rate"] {
                o.rate(&format!("{surface}.{r}"), hits, trials);
            }
        }
        EventKind::Click | EventKind::View => o.rate(&format!("{surface}.ctr"), hits, trials),
        EventKind::Like | EventKind::Share | EventKind::Purchase => {
            o.rate(&format!("{surface}.like_rate"), hits, trials)
        }
        EventKind::Skip => o.rate(&format!("{surface}.skip_rate"), hits, trials),
        _ => {}
    }
}

/// Engagements whose events the reference takes (the newest), and requests it serves.
const REFERENCE_EVENT_SHARE: f64 = 0.1;

/// The reference of the bundle at `dir` (trained on `state`, whose log is `mutations`): the
/// newest tenth of the training log replayed as live traffic is seen — the state rebuilt up
/// to the start of that window, then its events applied in order, and before a sampled
/// engagement (every k-th, up to `reference_requests`) a request of that user through
/// every surface at that instant, on the state as it was then. A user's recency, activity,
/// newness and the items' counters therefore look as they did live, not as at the end.
pub fn capture(
    config: &dyn TrainConfig,
    drift: &cascade_drift::DriftSection,
    state: &Arc<State>,
    dir: &Path,
    mutations: &[Mutation],
) -> Result<Profile, TrainingError> {
    let bundle = Bundle::load(dir, config.models().hnsw)
        .map_err(|e| TrainingError::Io(format!("bundle: {e}")))?;
    let version = bundle.manifest.version.clone();
    let total = events_of(mutations).count();
    let from = ((total as f64) * (1.0 - REFERENCE_EVENT_SHARE)) as usize;
    // The window's engagements, evenly thinned.
    let engagements = events_of(mutations)
        .skip(from)
        .filter(|e| e.kind != EventKind::Impression)
        .count();
    let step = (engagements / drift.reference_requests.max(1)).max(1);
    // The window's events in consecutive parts: each signal's own variation over time is
    // measured between them.
    let span = total - from;
    let top = top_engagements(&state.read());
    let replay = Arc::new(config.features().new_state());
    let mut bundle = Some(bundle);
    let mut serving: Option<(cascade_pipeline::Env, Vec<Named>)> = None;
    let mut names: HashMap<String, Names> = HashMap::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainingError::Io(e.to_string()))?;
    let mut b = ProfileBuilder::default();
    let mut coverage = Coverage::default();
    let (mut seen, mut engaged, mut asked) = (0usize, 0usize, 0usize);
    let (first_ts, last_ts) = window_span(mutations, from);
    let popular_every = (config.models().popular_refresh_ms as i64)
        .max((last_ts - first_ts) / POPULAR_REBUILDS)
        .max(1);
    let mut popular_at = i64::MIN / 2;
    for m in mutations {
        let Mutation::Events(events) = m else {
            replay.apply(m);
            continue;
        };
        if seen + events.len() <= from {
            seen += events.len();
            replay.apply(m);
            continue;
        }
        let mut pending: Vec<Event> = Vec::new();
        for e in events {
            if seen == from && serving.is_none() {
                // The bundle mapped onto the catalog as the window opens (as an engine
                // loading it then would).
                if !pending.is_empty() {
                    replay.apply(&Mutation::Events(std::mem::take(&mut pending)));
                }
                if let Some(bundle) = bundle.take() {
                    // Retrieval retrained on the past alone: the bundle's own embeddings and
                    // co-visitation saw the window, so its users' next items would score as
                    // they never do live (in-sample), and every reference would look drifted
                    // from the first live window. The ranker stays the bundle's.
                    let mut shadow = crate::artifacts::train(
                        &replay,
                        config,
                        &crate::artifacts::TrainOptions::default(),
                        &|_, _, _| {},
                    );
                    shadow.manifest = bundle.manifest;
                    shadow.ranker = bundle.ranker;
                    let models =
                        models_from_bundle_with(&replay, config.models(), shadow, None, false);
                    let (env, _) = offline_env(config, &replay, models)?;
                    let pipelines = config
                        .surfaces()
                        .iter()
                        .map(|(name, surface)| {
                            cascade_surfaces::build_pipeline(surface, name, None, None, &env.pool)
                                .map(|p| (name.clone(), Arc::new(p)))
                                .map_err(TrainingError::Config)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    serving = Some((env, pipelines));
                }
            }
            seen += 1;
            if seen > from {
                b.part((seen - from) * PARTS / span.max(1));
            }
            if seen <= from {
                pending.push(e.clone());
                continue;
            }
            if e.kind != EventKind::Impression {
                let ask = engaged % step == 0 && asked < drift.reference_requests;
                engaged += 1;
                if ask {
                    asked += 1;
                    if !pending.is_empty() {
                        replay.apply(&Mutation::Events(std::mem::take(&mut pending)));
                    }
                    // The popular lists as the data loop keeps them: rebuilt as time passes
                    // (every `popular_refresh_ms`, at most `POPULAR_REBUILDS` times).
                    if let Some((env, _)) = &serving
                        && e.ts - popular_at >= popular_every
                    {
                        let m = config.models();
                        let lists = cascade_index::PopularLists::build_live(
                            &replay.read(),
                            m.popular_size,
                            m.popular_per_category,
                        );
                        env.models.publish_popular(lists);
                        popular_at = e.ts;
                    }
                    let surfaces = serving
                        .iter()
                        .flat_map(|(env, p)| p.iter().map(move |x| (env, x)));
                    for (env, (name, pipeline)) in surfaces {
                        let q = Query::new(name, &e.user_id, REFERENCE_N, e.ts);
                        let r = rt.block_on(pipeline.execute(env, q));
                        let n = names
                            .entry(name.clone())
                            .or_insert_with(|| Served::names(&r));
                        let served = Served::of(&r, n);
                        observe_served(&mut b, &served);
                        coverage.observe(&mut b, &served);
                    }
                }
            }
            observe_event(&mut b, e, &replay.read(), top);
            pending.push(e.clone());
        }
        if !pending.is_empty() {
            replay.apply(&Mutation::Events(pending));
        }
    }
    Ok(b.finish(
        &format!("bundle {version}"),
        cascade_core::time::now_millis(),
        drift.bins,
        drift.max_labels,
    ))
}

/// A surface's pipeline by name.
type Named = (String, Arc<Pipeline>);

/// The source and feature names of a surface's results.
pub type Names = (Arc<[String]>, Arc<[String]>);

/// Popular-list rebuilds while capturing a reference, at most (each scans the catalog): live,
/// the lists trail the events by `popular_refresh_ms`; a reference whose trending list is
/// hours old would see fewer rising items than any live window.
const POPULAR_REBUILDS: i64 = 500;

/// The log's events in order.
fn events_of(mutations: &[Mutation]) -> impl Iterator<Item = &Event> {
    mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Events(v) => Some(v.iter()),
            _ => None,
        })
        .flatten()
}

/// The first and last event times from the `from`-th event on.
fn window_span(mutations: &[Mutation], from: usize) -> (Millis, Millis) {
    let mut ts = events_of(mutations).skip(from).map(|e| e.ts);
    let first = ts.next().unwrap_or(0);
    (first, ts.fold(first, i64::max))
}

/// The list length the reference asks for: the API's default `n`.
const REFERENCE_N: usize = 20;

/// Writes `profile` into the bundle directory `dir` atomically.
pub fn write(dir: &Path, profile: &Profile) -> Result<(), TrainingError> {
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let json = serde_json::to_vec(profile).map_err(|e| TrainingError::Io(e.to_string()))?;
    std::fs::write(&tmp, json).map_err(|e| TrainingError::Io(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(FILE))
        .map_err(|e| TrainingError::Io(format!("{}: {e}", dir.display())))
}

/// The reference stored with the bundle at `dir`, if it has one (older bundles do not).
pub fn read(dir: &Path) -> Option<Profile> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_drift::profile::ProfileBuilder;

    fn served(user: u64, items: impl Iterator<Item = u32>) -> Served {
        Served {
            at_ms: 0,
            surface: "home".into(),
            model_version: "v".into(),
            request_id: format!("r{user}"),
            user,
            cold: false,
            items: items
                .map(|i| ServedItem {
                    item: i,
                    sources: 1,
                    score: 0.0,
                    prerank: 0.0,
                    ranker: 0.0,
                    popular: false,
                })
                .collect(),
            source_names: Arc::from(vec!["popular".to_string()]),
            feature_names: Arc::from(Vec::<String>::new()),
            rows: Vec::new(),
        }
    }

    fn share(lists: impl Fn(u64) -> Served) -> (u64, u64, u64) {
        let (mut b, mut c) = (ProfileBuilder::default(), Coverage::default());
        for u in 0..40 {
            c.observe(&mut b, &lists(u));
        }
        let p = b.finish("t", 0, 10, 10);
        let s = p.get("home.distinct_share").expect("coverage sketch");
        (s.counts[0], s.counts[1], s.units())
    }

    #[test]
    fn coverage_is_the_distinct_share_of_each_block_of_different_users() {
        // Forty users, ten items each: four blocks of 100 slots.
        let (hits, trials, units) = share(|u| served(u, (0..10).map(move |i| u as u32 * 10 + i)));
        assert_eq!((hits, trials, units), (400, 400, 4));
        // Lists converged on the same head: ten distinct per block.
        let (hits, trials, _) = share(|u| served(u, 0..10));
        assert_eq!((hits, trials), (40, 400));
        // One user refreshing waits for other users: no block completes.
        let (mut b, mut c) = (ProfileBuilder::default(), Coverage::default());
        for _ in 0..40 {
            c.observe(&mut b, &served(7, 0..10));
        }
        assert!(
            b.finish("t", 0, 10, 10)
                .get("home.distinct_share")
                .is_none()
        );
    }
}
