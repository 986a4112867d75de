//! Candidates as they move through the stages, with their provenance and features.

use cascade_core::{Idx, NONE_IDX};
use cascade_features::FeatureSchema;
use std::sync::Arc;

/// Most candidate sources one surface can declare (provenance is a fixed-size array, so a
/// candidate never allocates).
pub const MAX_SOURCES: usize = 8;

/// One item found by a source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub item: Idx,
    pub score: f32,
    /// The item that led to this one (e.g. the seed of a similarity lookup), or `NONE_IDX`.
    pub seed: Idx,
}

impl Hit {
    pub fn new(item: Idx, score: f32) -> Self {
        Self {
            item,
            score,
            seed: NONE_IDX,
        }
    }
}

/// A candidate item with everything the later stages know about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub item: Idx,
    /// Bit `s` set when source slot `s` produced it.
    pub sources: u16,
    /// Score from each source slot (0 where absent).
    pub source_scores: [f32; MAX_SOURCES],
    /// 0-based rank within each source's list (`u16::MAX` where absent).
    pub source_ranks: [u16; MAX_SOURCES],
    /// Seed item of the strongest seeded source, or `NONE_IDX`.
    pub seed: Idx,
    /// Row of this candidate in the [`FeatureBlock`]; stays valid when candidates reorder.
    pub row: u32,
    /// Final score written by scorers.
    pub score: f32,
    /// The pre-ranker's score, and the heavy ranker's before any later scorer (NaN where
    /// that stage did not score it): what drift monitoring compares with training.
    pub prerank: f32,
    pub ranker: f32,
    /// The policy rule that placed this item in the list.
    pub placed: Placement,
    /// For a locked placement, the slot it holds (0-based).
    pub slot: u16,
    /// Probability that the serving policy puts this item in its slot: 1 for the ranked
    /// order (deterministic), the bandit's estimate for exploration slots. Logged with the
    /// impression so that off-policy evaluation can reweight.
    pub propensity: f32,
}

/// How an item got its slot in the final list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// By score (after boosts, caps and diversity).
    #[default]
    Ranked,
    /// A pinned editorial slot.
    Pinned,
    /// An exploration slot chosen by the bandit.
    Exploring,
    /// An exploration slot guaranteed to a new item that still lacks impressions.
    NewItem,
    /// Padding from the popular list when the ranked list ran short.
    Fallback,
}

impl Placement {
    /// Stable name, used in traces and impression logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Ranked => "ranked",
            Placement::Pinned => "pinned",
            Placement::Exploring => "exploring",
            Placement::NewItem => "new_item",
            Placement::Fallback => "fallback",
        }
    }

    /// Whether a later selector must leave the item where it is.
    pub fn locked(self) -> bool {
        matches!(
            self,
            Placement::Pinned | Placement::Exploring | Placement::NewItem
        )
    }
}

impl Candidate {
    pub fn new(item: Idx) -> Self {
        Self {
            item,
            sources: 0,
            source_scores: [0.0; MAX_SOURCES],
            source_ranks: [u16::MAX; MAX_SOURCES],
            seed: NONE_IDX,
            row: 0,
            score: 0.0,
            prerank: f32::NAN,
            ranker: f32::NAN,
            placed: Placement::Ranked,
            slot: 0,
            propensity: 1.0,
        }
    }

    pub fn has_source(&self, slot: usize) -> bool {
        self.sources & (1 << slot) != 0
    }

    /// Slots that produced this candidate.
    pub fn source_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_SOURCES).filter(|&s| self.has_source(s))
    }
}

/// Feature values of all candidates of one request, row-major.
#[derive(Debug, Clone)]
pub struct FeatureBlock {
    pub schema: Arc<FeatureSchema>,
    pub values: Vec<f32>,
    /// Values that fell back to their declared default.
    pub missing: u64,
}

impl FeatureBlock {
    pub fn new(schema: Arc<FeatureSchema>, rows: usize) -> Self {
        let mut values = Vec::with_capacity(rows * schema.len());
        for _ in 0..rows {
            values.extend(schema.defaults());
        }
        Self {
            schema,
            values,
            missing: 0,
        }
    }

    pub fn row(&self, row: u32) -> &[f32] {
        let w = self.schema.len();
        &self.values[row as usize * w..(row as usize + 1) * w]
    }

    pub fn set(&mut self, row: u32, feature: usize, v: f32) {
        let w = self.schema.len();
        self.values[row as usize * w + feature] = v;
    }

    pub fn get(&self, row: u32, feature: usize) -> f32 {
        self.values[row as usize * self.schema.len() + feature]
    }
}

/// The candidates of one request and their features.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub items: Vec<Candidate>,
    pub features: FeatureBlock,
}

/// Why a filter removed a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    /// Index into `Candidates::items` at the time of the filter.
    pub index: usize,
    /// Stable machine-readable reason, e.g. `hidden`, `already_seen`.
    pub reason: &'static str,
}

/// One ranking stage's score and rank (0-based, among the candidates that stage scored) of
/// one item: the `explain=true` trace.
#[derive(Debug, Clone, PartialEq)]
pub struct StageScore {
    pub item: Idx,
    /// `prerank`, or the name of a heavy scorer (`gbdt`, then `boosts`, ...).
    pub stage: String,
    pub score: f32,
    pub rank: u32,
    /// How many candidates the stage scored.
    pub of: u32,
}

/// The explanation attached to a returned item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub text: String,
}

/// Appends each candidate's score and rank (by score, best first) under `stage`.
pub(crate) fn record_stage(items: &[Candidate], stage: &str, trace: &mut Vec<StageScore>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        items[b]
            .score
            .total_cmp(&items[a].score)
            .then(items[a].item.cmp(&items[b].item))
    });
    let of = items.len() as u32;
    trace.extend(order.iter().enumerate().map(|(rank, &k)| StageScore {
        item: items[k].item,
        stage: stage.to_string(),
        score: items[k].score,
        rank: rank as u32,
        of,
    }));
}
