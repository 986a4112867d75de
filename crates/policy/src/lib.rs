//! Policy: what may be shown (safety, seen), in what order, and why.

mod explain;
mod filters;
mod select;

pub use explain::{ReasonTemplates, TemplateExplainer};
pub use filters::{FrequencyCap, FrequencyCapConfig, SafetyFilter, SeenFilter};
pub use select::{DiversityConfig, TopScore, WindowDiversity};
