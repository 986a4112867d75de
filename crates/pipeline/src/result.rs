//! What the stages and the executor return: the ranking stage's survivors, the CPU stage's
//! final list, and the pipeline's result for one request.

use crate::candidate::{Candidate, Candidates, FeatureBlock, Reason, StageScore};
use crate::context::RequestCtx;
use cascade_core::Idx;
use std::sync::Arc;
use std::time::Duration;

/// What the pipeline produced for one request.
#[derive(Debug)]
pub struct PipelineResult {
    pub ctx: Arc<RequestCtx>,
    /// Final items, best first.
    pub items: Vec<Candidate>,
    pub reasons: Vec<Reason>,
    /// Names of the source slots, indexed like `Candidate::sources` bits.
    pub source_names: Vec<String>,
    /// What did not work as designed for this response.
    pub degraded: Vec<String>,
    /// Milliseconds per stage, in execution order.
    pub timings: Vec<(&'static str, f64)>,
    /// With `explain`: (item, component, reason) of every removed candidate.
    pub removed: Vec<(Idx, String, &'static str)>,
    pub features: Option<FeatureBlock>,
    /// With `explain`: each ranking stage's score and rank of every candidate it scored.
    pub trace: Vec<StageScore>,
    /// With `explain`: filters every returned item passed (those that ran for this request).
    pub filters_passed: Vec<String>,
}

impl PipelineResult {
    pub fn model_version(&self) -> &str {
        &self.ctx.models.version
    }
}

/// What the ranking stage returns.
#[derive(Debug)]
pub struct RankStage {
    /// The scored survivors.
    pub cands: Candidates,
    pub degraded: Vec<String>,
    /// Milliseconds per step.
    pub timings: Vec<(&'static str, f64)>,
    /// With `explain`: what the filters removed and why.
    pub removed: Vec<(Idx, String, &'static str)>,
    /// With `explain`: each stage's scores and ranks.
    pub trace: Vec<StageScore>,
}

/// Output of the CPU stage: the final list and its explanations.
#[derive(Debug)]
pub struct Ranked {
    pub items: Vec<Candidate>,
    pub reasons: Vec<Reason>,
    pub degraded: Vec<String>,
    /// Milliseconds per step, in order.
    pub timings: Vec<(&'static str, f64)>,
    pub removed: Vec<(Idx, String, &'static str)>,
    pub features: Option<FeatureBlock>,
    pub trace: Vec<StageScore>,
}

/// A duration in milliseconds, as timings report it.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
