//! The retrieval artifacts: one snapshot of the live state becomes a model bundle
//! (embeddings, co-visitation, embedding neighbours, HNSW index, manifest). `cascade train`
//! saves it; the runtime's data loop uses the same code for in-process retraining.

use crate::config::TrainConfig;
use cascade_core::Idx;
use cascade_features::State;
use cascade_features::state::ItemHot;
use cascade_index::als::dot;
use cascade_index::bundle::{DataRange, Manifest, Params, TrainMetrics};
use cascade_index::{AnnConfig, AnnIndex, Bundle, CoVisitation, Embeddings, Interactions};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// Progress callback: `(stage, done, total)`.
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Users whose newest engagement is held out of training to measure the model (0: none).
    pub holdout_users: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { holdout_users: 500 }
    }
}

/// Everything copied out of the state under one read lock.
struct Snapshot {
    item_ids: Vec<String>,
    user_ids: Vec<String>,
    live: Vec<bool>,
    seqs: Vec<cascade_index::covis::Sequence>,
    triples: Vec<(Idx, Idx, f32)>,
    /// `(user, held-out item, the user's training items)`.
    holdout: Vec<(Idx, Idx)>,
    data: DataRange,
}

fn snapshot(state: &State, config: &dyn TrainConfig, opts: &TrainOptions) -> Snapshot {
    let g = state.read();
    let m = config.models();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(m.als.seed);
    // Hold out the newest engagement of a sample of users with enough history to lose one.
    let eligible: Vec<Idx> = g
        .user_states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.engaged.len() >= 5)
        .map(|(u, _)| u as Idx)
        .collect();
    let mut holdout: Vec<(Idx, Idx)> = Vec::new();
    if opts.holdout_users > 0 && !eligible.is_empty() {
        let mut picked = std::collections::BTreeSet::new();
        let want = opts.holdout_users.min(eligible.len());
        while picked.len() < want {
            picked.insert(eligible[rng.random_range(0..eligible.len())]);
        }
        for u in picked {
            let st = &g.user_states[u as usize];
            if let Some(&(item, _)) = st.engaged.iter().max_by_key(|&&(i, t)| (t, i)) {
                holdout.push((u, item));
            }
        }
    }
    let triples: Vec<(Idx, Idx, f32)> = Interactions::engaged(&g)
        .filter(|&(u, i, _)| holdout.binary_search(&(u, i)).is_err())
        .collect();
    let (first, last) = g
        .time_log
        .iter()
        .fold((i64::MAX, i64::MIN), |(a, b), &(t, _, _)| {
            (a.min(t), b.max(t))
        });
    let data = DataRange {
        events: g.events_applied,
        first_event_ms: if first == i64::MAX { 0 } else { first },
        last_event_ms: if last == i64::MIN { 0 } else { last },
        users: g.users.len(),
        items: g.items.len(),
        interactions: triples.len(),
        generation: g.generation,
    };
    Snapshot {
        item_ids: (0..g.items.len() as Idx)
            .map(|i| g.items.name(i).unwrap_or_default().to_string())
            .collect(),
        user_ids: (0..g.users.len() as Idx)
            .map(|u| g.users.name(u).unwrap_or_default().to_string())
            .collect(),
        live: g
            .item_hot
            .iter()
            .map(|h| h.flags & ItemHot::EXISTS != 0)
            .collect(),
        seqs: CoVisitation::sequences(&g, m.covis.max_history),
        triples,
        holdout,
        data,
    }
}

fn version(generation: u64) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let v = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z-g{generation}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
    let created = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    (v, created)
}

/// Exact top-`k` item indices by dot product, skipping `exclude` (sorted).
fn exact_top(items: &[f32], dim: usize, q: &[f32], k: usize, exclude: &[Idx]) -> Vec<Idx> {
    let mut s: Vec<(f32, Idx)> = items
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| exclude.binary_search(&(*i as Idx)).is_err())
        .map(|(i, v)| (dot(q, v), i as Idx))
        .collect();
    let k = k.min(s.len());
    if k == 0 {
        return Vec::new();
    }
    s.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
    s.truncate(k);
    s.into_iter().map(|(_, i)| i).collect()
}

/// Top `k` embedding neighbours of every indexed item (cosine-ranked candidates from the
/// HNSW index, self excluded), in the co-visitation list layout.
pub fn item_neighbors(e: &Embeddings, ann: &AnnIndex, k: usize) -> CoVisitation {
    let n = e.n_items();
    let rows: Vec<Vec<(Idx, f32)>> = (0..n as Idx)
        .into_par_iter()
        .map(|i| {
            if k == 0 || !ann.contains(i) {
                return Vec::new();
            }
            let Some(v) = e.item(i) else {
                return Vec::new();
            };
            let norm = dot(v, v).sqrt();
            if norm <= 0.0 || !norm.is_finite() {
                return Vec::new();
            }
            let q: Vec<f32> = v.iter().map(|x| x / norm).collect();
            let mut row: Vec<(Idx, f32)> = ann
                .search(&q, 4 * k + 1)
                .unwrap_or_default()
                .into_iter()
                .filter(|&(j, _)| j != i)
                .filter_map(|(j, _)| {
                    let w = e.item(j)?;
                    let nw = dot(w, w).sqrt();
                    (nw > 0.0).then(|| (j, dot(&q, w) / nw))
                })
                .filter(|&(_, c)| c > 0.0)
                .collect();
            row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            row.truncate(k);
            row
        })
        .collect();
    CoVisitation::from_rows(rows)
}

/// Trains every model artifact from the state.
pub fn train(
    state: &State,
    config: &dyn TrainConfig,
    opts: &TrainOptions,
    progress: Progress,
) -> Bundle {
    let m = config.models();
    progress("snapshot", 0, 1);
    let snap = snapshot(state, config, opts);
    progress("snapshot", 1, 1);
    let n_items = snap.item_ids.len();
    let mut metrics = TrainMetrics::default();

    let t = Instant::now();
    progress("co-visitation", 0, 1);
    let covis = CoVisitation::build(&snap.seqs, n_items, &m.covis);
    metrics.covis_seconds = t.elapsed().as_secs_f64();
    progress("co-visitation", 1, 1);

    let t = Instant::now();
    let iters = m.als.iterations as u64;
    progress("als", 0, iters);
    let data = Interactions::from_triples(snap.user_ids.len(), snap.triples);
    let emb = cascade_index::als::train(&data, n_items, &m.als, |it| {
        progress("als", it as u64, iters);
    });
    drop(data);
    metrics.als_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress("hnsw", 0, 1);
    let ann = if m.ann {
        build_ann(&emb, &snap.live, &m.hnsw).and_then(|a| std::sync::Arc::try_unwrap(a).ok())
    } else {
        None
    };
    metrics.ann_seconds = t.elapsed().as_secs_f64();
    metrics.ann_items = ann.as_ref().map_or(0, AnnIndex::len);
    metrics.ann_bytes = ann.as_ref().map_or(0, AnnIndex::memory_bytes);
    progress("hnsw", 1, 1);

    let t = Instant::now();
    progress("item neighbours", 0, 1);
    let neighbors = match &ann {
        Some(a) if m.item_neighbors > 0 => item_neighbors(&emb, a, m.item_neighbors),
        _ => CoVisitation::default(),
    };
    metrics.neighbors_seconds = t.elapsed().as_secs_f64();
    progress("item neighbours", 1, 1);

    progress("evaluate", 0, 1);
    evaluate(&emb, ann.as_ref(), &snap.holdout, state, &mut metrics);
    progress("evaluate", 1, 1);

    let (version, created_at) = version(snap.data.generation);
    Bundle {
        manifest: Manifest {
            format: cascade_index::bundle::FORMAT,
            version,
            created_at,
            data: snap.data,
            params: Params {
                als: m.als,
                covis: m.covis,
                hnsw: m.ann.then_some(m.hnsw),
                item_neighbors: m.item_neighbors,
                ranker: None,
                labels: None,
            },
            metrics,
            files: Vec::new(),
        },
        item_ids: snap.item_ids,
        user_ids: snap.user_ids,
        embeddings: emb,
        covis,
        item_neighbors: neighbors,
        ann,
        ranker: None,
    }
}

/// Hold-out recall of the user vectors, and HNSW recall against the exact scan, on the
/// sampled users (bounded so that a 10M-item catalog still evaluates in seconds).
fn evaluate(
    emb: &Embeddings,
    ann: Option<&AnnIndex>,
    holdout: &[(Idx, Idx)],
    state: &State,
    out: &mut TrainMetrics,
) {
    let n = emb.n_items().max(1);
    let budget = (50_000_000 / n).clamp(20, 500);
    let users: Vec<(Idx, Idx, Vec<Idx>)> = {
        let g = state.read();
        holdout
            .iter()
            .take(budget)
            .map(|&(u, i)| {
                let seen: Vec<Idx> = g.user_states[u as usize]
                    .engaged
                    .iter()
                    .map(|&(j, _)| j)
                    .filter(|&j| j != i)
                    .collect();
                (u, i, seen)
            })
            .collect()
    };
    if users.is_empty() {
        return;
    }
    let (hits, ann_hits): (usize, usize) = users
        .par_iter()
        .map(|(u, held, seen)| {
            let Some(q) = emb.user(*u) else {
                return (0, 0);
            };
            let top = exact_top(&emb.items, emb.dim, q, 10, seen);
            let hit = usize::from(top.contains(held));
            let ann_hit = ann.map_or(0, |a| {
                let exact = exact_top(&emb.items, emb.dim, q, 10, &[]);
                let got = a.search(q, 10).unwrap_or_default();
                got.iter().filter(|(i, _)| exact.contains(i)).count()
            });
            (hit, ann_hit)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    out.holdout_users = users.len();
    out.holdout_recall_at_10 = Some(hits as f64 / users.len() as f64);
    if ann.is_some() {
        out.ann_recall_at_10 = Some(ann_hits as f64 / (10 * users.len()) as f64);
    }
}

/// The HNSW index over the trained vectors of live items; `None` (the source then scans
/// exactly) if the native index cannot be built.
pub fn build_ann(e: &Embeddings, live: &[bool], cfg: &AnnConfig) -> Option<Arc<AnnIndex>> {
    let t = Instant::now();
    let keep = |i: u32| live.get(i as usize).copied().unwrap_or(false);
    match AnnIndex::build(&e.items, e.dim, *cfg, keep, |_| {}) {
        Ok(ann) => {
            tracing::info!(
                secs = t.elapsed().as_secs_f64(),
                items = ann.len(),
                bytes = ann.memory_bytes(),
                "built ann index"
            );
            metrics::gauge!("cascade_ann_items").set(ann.len() as f64);
            Some(Arc::new(ann))
        }
        Err(e) => {
            tracing::error!(error = %e, "ann index build failed; embedding source scans exactly");
            None
        }
    }
}
