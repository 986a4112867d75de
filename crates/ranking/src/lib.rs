//! Ranking: feature hydrators and scorers over the merged candidates.

mod blend;
mod hydrate;

pub use blend::{BlendConfig, BlendScorer};
pub use hydrate::{ItemHydrator, UserItemHydrator, default_schema};
