//! Why the heavy ranker scored an item as it did: path attributions of the served features.

use cascade_gbdt::Model;
use cascade_pipeline::FeatureBlock;

/// The ranker's baseline and its strongest feature contributions for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// Sum of the trees' expected values: the score before any feature is looked at.
    pub bias: f32,
    /// The `top` features with the largest absolute contribution, largest first.
    pub top: Vec<(String, f32)>,
    /// Sum of every other feature's contribution: `bias + top + other` is the score.
    pub other: f32,
}

/// Attributions of the candidates at `rows` of `block`, or `None` when the model does not fit
/// the block's schema. For `explain=true` responses only: it walks every tree per row.
pub fn attributions(
    model: &Model,
    block: &FeatureBlock,
    rows: &[u32],
    top: usize,
) -> Option<Vec<Attribution>> {
    let names: Vec<&str> = block.schema.names().collect();
    let mut map = Vec::new();
    model.bind(&names, &mut map).ok()?;
    let exp = model.expectations();
    let width = block.schema.len();
    let mut row = vec![0f32; model.features.len()];
    let mut credit = vec![0f32; model.features.len()];
    let out = rows
        .iter()
        .map(|&r| {
            let start = r as usize * width;
            let served = block.values.get(start..start + width).unwrap_or(&[]);
            for (dst, &col) in row.iter_mut().zip(&map) {
                *dst = served.get(col as usize).copied().unwrap_or(0.0);
            }
            credit.iter_mut().for_each(|c| *c = 0.0);
            let bias = model.contributions(&exp, &row, &mut credit);
            let mut order: Vec<usize> = (0..credit.len()).filter(|&f| credit[f] != 0.0).collect();
            order.sort_by(|&a, &b| credit[b].abs().total_cmp(&credit[a].abs()));
            let other = order.iter().skip(top).map(|&f| credit[f]).sum();
            Attribution {
                bias,
                top: order
                    .into_iter()
                    .take(top)
                    .map(|f| (model.features[f].clone(), credit[f]))
                    .collect(),
                other,
            }
        })
        .collect();
    Some(out)
}
