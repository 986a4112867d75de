//! Property test of the frequency cap against a direct count over random impression logs.

use cascade_core::EventKind;
use cascade_pipeline::testkit::{ctx, event, item, query, world};
use cascade_pipeline::{Candidate, Candidates, FeatureBlock, Filter};
use cascade_policy::{FrequencyCap, FrequencyCapConfig};
use proptest::prelude::*;
use std::sync::Arc;

proptest! {
    #[test]
    fn an_item_is_capped_exactly_when_shown_too_often_since_last_engaged(
        shown in prop::collection::vec((0u32..4, 1i64..100_000), 0..40),
        clicks in prop::collection::vec((0u32..4, 1i64..100_000), 0..6),
        now_s in 1i64..120_000,
        max_impressions in 1u32..4,
        window_s in 1u32..100_000,
    ) {
        let mut events: Vec<_> = shown
            .iter()
            .map(|&(i, t)| event(EventKind::Impression, "u", i, t))
            .collect();
        events.extend(clicks.iter().map(|&(i, t)| event(EventKind::Click, "u", i, t)));
        let env = world((0..4).map(|n| item(n, "A", "c")).collect(), vec![], events);
        let c_ctx = ctx(&env, query("u", 4, now_s));
        let cands = Candidates {
            items: (0..4u32)
                .map(|i| {
                    let mut c = Candidate::new(i);
                    c.row = i;
                    c
                })
                .collect(),
            features: FeatureBlock::new(Arc::new(cascade_features::FeatureSchema::new(vec![])), 4),
        };
        let config = FrequencyCapConfig { max_impressions, window_s };
        let removed: Vec<usize> = FrequencyCap { config }
            .filter(&c_ctx, &cands)
            .expect("filter")
            .into_iter()
            .map(|r| r.index)
            .collect();
        // Direct count: impressions in [now - window, now) after the last click before now.
        let expected: Vec<usize> = (0..4u32)
            .filter(|&i| {
                let last = clicks.iter().filter(|&&(c, t)| c == i && t < now_s).map(|&(_, t)| t).max();
                let n = shown
                    .iter()
                    .filter(|&&(s, t)| {
                        s == i
                            && t >= now_s - i64::from(window_s)
                            && t < now_s
                            && last.is_none_or(|l| l < t)
                    })
                    .count();
                n >= max_impressions as usize
            })
            .map(|i| i as usize)
            .collect();
        prop_assert_eq!(removed, expected);
    }
}
