//! One training run as `cascade train` does it: the retrieval artifacts from the replayed
//! state, the ranker from the log, the promotion gate against the active bundle, and the
//! bundle saved into the registry (made current only if it passed).

use crate::artifacts::{self, Progress, TrainOptions};
use crate::config::TrainConfig;
use crate::error::TrainingError;
use crate::{drift, gate, ranker};
use cascade_features::State;
use cascade_index::Bundle;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a run is asked to do beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub train: TrainOptions,
    /// Also write the ranker's training lists as CSV here.
    pub export_lists: Option<PathBuf>,
    /// Promote without the gate.
    pub force: bool,
}

/// A finished run: the bundle saved at `path`, current only when `promoted`.
#[derive(Debug)]
pub struct RunOutcome {
    pub bundle: Bundle,
    pub path: PathBuf,
    pub promoted: bool,
    /// Why the gate did not compare, when it was enabled but could not.
    pub gate_skipped: Option<String>,
}

/// Trains on `state` (replayed from the log under `log_dir`) and saves the bundle into the
/// registry at `models_dir`.
pub fn train_and_save(
    state: &Arc<State>,
    log_dir: &Path,
    models_dir: &Path,
    config: &dyn TrainConfig,
    opts: &RunOptions,
    progress: Progress,
) -> Result<RunOutcome, TrainingError> {
    let mut bundle = artifacts::train(state, config, &opts.train, progress);
    if config.models().ranker.enabled {
        let (model, metrics) =
            ranker::train_from_log(config, log_dir, opts.export_lists.as_deref(), progress)?;
        ranker::add_to_bundle(&mut bundle, config, model, metrics);
    }
    // The promotion gate: against the active bundle, on a window neither trained on.
    let active = Bundle::current(models_dir)?;
    let mut promoted = true;
    let mut gate_skipped = None;
    let mutations = cascade_storage::EventLog::read_all(log_dir)?;
    if let Some(active) = active.filter(|_| config.models().gate.enabled && !opts.force) {
        match gate::evaluate(config, &mutations, &active, &|s, d, n| {
            progress(&format!("gate: {s}"), d, n)
        }) {
            Ok(g) => {
                promoted = g.passed;
                bundle.manifest.metrics.gate = Some(g);
            }
            // Too little history to compare: nothing says the candidate is worse.
            Err(e) => gate_skipped = Some(e.to_string()),
        }
    }
    let path = bundle.save_as(models_dir, false)?;
    // The drift reference: what this bundle serves the training period's users, beside it
    // before it can become current (a bundle without one gets its reference live).
    if config.drift().enabled {
        progress("drift reference", 0, 1);
        match drift::capture(config, config.drift(), state, &path, &mutations) {
            Ok(profile) => drift::write(&path, &profile)?,
            Err(e) => tracing::warn!(error = %e, "no drift reference for this bundle"),
        }
        progress("drift reference", 1, 1);
    }
    if promoted {
        Bundle::make_current(models_dir, &bundle.manifest.version)?;
    }
    Ok(RunOutcome {
        bundle,
        path,
        promoted,
        gate_skipped,
    })
}
