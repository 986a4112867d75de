//! Candidate sources: each finds items for a request from one kind of evidence.

mod lists;
mod popular;
mod similar;

pub use lists::{FollowsSource, FreshConfig, FreshSource, TrendingSource};
pub use popular::PopularSource;
pub use similar::{ItemSimilaritySource, SimilarConfig};
