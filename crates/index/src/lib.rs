//! Derived, read-only artifacts that requests read through atomically swapped snapshots:
//! popular lists (global and per category) and co-visitation neighbour lists.
//!
//! Builders read the live state under a read lock and produce immutable structures; the
//! data loop swaps them in with [`ModelStore::publish`]. Requests never wait for a build.

pub mod als;
pub mod ann;
pub mod bundle;
pub mod covis;
pub mod fold;
pub mod hnsw;
pub mod popular;
mod store;

pub use als::{AlsConfig, Embeddings, Interactions};
pub use ann::{AnnConfig, AnnError, AnnIndex, Quantization};
pub use bundle::{Bundle, BundleError, Manifest};
pub use covis::{CoVisConfig, CoVisitation};
pub use fold::{FoldStats, ItemFolder};
pub use popular::PopularLists;
pub use store::{ModelStore, Models};
