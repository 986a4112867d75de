//! The heavy ranker: LambdaMART trees fitted on the training lists, early-stopped on the
//! held-out ones, and added to a bundle.

use crate::config::TrainConfig;
use crate::error::TrainingError;
use crate::lists::{RankerLists, build_lists};
use cascade_gbdt::{Lists as GbdtLists, Model, mean_ndcg};
use cascade_index::bundle::RankerMetrics;
use std::path::Path;

/// Trains the GBDT ranker on the lists, early-stopping on the held-out ones.
pub fn train_ranker(
    lists: &RankerLists,
    config: &dyn TrainConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Model, RankerMetrics), TrainingError> {
    let rc = &config.models().ranker;
    let width = lists.names.len();
    let mut parts = [Part::default(), Part::default()];
    for q in 0..lists.lists() {
        let p = &mut parts[usize::from(lists.is_valid(q, rc.valid_fraction))];
        let (a, b) = (lists.offsets[q], lists.offsets[q + 1]);
        p.values
            .extend_from_slice(&lists.values[a * width..b * width]);
        p.labels.extend_from_slice(&lists.labels[a..b]);
        p.prerank.extend_from_slice(&lists.prerank[a..b]);
        p.offsets.push(p.labels.len());
    }
    let [train, valid] = parts;
    if train.offsets.len() < 2 {
        return Err(TrainingError::Config(
            "ranker: no training list has a positive label".into(),
        ));
    }
    let tl = train.lists(width);
    let vl = (valid.offsets.len() > 1).then(|| valid.lists(width));
    let (model, report) = cascade_gbdt::train(&tl, vl.as_ref(), &lists.names, &rc.gbdt, progress)
        .map_err(|e| TrainingError::Config(format!("ranker: {e}")))?;
    let metrics = RankerMetrics {
        surface: rc.surface.clone(),
        features: lists.names.clone(),
        train_lists: tl.lists(),
        valid_lists: vl.as_ref().map_or(0, GbdtLists::lists),
        rows: lists.labels.len(),
        rounds: report.rounds,
        train_ndcg_at_10: report.train_ndcg,
        valid_ndcg_at_10: report.valid_ndcg,
        prerank_valid_ndcg_at_10: vl
            .as_ref()
            .map(|v| mean_ndcg(v, &valid.prerank, rc.gbdt.eval_at)),
        valid_curve: report.valid_curve.clone(),
        candidates_seconds: lists.candidates_seconds,
        gbdt_seconds: report.seconds,
    };
    Ok((model, metrics))
}

struct Part {
    values: Vec<f32>,
    labels: Vec<f32>,
    prerank: Vec<f32>,
    offsets: Vec<usize>,
}

impl Part {
    fn lists(&self, width: usize) -> GbdtLists<'_> {
        GbdtLists::new(&self.values, width, &self.labels, &self.offsets)
    }
}

impl Default for Part {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            labels: Vec::new(),
            prerank: Vec::new(),
            offsets: vec![0],
        }
    }
}

/// Reads the log under `log_dir`, builds the lists and trains the ranker; `export` also
/// writes the lists as CSV.
pub fn train_from_log(
    config: &dyn TrainConfig,
    log_dir: &Path,
    export: Option<&Path>,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<(Model, RankerMetrics), TrainingError> {
    let mutations = cascade_storage::EventLog::read_all(log_dir)?;
    let (lists, _) = build_lists(config, &mutations, &|d, n| {
        progress("ranker lists", d as u64, n as u64);
    })?;
    if let Some(p) = export {
        lists
            .write_csv(p, config.models().ranker.valid_fraction)
            .map_err(|e| TrainingError::Io(format!("{}: {e}", p.display())))?;
    }
    train_ranker(&lists, config, &|d, n| {
        progress("ranker", d as u64, n as u64)
    })
}

/// Adds a trained ranker to a bundle (model, metrics, parameters).
pub fn add_to_bundle(
    bundle: &mut cascade_index::Bundle,
    config: &dyn TrainConfig,
    model: Model,
    metrics: RankerMetrics,
) {
    bundle.ranker = Some(model);
    bundle.manifest.metrics.ranker = Some(metrics);
    bundle.manifest.params.ranker = Some(config.models().ranker.gbdt);
    bundle.manifest.params.labels = Some(config.models().ranker.labels);
}
