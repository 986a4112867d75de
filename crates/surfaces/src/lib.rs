//! Surfaces: each one's declarative configuration (ordered components and budgets) and its
//! assembly into a [`cascade_pipeline::Pipeline`]. Below both the runtime and training, so
//! serving and ranker training build their pipelines from one place.

mod assemble;
mod config;
mod impressions;

pub use assemble::build_pipeline;
pub use config::{
    FilterKind, HydratorKind, SelectorKind, SideEffectKind, SourceConfig, SourceKind,
    SurfaceConfig, Surfaces, default_surfaces, validate_surfaces,
};
pub use impressions::{ImpressionLogger, MutationQueue, ServedObserver, ServedTap};
