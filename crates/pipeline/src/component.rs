//! The component traits. Implementations hold business logic only.

use crate::candidate::{Candidate, Candidates, Hit, Reason, Removal};
use crate::context::RequestCtx;
use crate::result::PipelineResult;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// A component failure. The executor decides what it costs the response.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{0} unavailable")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// What the executor does when a component fails or runs out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Skip the component, note it in `degraded`, carry on.
    Open,
    /// Treat every candidate as failing it: used by safety filters, so a missing answer
    /// never lets an unsafe item through.
    Closed,
}

/// Finds candidate items. Sources run concurrently, each under its own deadline.
#[async_trait]
pub trait CandidateSource: Send + Sync {
    fn name(&self) -> &str;
    /// Short phrase for reason codes, e.g. `popular`, `similar_to_recent`.
    fn reason_code(&self) -> &'static str;
    /// The remote dependency it calls, if any: its circuit breaker guards the source.
    fn dependency(&self) -> Option<crate::Dependency> {
        None
    }
    async fn retrieve(&self, ctx: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError>;
}

/// Fills feature columns for all candidates in one call (bulk, never per-item lookups across
/// a network). Runs on the CPU pool with the other synchronous stages; a remote feature store
/// fetches into the request before this stage, under its own deadline.
pub trait Hydrator: Send + Sync {
    fn name(&self) -> &str;
    /// Whether it reads the feature store (skipped when the store is down); hydrators of
    /// request-local data (retrieval scores, context) say no.
    fn needs_store(&self) -> bool {
        true
    }
    fn hydrate(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError>;
}

/// Removes candidates; returns what it removed and why. Never reorders.
pub trait Filter: Send + Sync {
    fn name(&self) -> &str;
    fn fail_mode(&self) -> FailMode {
        FailMode::Open
    }
    fn filter(&self, ctx: &RequestCtx, cands: &Candidates) -> Result<Vec<Removal>, ComponentError>;
}

/// Writes one score per candidate into `scores` (aligned with `cands.items`); cannot drop or
/// reorder by construction.
pub trait Scorer: Send + Sync {
    fn name(&self) -> &str;
    /// The dependency it calls, if any: the executor probes it under the surface's ranker
    /// budget and skips the scorer when it is down (or when the feature store is).
    fn dependency(&self) -> Option<crate::Dependency> {
        None
    }
    fn score(
        &self,
        ctx: &RequestCtx,
        cands: &Candidates,
        scores: &mut [f32],
    ) -> Result<(), ComponentError>;
}

/// Orders, truncates, merges or diversifies the list.
pub trait Selector: Send + Sync {
    fn name(&self) -> &str;
    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError>;
}

/// Runs after the response is built (e.g. impression logging). Must not block: enqueue and
/// return.
pub trait SideEffect: Send + Sync {
    fn name(&self) -> &str;
    /// A failure is named in the response's `degraded`; the response itself stands.
    fn run(&self, ctx: &RequestCtx, result: &PipelineResult) -> Result<(), ComponentError>;
}

/// Says in plain language why each final item is there, from the pipeline's own trace:
/// the sources that found the candidate (slots index `sources`) and its seed item.
pub trait Explainer: Send + Sync {
    fn explain(&self, ctx: &RequestCtx, cand: &Candidate, sources: &[SourceSlot]) -> Reason;
}

/// One declared candidate source with its quota and deadline.
pub struct SourceSlot {
    pub source: Arc<dyn CandidateSource>,
    /// Most candidates taken from this source (its quota).
    pub limit: usize,
    pub timeout: Duration,
    /// Its candidates pass the candidate budget and the pre-ranker's cut, so the policy
    /// stage can still pin them (editorial) or explore with them (fresh items) whatever the
    /// pre-ranker thinks of them.
    pub protected: bool,
}

impl From<crate::cpu::CpuError> for ComponentError {
    fn from(e: crate::cpu::CpuError) -> Self {
        ComponentError::Failed(e.to_string())
    }
}
