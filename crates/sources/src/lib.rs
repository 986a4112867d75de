//! Candidate sources: each finds items for a request from one kind of evidence.

mod embedding;
mod lists;
mod popular;
mod similar;

pub use embedding::{EmbeddingConfig, EmbeddingSource};
pub use lists::{EditorialSource, FollowsSource, FreshConfig, FreshSource, TrendingSource};
pub use popular::PopularSource;
pub use similar::{ItemSimilaritySource, SimilarConfig};
