//! Offline training: a state snapshot becomes a model bundle (ALS embeddings, co-visitation,
//! HNSW index, embedding neighbours), the heavy ranker is fitted on point-in-time lists, and
//! the promotion gate compares a candidate with the active bundle. Below the runtime: the
//! runtime's in-process retraining calls [`models::build_models`], `cascade train` calls
//! [`run::train_and_save`]; pipelines come from `cascade-surfaces`, never from the runtime.

pub mod artifacts;
pub mod config;
pub mod drift;
pub mod error;
pub mod gate;
pub mod lists;
pub mod models;
pub mod ranker;
pub mod run;

pub use artifacts::{Progress, TrainOptions, build_ann, train};
pub use config::{GateSection, ModelsSection, RankerSection, TrainConfig, TrainSettings};
pub use error::TrainingError;
pub use models::{build_models, models_from_bundle, models_from_bundle_with};
