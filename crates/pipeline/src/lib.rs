//! The request pipeline: a surface is an ordered list of components run by one executor.
//!
//! Components ([`CandidateSource`], [`Hydrator`], [`Filter`], [`Scorer`], [`Selector`],
//! [`SideEffect`], [`Explainer`]) hold business logic only. The [`Pipeline`] executor owns
//! deadlines, concurrency, metrics, tracing and the fail-open / fail-closed policy.

mod breaker;
mod candidate;
mod component;
mod config;
mod context;
mod cpu;
mod executor;
mod faults;
mod result;
mod stages;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use breaker::{Admit, Breaker, Breakers};
pub use candidate::{
    Candidate, Candidates, FeatureBlock, Hit, MAX_SOURCES, Placement, Reason, Removal, StageScore,
};
pub use component::{
    CandidateSource, ComponentError, Explainer, FailMode, Filter, Hydrator, Scorer, Selector,
    SideEffect, SourceSlot,
};
pub use config::{FaultsSection, PipelineSection};
pub use context::{Env, Query, RequestContext, RequestCtx};
pub use cpu::CpuPool;
pub use executor::{Pipeline, StageBudgets};
pub use faults::{Dependency, Fault, FaultError, Faults};
pub use result::{PipelineResult, RankStage, Ranked};
