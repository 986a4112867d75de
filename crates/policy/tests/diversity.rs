//! Property tests of the diversity selector over random catalogs and scores.

use cascade_pipeline::testkit::{ctx, item, query, world};
use cascade_pipeline::{Candidate, Candidates, FeatureBlock, Selector};
use cascade_policy::{DiversityConfig, WindowDiversity};
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;

/// Catalog: item `i` has category `cats[i]` and creator `creators[i]`.
fn check(cats: &[u8], creators: &[u8], scores: &[f32], cfg: DiversityConfig, n: usize) -> usize {
    let items = cats
        .iter()
        .zip(creators)
        .enumerate()
        .map(|(i, (c, k))| item(i as u32, &format!("c{c}"), &format!("k{k}")))
        .collect();
    let env = world(items, vec![], vec![]);
    let c_ctx = ctx(&env, query("u", n, 10));
    let mut cands = Candidates {
        items: scores
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let mut c = Candidate::new(i as u32);
                c.score = s;
                c.row = i as u32;
                c
            })
            .collect(),
        features: FeatureBlock::new(Arc::new(cascade_features::FeatureSchema::new(vec![])), 0),
    };
    WindowDiversity {
        config: cfg,
        sponsored: None,
    }
    .select(&c_ctx, &mut cands)
    .expect("select");
    let out: Vec<usize> = cands.items.iter().map(|c| c.item as usize).collect();
    // At most `n` plus as many rule-keeping spares (the executor keeps the first `n`; a
    // later selector may need the spares), never empty while candidates exist, no
    // duplicates.
    assert!(out.len() <= 2 * n);
    assert!(scores.is_empty() || n == 0 || !out.is_empty());
    assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
    // The rule holds in every window of `window` consecutive slots.
    for w in out.windows(cfg.window.min(out.len()).max(1)) {
        for c in 0..4u8 {
            let k = w.iter().filter(|&&i| cats[i] == c).count();
            assert!(k <= cfg.max_per_category, "category {c} {k}× in {w:?}");
        }
        for c in 0..3u8 {
            let k = w.iter().filter(|&&i| creators[i] == c).count();
            assert!(k <= cfg.max_per_creator, "creator {c} {k}× in {w:?}");
        }
    }
    // The first slot is the best-scored candidate (ties by item).
    if let Some(&first) = out.first() {
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
            .expect("best");
        assert_eq!(first, best);
    }
    out.len()
}

proptest! {
    #[test]
    fn every_window_respects_the_caps(
        rows in prop::collection::vec((0u8..4, 0u8..3, -10f32..10.0), 0..40),
        window in 1usize..7,
        max_per_category in 1usize..4,
        max_per_creator in 1usize..3,
        n in 1usize..25,
    ) {
        let cats: Vec<u8> = rows.iter().map(|r| r.0).collect();
        let creators: Vec<u8> = rows.iter().map(|r| r.1).collect();
        let scores: Vec<f32> = rows.iter().map(|r| r.2).collect();
        let cfg = DiversityConfig { window, max_per_category, max_per_creator };
        check(&cats, &creators, &scores, cfg, n);
    }
}

#[test]
fn a_list_that_can_be_diverse_is_filled() {
    // Three creators and four categories in rotation: windows of 3 can always be filled.
    let cats: Vec<u8> = (0..24).map(|i| (i % 4) as u8).collect();
    let creators: Vec<u8> = (0..24).map(|i| (i % 3) as u8).collect();
    // Scores favour creator 0 heavily; the selector must still interleave.
    let scores: Vec<f32> = (0..24)
        .map(|i| {
            if i % 3 == 0 {
                100.0 - i as f32
            } else {
                -(i as f32)
            }
        })
        .collect();
    let cfg = DiversityConfig {
        window: 3,
        max_per_category: 1,
        max_per_creator: 1,
    };
    assert_eq!(check(&cats, &creators, &scores, cfg, 12), 24);
}
