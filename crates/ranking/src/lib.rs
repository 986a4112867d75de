//! Ranking: feature hydrators, the pre-ranker (a transparent blend) and the heavy ranker
//! (gradient-boosted trees) over the merged candidates.

mod attribution;
mod blend;
mod gbdt;
pub mod hydrate;
mod schema;

pub use attribution::{Attribution, attributions};
pub use blend::{BlendConfig, BlendScorer};
pub use gbdt::GbdtScorer;
pub use hydrate::{
    ContextHydrator, ItemHydrator, RetrievalHydrator, UserHydrator, UserItemHydrator,
    default_schema, schema_for,
};
