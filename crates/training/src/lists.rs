//! The heavy ranker's training lists: point-in-time lists from the event log.
//!
//! When the log holds enough served responses (impressions with a request id), each of the
//! newest `label_fraction` of them is a list: the items it showed, labelled by the feedback
//! they received (attributed by request id, or within `attribution_window_s`), with features
//! computed on a state replayed up to just before the response and models trained only on
//! events before the first such response.
//!
//! Otherwise (MovieLens and other imported histories) each user's interactions are split in
//! time: the newest `label_fraction` (from the label
//! time `t_u` on) provide labels, and a state replayed from the log *without* any of the
//! user's events at or after `t_u` provides features, embeddings and candidates. The served
//! pipeline of the ranker's surface is run for the user on that state, and its pre-ranked
//! candidates become one list, each labelled by the blended feedback it received at or after
//! `t_u`. Training and serving therefore share every line of feature code.

use crate::config::TrainConfig;
use crate::error::TrainingError;
use crate::models::build_models;
use cascade_core::{Event, Millis, Mutation, Target};
use cascade_features::State;
use cascade_index::{ModelStore, Models};
use cascade_pipeline::{Candidates, CpuPool, Env, Pipeline, Query};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Ranked training lists with the features the surface hydrates.
#[derive(Debug, Default, Clone)]
pub struct RankerLists {
    pub names: Vec<String>,
    pub values: Vec<f32>,
    pub labels: Vec<f32>,
    /// `offsets[q]..offsets[q + 1]` are list `q`'s rows.
    pub offsets: Vec<usize>,
    /// The pre-ranker's score of each row (the order the heavy ranker must beat).
    pub prerank: Vec<f32>,
    /// The user of each list and the label time the list's features stop before.
    pub users: Vec<String>,
    pub label_times: Vec<Millis>,
    pub candidates_seconds: f64,
}

impl RankerLists {
    pub fn lists(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether list `q` is held out for validation (a stable hash of its user).
    pub fn is_valid(&self, q: usize, fraction: f64) -> bool {
        (fnv(&self.users[q]) % 10_000) as f64 / 10_000.0 < fraction
    }

    /// The lists as CSV (`list,valid,label,prerank,<features>`), for comparing with other
    /// learners on exactly these rows (`bench/peer_lightgbm.py`).
    pub fn write_csv(&self, path: &Path, valid_fraction: f64) -> std::io::Result<()> {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        write!(w, "list,valid,label,prerank")?;
        for n in &self.names {
            write!(w, ",{n}")?;
        }
        writeln!(w)?;
        let width = self.names.len();
        for q in 0..self.lists() {
            let valid = u8::from(self.is_valid(q, valid_fraction));
            for r in self.offsets[q]..self.offsets[q + 1] {
                write!(w, "{q},{valid},{},{}", self.labels[r], self.prerank[r])?;
                for v in &self.values[r * width..(r + 1) * width] {
                    write!(w, ",{v}")?;
                }
                writeln!(w)?;
            }
        }
        w.flush()
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Each user's label time: the time of the first of their newest `label_fraction`
/// interactions, for users with enough interactions strictly before it.
pub fn label_times(
    mutations: &[Mutation],
    cfg: &crate::config::RankerSection,
) -> HashMap<String, Millis> {
    let mut times: HashMap<&str, Vec<Millis>> = HashMap::new();
    for m in mutations {
        if let Mutation::Events(evs) = m {
            for e in evs {
                if e.kind.is_interaction() && matches!(e.target, Target::Item(_)) {
                    times.entry(e.user_id.as_str()).or_default().push(e.ts);
                }
            }
        }
    }
    let mut out = HashMap::new();
    for (user, mut ts) in times {
        if ts.len() < cfg.min_interactions.max(2) {
            continue;
        }
        ts.sort_unstable();
        let k = ((ts.len() as f64 * cfg.label_fraction).floor() as usize).max(1);
        let t = ts[ts.len() - k];
        // Ties at the cut move to the label side, so features need events strictly before.
        if ts[0] < t {
            out.insert(user.to_string(), t);
        }
    }
    out
}

/// The state without any event of a labelled user at or after their label time, and the
/// blended label of each (user, item) from those withheld events.
pub fn earlier_state(
    config: &dyn TrainConfig,
    mutations: &[Mutation],
    cuts: &HashMap<String, Millis>,
) -> (State, HashMap<String, HashMap<String, f32>>) {
    let weights = &config.models().ranker.labels;
    let state = config.features().new_state();
    let mut labels: HashMap<String, HashMap<String, f32>> = HashMap::new();
    for m in mutations {
        match m {
            Mutation::Events(evs) => {
                let kept: Vec<Event> = evs
                    .iter()
                    .filter(|e| match cuts.get(&e.user_id) {
                        Some(&t) if e.ts >= t => {
                            if let Target::Item(id) = &e.target {
                                *labels
                                    .entry(e.user_id.clone())
                                    .or_default()
                                    .entry(id.clone())
                                    .or_default() += weights.weight(e.kind, e.fraction);
                            }
                            false
                        }
                        _ => true,
                    })
                    .cloned()
                    .collect();
                state.apply(&Mutation::Events(kept));
            }
            other => state.apply(other),
        }
    }
    (state, labels)
}

/// What the lists were built on: the earlier-part state and its models, the surface's
/// pipeline, and the instant every list was asked at.
pub struct ListEnv {
    pub env: Env,
    pub pipeline: Arc<Pipeline>,
    pub now: Millis,
}

/// Models trained on `state`, an environment over them, and the ranker surface's pipeline
/// (without side effects): what both kinds of lists are built with.
fn list_env(
    config: &dyn TrainConfig,
    state: &Arc<State>,
) -> Result<(Env, Arc<Pipeline>), TrainingError> {
    offline_env(config, state, build_models(state, config, true, None))
}

/// An environment of its own (CPU pool included) serving `models` over `state`, and the ranker
/// surface's pipeline without side effects: for offline work (ranker lists, the promotion
/// gate) that replays requests outside a running engine.
pub fn offline_env(
    config: &dyn TrainConfig,
    state: &Arc<State>,
    models: Models,
) -> Result<(Env, Arc<Pipeline>), TrainingError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = Arc::new(CpuPool::new(threads).map_err(|e| TrainingError::Io(e.to_string()))?);
    let surface = &config.models().ranker.surface;
    let pipeline = Arc::new(
        cascade_surfaces::build_pipeline(
            config.surface(surface).map_err(TrainingError::Config)?,
            surface,
            None,
            None,
            &pool,
        )
        .map_err(TrainingError::Config)?,
    );
    let env = Env {
        store: None,
        state: state.clone(),
        models: Arc::new(ModelStore::new(models)),
        pool,
        popular_size: config.models().popular_size,
        popular_per_category: config.models().popular_per_category,
        faults: Arc::default(),
        breakers: Arc::default(),
    };
    Ok((env, pipeline))
}

impl RankerLists {
    /// Appends one list (the candidates' feature rows, their grades and pre-ranker scores);
    /// a list without a positive grade teaches nothing and is skipped.
    fn push(&mut self, cands: &Candidates, grades: &[f32], user: &str, t: Millis) {
        if !grades.iter().any(|&y| y > 0.0) {
            return;
        }
        for (c, &y) in cands.items.iter().zip(grades) {
            self.values.extend_from_slice(cands.features.row(c.row));
            self.labels.push(y);
            self.prerank.push(c.score);
        }
        self.offsets.push(self.labels.len());
        self.users.push(user.to_string());
        self.label_times.push(t);
    }
}

/// Builds the training lists from the log's mutations (see the module docs).
pub fn build_lists(
    config: &dyn TrainConfig,
    mutations: &[Mutation],
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(RankerLists, ListEnv), TrainingError> {
    let shown = served_responses(mutations, &config.models().ranker.surface);
    let min = config.models().ranker.min_impression_lists;
    if !shown.is_empty() && shown.len() >= min {
        let (lists, env) = impression_lists(config, mutations, shown, progress)?;
        // Only responses that drew feedback make lists: without enough of them (impressions
        // logged, feedback not sent back with request ids), learn from histories instead.
        if lists.lists() >= min {
            return Ok((lists, env));
        }
        tracing::warn!(
            lists = lists.lists(),
            min,
            "too few served responses drew feedback; ranker lists from user histories"
        );
    }
    let started = Instant::now();
    let rc = &config.models().ranker;
    let cuts = label_times(mutations, rc);
    let (state, labels) = earlier_state(config, mutations, &cuts);
    let state = Arc::new(state);
    // Retrieval models (embeddings, co-visitation, index) from the earlier part only.
    let (env, pipeline) = list_env(config, &state)?;
    let threads = env.pool.threads();
    // Every labelled user is asked once the earlier part has happened, as serving would ask.
    let now = state.read().watermark + 1000;
    let mut users: Vec<(&String, &Millis)> = cuts
        .iter()
        .filter(|(u, _)| labels.contains_key(*u))
        .collect();
    users.sort_by_key(|(u, _)| (fnv(u), u.as_str()));
    users.truncate(rc.max_lists);
    users.sort();
    let keep = config
        .surfaces()
        .get(&rc.surface)
        .map_or(300, |s| s.prerank_keep);
    let total = users.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    // A plain thread with its own runtime: sources are async, and this may run inside a
    // blocking section of the server's runtime.
    let results = std::thread::scope(|sc| {
        sc.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| TrainingError::Io(e.to_string()))?;
            rt.block_on(async {
                use futures::StreamExt;
                let out: Vec<_> = futures::stream::iter(users.iter().map(|(u, t)| {
                    let (pipeline, env, done) = (&pipeline, &env, &done);
                    async move {
                        let q = Query::new(&rc.surface, u, keep, now);
                        let r = pipeline.training_candidates(env, q).await;
                        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if n % 256 == 0 || n == total {
                            progress(n, total);
                        }
                        (u.to_string(), **t, r)
                    }
                }))
                .buffered(threads * 2)
                .collect()
                .await;
                Ok::<_, TrainingError>(out)
            })
        })
        .join()
        .map_err(|_| TrainingError::Io("ranker list builder panicked".into()))?
    })?;
    let mut out = RankerLists {
        names: pipeline.schema.names().map(str::to_string).collect(),
        offsets: vec![0],
        ..Default::default()
    };
    let g = state.read();
    for (user, t, r) in results {
        let Some((_, cands)) = r else { continue };
        let Some(user_labels) = labels.get(&user) else {
            continue;
        };
        let grades: Vec<f32> = cands
            .items
            .iter()
            .map(|c| {
                let sum = user_labels.get(g.item_id(c.item)).copied().unwrap_or(0.0);
                rc.labels.grade(sum)
            })
            .collect();
        out.push(&cands, &grades, &user, t);
    }
    drop(g);
    out.candidates_seconds = started.elapsed().as_secs_f64();
    Ok((out, ListEnv { env, pipeline, now }))
}

/// One logged response: who was shown what, when, in which order.
#[derive(Debug, Clone)]
pub struct Served {
    pub request_id: String,
    pub user: String,
    pub ts: Millis,
    /// Item ids by position.
    pub items: Vec<String>,
}

/// The responses of `surface` logged as impressions with a request id, oldest first.
pub fn served_responses(mutations: &[Mutation], surface: &str) -> Vec<Served> {
    // Per request: the response and its (position, item) impressions.
    type Positions = Vec<(u32, String)>;
    let mut by_id: HashMap<&str, (Served, Positions)> = HashMap::new();
    for m in mutations {
        let Mutation::Events(evs) = m else { continue };
        for e in evs {
            let (cascade_core::EventKind::Impression, Some(rid), Target::Item(item)) =
                (e.kind, e.request_id.as_deref(), &e.target)
            else {
                continue;
            };
            if e.surface.as_deref().is_some_and(|s| s != surface) {
                continue;
            }
            let entry = by_id.entry(rid).or_insert_with(|| {
                (
                    Served {
                        request_id: rid.to_string(),
                        user: e.user_id.clone(),
                        ts: e.ts,
                        items: Vec::new(),
                    },
                    Vec::new(),
                )
            });
            entry.0.ts = entry.0.ts.min(e.ts);
            entry.1.push((e.position.unwrap_or(u32::MAX), item.clone()));
        }
    }
    let mut out: Vec<Served> = by_id
        .into_values()
        .map(|(mut s, mut items)| {
            items.sort();
            items.dedup_by(|a, b| a.1 == b.1);
            s.items = items.into_iter().map(|(_, i)| i).collect();
            s
        })
        .collect();
    out.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
    out
}

/// Lists from served responses (see the module docs): strictly point-in-time, since the
/// state is replayed in time order and each list is taken just before its response's time.
fn impression_lists(
    config: &dyn TrainConfig,
    mutations: &[Mutation],
    shown: Vec<Served>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(RankerLists, ListEnv), TrainingError> {
    let started = Instant::now();
    let rc = &config.models().ranker;
    let k = ((shown.len() as f64 * rc.label_fraction).ceil() as usize).clamp(1, rc.max_lists);
    let lists = &shown[shown.len() - k..];
    let t0 = lists[0].ts;
    // Labels: each feedback event goes to the response it names, or else to the latest
    // response that showed the item to the user within the attribution window.
    let window = i64::try_from(rc.attribution_window_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let index: HashMap<&str, usize> = lists
        .iter()
        .enumerate()
        .map(|(i, s)| (s.request_id.as_str(), i))
        .collect();
    let mut shown_at: HashMap<(&str, &str), Vec<(Millis, usize)>> = HashMap::new();
    for (i, s) in lists.iter().enumerate() {
        for item in &s.items {
            shown_at
                .entry((s.user.as_str(), item.as_str()))
                .or_default()
                .push((s.ts, i));
        }
    }
    let mut labels: Vec<HashMap<&str, f32>> = vec![HashMap::new(); lists.len()];
    let state = config.features().new_state();
    let mut later: Vec<&Event> = Vec::new();
    for m in mutations {
        match m {
            Mutation::Events(evs) => {
                let mut now_batch = Vec::new();
                for e in evs {
                    if e.ts < t0 {
                        now_batch.push(e.clone());
                    } else {
                        later.push(e);
                    }
                    let Target::Item(item) = &e.target else {
                        continue;
                    };
                    if e.kind == cascade_core::EventKind::Impression || e.ts < t0 {
                        continue;
                    }
                    let by_id = e
                        .request_id
                        .as_deref()
                        .and_then(|r| index.get(r).copied())
                        .filter(|&i| lists[i].user == e.user_id && lists[i].items.contains(item));
                    let by_time = || {
                        shown_at
                            .get(&(e.user_id.as_str(), item.as_str()))?
                            .iter()
                            .rev()
                            .find(|&&(t, _)| t <= e.ts && e.ts - t <= window)
                            .map(|&(_, i)| i)
                    };
                    if let Some(i) = by_id.or_else(by_time) {
                        *labels[i].entry(item.as_str()).or_default() +=
                            rc.labels.weight(e.kind, e.fraction);
                    }
                }
                if !now_batch.is_empty() {
                    state.apply(&Mutation::Events(now_batch));
                }
            }
            other => state.apply(other),
        }
    }
    later.sort_by_key(|e| e.ts);
    let state = Arc::new(state);
    // Retrieval models from the events before the first list only.
    let (env, pipeline) = list_env(config, &state)?;
    let mut out = RankerLists {
        names: pipeline.schema.names().map(str::to_string).collect(),
        offsets: vec![0],
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| TrainingError::Io(e.to_string()))?;
    // Sequential by construction: the state moves forward between lists.
    let results = std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut applied = 0usize;
            let mut rows = Vec::with_capacity(lists.len());
            for (i, s) in lists.iter().enumerate() {
                let upto = later[applied..].partition_point(|e| e.ts < s.ts) + applied;
                if upto > applied {
                    let batch: Vec<Event> =
                        later[applied..upto].iter().map(|e| (*e).clone()).collect();
                    state.apply(&Mutation::Events(batch));
                    applied = upto;
                }
                let items: Vec<cascade_core::Idx> = {
                    let g = state.read();
                    s.items.iter().filter_map(|id| g.items.get(id)).collect()
                };
                let q = Query::new(&rc.surface, &s.user, items.len().max(1), s.ts);
                let r = rt.block_on(pipeline.shown_candidates(&env, q, items));
                rows.push((i, r));
                if (i + 1) % 256 == 0 || i + 1 == lists.len() {
                    progress(i + 1, lists.len());
                }
            }
            rows
        })
        .join()
        .map_err(|_| TrainingError::Io("ranker list builder panicked".into()))
    })?;
    let g = state.read();
    for (i, r) in results {
        let Some((_, cands)) = r else { continue };
        let grades: Vec<f32> = cands
            .items
            .iter()
            .map(|c| {
                rc.labels
                    .grade(labels[i].get(g.item_id(c.item)).copied().unwrap_or(0.0))
            })
            .collect();
        out.push(&cands, &grades, &lists[i].user, lists[i].ts);
    }
    drop(g);
    out.candidates_seconds = started.elapsed().as_secs_f64();
    let now = lists.last().map_or(t0, |s| s.ts);
    Ok((out, ListEnv { env, pipeline, now }))
}
