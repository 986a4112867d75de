//! Gradient-boosted trees for the heavy ranker: LambdaMART training on ranked lists and a
//! flat ensemble that scores a request's candidates without allocating.
//!
//! Written here because no maintained crate builds with a plain `cargo build` and offers the
//! lambdarank objective (see ARCHITECTURE.md); its NDCG is held against LightGBM's on the same
//! lists (`bench/peer_lightgbm.py`).

mod model;
mod train;

pub use model::{Bound, FORMAT, Model, Node, Root};
pub use train::{Params, Report, mean_ndcg, train};

#[derive(Debug, thiserror::Error)]
pub enum GbdtError {
    #[error("invalid training parameters: {0}")]
    Params(String),
    #[error("invalid training data: {0}")]
    Data(String),
    #[error("invalid model: {0}")]
    Format(String),
    #[error("model does not fit the served features: {0}")]
    Schema(String),
}

/// Ranked lists: row-major features (`width` per row), one label per row, and list
/// boundaries (`offsets[q]..offsets[q + 1]` are list `q`'s rows).
#[derive(Debug, Clone, Copy)]
pub struct Lists<'a> {
    pub values: &'a [f32],
    pub width: usize,
    pub labels: &'a [f32],
    pub offsets: &'a [usize],
}

impl<'a> Lists<'a> {
    pub fn new(values: &'a [f32], width: usize, labels: &'a [f32], offsets: &'a [usize]) -> Self {
        Self {
            values,
            width,
            labels,
            offsets,
        }
    }

    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    pub fn lists(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.values[r * self.width..(r + 1) * self.width]
    }

    pub fn value(&self, r: usize, f: usize) -> f32 {
        self.values[r * self.width + f]
    }

    pub fn validate(&self) -> Result<(), GbdtError> {
        let bad = |m: String| Err(GbdtError::Data(m));
        if self.width == 0 || self.values.len() != self.labels.len() * self.width {
            return bad(format!(
                "{} values for {} rows of width {}",
                self.values.len(),
                self.labels.len(),
                self.width
            ));
        }
        if self.offsets.first() != Some(&0)
            || self.offsets.last() != Some(&self.labels.len())
            || self.offsets.windows(2).any(|w| w[0] >= w[1])
        {
            return bad("list offsets must rise from 0 to the row count".into());
        }
        if self.labels.iter().any(|l| !(l.is_finite() && *l >= 0.0)) {
            return bad("labels must be finite and non-negative".into());
        }
        if u32::try_from(self.labels.len()).is_err() {
            return bad("too many rows".into());
        }
        Ok(())
    }
}

/// NDCG@k of one list ordered by `scores` (gain 2^label − 1, ties broken by position);
/// a list without relevant rows scores 1, as in LightGBM.
pub fn ndcg_at(scores: &[f32], labels: &[f32], k: usize) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let gain = |y: f32| 2f64.powf(f64::from(y)) - 1.0;
    let disc = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = order
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &r)| gain(labels[r]) * disc(i))
        .sum();
    let mut ideal: Vec<f32> = labels.to_vec();
    ideal.sort_unstable_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &y)| gain(y) * disc(i))
        .sum();
    if idcg > 0.0 { dcg / idcg } else { 1.0 }
}
