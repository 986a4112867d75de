//! The online state every request reads: catalog, users, interaction histories, popularity.
//!
//! State changes only by applying log [`cascade_core::Mutation`]s in log order (see
//! `cascade-storage`), so replay rebuilds it exactly. Reads take a short read lock and copy
//! out what a request needs; no lock is ever held across an `.await`.

mod apply;
pub mod config;
pub mod experiments;
mod memory;
mod readback;
mod records;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod weights;

pub use config::FeaturesSection;
pub use readback::{Feedback, ItemCounts, Page, UserRecord};
pub use schema::{FeatureDef, FeatureSchema};
pub use snapshot::Snapshot;
pub use state::{Inner, Interaction, ItemRec, ItemStats, State, StateStats, UserState, UserView};
pub use store::{EmbeddedStore, FeatureStore, StoreError};
pub use weights::{Decay, EventWeights, LabelWeights};
