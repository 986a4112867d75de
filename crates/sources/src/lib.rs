//! Candidate sources: each finds items for a request from one kind of evidence.

mod popular;
mod similar;

pub use popular::PopularSource;
pub use similar::{ItemSimilaritySource, SimilarConfig};
