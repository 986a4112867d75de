//! The promotion gate of `cascade train`: the candidate (retrained without the window) and the
//! active bundle serve the same past — the state just before the window — and are scored on
//! what each window user engaged with next. The window is the newest engagements, and never
//! reaches back into the active bundle's training data, so neither model has seen it.

use crate::artifacts::{self, Progress, TrainOptions};
use crate::config::TrainConfig;
use crate::error::TrainingError;
use crate::models::models_from_bundle_with;
use crate::{lists, ranker};
use cascade_core::{EventKind, Millis, Mutation, Target};
use cascade_features::State;
use cascade_index::bundle::{Bundle, GateMetrics};
use cascade_pipeline::Query;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

fn positive(k: EventKind) -> bool {
    !matches!(
        k,
        EventKind::Impression | EventKind::Skip | EventKind::Hide | EventKind::Follow
    )
}

/// Engagements a window needs before the gate compares anything.
pub const MIN_WINDOW: usize = 100;

/// Compares a candidate trained like `config` with the bundle at `active_dir` on the newest
/// `models.gate.window_fraction` of the engagements in `mutations` that came after the active
/// bundle's training data. Fails (and the caller promotes without a gate) when fewer than
/// [`MIN_WINDOW`] engagements qualify: there is nothing unseen to compare on.
pub fn evaluate(
    config: &dyn TrainConfig,
    mutations: &[Mutation],
    active_dir: &Path,
    progress: Progress,
) -> Result<GateMetrics, TrainingError> {
    let g = config.models().gate;
    let mut times: Vec<Millis> = mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Events(v) => Some(v),
            _ => None,
        })
        .flatten()
        .filter(|e| positive(e.kind))
        .map(|e| e.ts)
        .collect();
    let active_manifest = Bundle::read_manifest(active_dir)
        .map_err(|e| TrainingError::Io(format!("active bundle: {e}")))?;
    times.sort_unstable();
    let k = ((times.len() as f64) * (1.0 - g.window_fraction)).floor() as usize;
    let start = times
        .get(k.min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(Millis::MAX)
        .max(active_manifest.data.last_event_ms + 1);
    let in_window = times.len() - times.partition_point(|&t| t < start);
    if in_window < MIN_WINDOW {
        return Err(TrainingError::Config(format!(
            "{in_window} engagements since the active bundle's data (the gate needs {MIN_WINDOW})"
        )));
    }
    // The past as it stood at the window's start, and what each user engaged with next.
    let mut before = Vec::with_capacity(mutations.len());
    let mut next: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for m in mutations {
        match m {
            Mutation::Events(v) => {
                let (old, new): (Vec<_>, Vec<_>) = v.iter().cloned().partition(|e| e.ts < start);
                for e in new.into_iter().filter(|e| positive(e.kind)) {
                    if let Target::Item(i) = e.target {
                        next.entry(e.user_id).or_default().insert(i);
                    }
                }
                if !old.is_empty() {
                    before.push(Mutation::Events(old));
                }
            }
            other => before.push(other.clone()),
        }
    }
    let state = Arc::new(config.features().new_state());
    for m in &before {
        state.apply(m);
    }
    // The candidate, retrained on the past alone (ranker included, as `cascade train` does).
    let opts = TrainOptions { holdout_users: 0 };
    let mut candidate = artifacts::train(&state, config, &opts, progress);
    if config.models().ranker.enabled
        && let Ok((lists, _)) = lists::build_lists(config, &before, &|_, _| {})
        && let Ok((model, metrics)) = ranker::train_ranker(&lists, config, &|_, _| {})
    {
        ranker::add_to_bundle(&mut candidate, config, model, metrics);
    }
    let active = Bundle::load(active_dir, config.models().hnsw)
        .map_err(|e| TrainingError::Io(format!("active bundle: {e}")))?;
    let active_version = active.manifest.version.clone();
    let users: Vec<(String, HashSet<String>)> = next.into_iter().take(g.users).collect();
    let score = |b: Bundle| -> Result<(f64, f64), TrainingError> {
        let models = models_from_bundle_with(&state, config.models(), b, None, false);
        serve_window(config, &state, models, &users, start)
    };
    let (c_recall, c_ndcg) = score(candidate)?;
    let (a_recall, a_ndcg) = score(active)?;
    Ok(GateMetrics {
        active_version,
        window_start: start,
        window_users: users.len(),
        candidate_recall_at_10: c_recall,
        candidate_ndcg_at_10: c_ndcg,
        active_recall_at_10: a_recall,
        active_ndcg_at_10: a_ndcg,
        tolerance: g.tolerance,
        passed: c_ndcg >= a_ndcg * (1.0 - g.tolerance),
    })
}

/// Mean Recall@10 and NDCG@10 of the ranker's surface, served by `models` at `now`, against
/// each user's next engagements (those not already consumed, which the seen filter hides).
fn serve_window(
    config: &dyn TrainConfig,
    state: &Arc<State>,
    models: cascade_index::Models,
    users: &[(String, HashSet<String>)],
    now: Millis,
) -> Result<(f64, f64), TrainingError> {
    let (env, pipeline) = lists::offline_env(config, state, models)?;
    let surface = &config.models().ranker.surface;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainingError::Io(e.to_string()))?;
    let (mut recall, mut ndcg, mut n) = (0.0, 0.0, 0usize);
    for (user, items) in users {
        let wanted: HashSet<&str> = {
            let g = state.read();
            let seen_until = u32::try_from(now / 1000).unwrap_or(u32::MAX);
            let u = g.users.get(user).and_then(|u| g.user(u));
            items
                .iter()
                .filter(|i| {
                    let idx = g.items.get(i);
                    !idx.is_some_and(|i| u.is_some_and(|u| u.has_seen(i, seen_until)))
                })
                .map(String::as_str)
                .collect()
        };
        if wanted.is_empty() {
            continue;
        }
        let q = Query::new(surface, user, 10, now);
        let r = rt.block_on(pipeline.execute(&env, q));
        let g = state.read();
        let (mut dcg, mut hits) = (0.0, 0usize);
        for (rank, c) in r.items.iter().take(10).enumerate() {
            if wanted.contains(g.item_id(c.item)) {
                hits += 1;
                dcg += 1.0 / ((rank + 2) as f64).log2();
            }
        }
        let ideal: f64 = (0..wanted.len().min(10))
            .map(|r| 1.0 / ((r + 2) as f64).log2())
            .sum();
        recall += hits as f64 / wanted.len() as f64;
        ndcg += dcg / ideal;
        n += 1;
    }
    let n = n.max(1) as f64;
    Ok((recall / n, ndcg / n))
}
