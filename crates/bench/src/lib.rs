//! Measurements through the public API and the serving engine: `cascade bench` (load,
//! ANN, ranking stage, freshness, memory) and `cascade eval` (the offline protocol). Every
//! figure in `docs/benchmarks.md` comes from one of these.

pub mod ann;
pub mod eval;
pub mod freshness;
pub mod load;
pub mod memory;
pub mod rank;
pub mod serve;
pub mod suggest;

use anyhow::Context;

/// A multi-threaded tokio runtime for a bench's clients and server.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}
