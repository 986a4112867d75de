//! Policy: what may be shown (safety, blocklists, seen, caps), in what order (boosts,
//! diversity, pinned and sponsored slots, exploration), and why (explanations).

mod explain;
mod explore;
mod filters;
mod rules;
mod select;

pub use explain::{ReasonTemplates, TemplateExplainer};
pub use explore::{Exploration, ExplorationConfig, request_seed};
pub use filters::{FrequencyCap, FrequencyCapConfig, SafetyFilter, SeenFilter};
pub use rules::{
    Blocklist, BlocklistConfig, BoostRule, Boosts, PinnedSlots, SponsoredConfig, SponsoredLimit,
    sponsored,
};
pub use select::{DiversityConfig, Mmr, MmrConfig, TopScore, WindowDiversity};
