//! Hydration and blend scoring on small real worlds.

use cascade_core::EventKind::{Click, Like};
use cascade_core::User;
use cascade_pipeline::testkit::{ctx, event, item, query, world};
use cascade_pipeline::{Candidate, Candidates, FeatureBlock, Hydrator, Scorer};
use cascade_ranking::{BlendConfig, BlendScorer, ItemHydrator, UserItemHydrator, default_schema};
use std::sync::Arc;

fn cands(items: &[u32]) -> Candidates {
    let mut c = Candidates {
        items: items.iter().map(|&i| Candidate::new(i)).collect(),
        features: FeatureBlock::new(Arc::new(default_schema()), items.len()),
    };
    for (row, x) in c.items.iter_mut().enumerate() {
        x.row = row as u32;
    }
    c
}

fn col(c: &Candidates, row: u32, name: &str) -> f32 {
    c.features
        .get(row, c.features.schema.index(name).expect("feature"))
}

#[test]
fn hydrators_fill_affinities_and_count_missing() {
    let items = vec![
        item(0, "A", "c1"),
        item(1, "A", "c2"),
        item(2, "B", "c1"),
        item(3, "B", "c3"),
    ];
    let users = vec![User {
        id: "u".into(),
        attributes: Default::default(),
        follows: vec!["c3".into()],
    }];
    let events = vec![
        event(Like, "u", 0, 10),
        event(Click, "u", 1, 20),
        event(Click, "v", 2, 30),
    ];
    let env = world(items, users, events);
    let c_ctx = ctx(&env, query("u", 5, 100));
    let mut c = cands(&[2, 3, 0, 42]);
    ItemHydrator.hydrate(&c_ctx, &mut c).expect("item");
    UserItemHydrator.hydrate(&c_ctx, &mut c).expect("user_item");
    assert!(col(&c, 0, "item_popularity") > 0.0, "2 was clicked");
    assert_eq!(
        col(&c, 1, "item_popularity"),
        0.0,
        "3 has no engagement: default"
    );
    assert_eq!(
        col(&c, 0, "user_category_affinity"),
        0.0,
        "u never touched B"
    );
    assert_eq!(
        col(&c, 2, "user_category_affinity"),
        1.0,
        "both of u's items are A"
    );
    assert_eq!(
        col(&c, 0, "user_creator_affinity"),
        0.5,
        "one of two is by c1"
    );
    assert_eq!(col(&c, 1, "user_follows_creator"), 1.0);
    assert!(
        c.features.missing >= 3,
        "unknown item 42 and 3's popularity fall back to defaults"
    );
}

#[test]
fn blend_scores_without_reordering_and_rewards_source_agreement() {
    let env = world((0..4).map(|n| item(n, "A", "c")).collect(), vec![], vec![]);
    let names = vec!["similar".to_string(), "popular".to_string()];
    let scorer = BlendScorer::new(BlendConfig::default(), &names);
    let mut c = cands(&[0, 1, 2]);
    c.items[0].sources = 0b01;
    c.items[0].source_scores[0] = 2.0;
    c.items[1].sources = 0b11;
    c.items[1].source_scores = [2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    c.items[2].sources = 0b10;
    c.items[2].source_scores[1] = 0.5;
    let before: Vec<u32> = c.items.iter().map(|x| x.item).collect();
    let mut out = vec![0.0; 3];
    scorer
        .score(&ctx(&env, query("u", 3, 10)), &c, &mut out)
        .expect("score");
    assert_eq!(before, c.items.iter().map(|x| x.item).collect::<Vec<_>>());
    assert!(out[1] > out[0] && out[0] > out[2], "{out:?}");
}
