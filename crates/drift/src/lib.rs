//! Distribution-shift monitoring's arithmetic: sketches with bounded memory (fixed bins over a
//! reference's quantile edges, category counts, proportions), reference profiles captured at
//! training time, time-bucketed live windows, and the measures that compare them (PSI,
//! Jensen–Shannon, a two-proportion test) with per-signal thresholds.

pub mod measure;
pub mod profile;
pub mod report;
pub mod window;

pub use measure::{jensen_shannon, psi, two_proportion_z};
pub use profile::{Observer, Profile, ProfileBuilder, Sketch, SketchKind};
pub use report::{DriftSection, Signal, Status, Threshold, evaluate};
pub use window::{LiveObserver, Windows};
