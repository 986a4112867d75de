//! Cascade's runtime: opens a data dir (snapshot + log replay), holds the live state and the
//! model store, runs the data loop and the writer, assembles every configured surface, and
//! carries the model registry and experiment assignment. No HTTP here, and no training
//! algorithm: those live above (`cascade-server`) and below (`cascade-training`).

pub mod backfill;
pub mod compaction;
pub mod config;
mod data_loop;
pub mod drift;
pub mod engine;
pub mod error;
pub mod experiments;
mod faulted;
pub mod lifecycle;
pub mod online;
pub mod replay;
pub mod sink;
pub mod suggest;

pub use config::{
    ArmConfig, BusBackend, BusSection, EngineConfig, ExperimentConfig, StorageBackend,
    StorageSection,
};
pub use engine::Engine;
pub use error::RuntimeError;
pub use replay::{Replayed, replay};
pub use sink::Sink;
