//! Hydration and blend scoring on small real worlds.

use cascade_core::EventKind::{Click, Like};
use cascade_core::User;
use cascade_gbdt::{Lists, Params};
use cascade_pipeline::testkit::{ctx, event, item, query, world};
use cascade_pipeline::{Candidate, Candidates, FeatureBlock, Hydrator, Scorer};
use cascade_ranking::{
    BlendConfig, BlendScorer, ContextHydrator, GbdtScorer, ItemHydrator, RetrievalHydrator,
    UserHydrator, UserItemHydrator, default_schema,
};
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
    let schema = default_schema();
    ItemHydrator::new(&schema)
        .expect("item")
        .hydrate(&c_ctx, &mut c)
        .expect("item");
    UserItemHydrator::new(&schema)
        .expect("user_item")
        .hydrate(&c_ctx, &mut c)
        .expect("user_item");
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

#[test]
fn user_retrieval_and_context_features_describe_the_request() {
    let items = (0..4).map(|n| item(n, "A", "c1")).collect();
    let events = vec![
        event(Like, "u", 0, 1_000),
        event(Click, "u", 1, 90_000),
        event(Click, "v", 2, 30),
    ];
    let env = world(items, vec![], events);
    let schema = default_schema();
    let names: Vec<String> = cascade_ranking::hydrate::DEFAULT_SOURCES
        .map(String::from)
        .to_vec();
    // Asked one hour after u's last event: Friday 1970-01-02, 02:00 UTC.
    let now_s = 90_000 + 3600;
    let mut q = query("u", 5, now_s);
    q.context.device = Some("ios".into());
    let c_ctx = ctx(&env, q);
    let mut c = cands(&[2, 3]);
    c.items[0].sources = 0b1;
    c.items[0].source_scores[0] = 4.0;
    c.items[0].source_ranks[0] = 0;
    c.items[1].sources = 0b101;
    c.items[1].source_scores[0] = 2.0;
    c.items[1].source_ranks[0] = 1;
    c.items[1].source_scores[2] = 7.0;
    c.items[1].source_ranks[2] = 0;
    RetrievalHydrator::new(&schema, &names)
        .expect("retrieval")
        .hydrate(&c_ctx, &mut c)
        .expect("retrieval");
    UserHydrator::new(&schema)
        .expect("user")
        .hydrate(&c_ctx, &mut c)
        .expect("user");
    ContextHydrator::new(&schema)
        .expect("context")
        .hydrate(&c_ctx, &mut c)
        .expect("context");
    assert_eq!(col(&c, 1, "src_similar_norm"), 0.5);
    assert_eq!(col(&c, 1, "src_popular_rank"), 0.0);
    assert_eq!(
        col(&c, 0, "src_popular_rank"),
        1000.0,
        "absent: declared default"
    );
    assert_eq!(col(&c, 1, "n_sources"), 2.0);
    assert_eq!(
        col(&c, 0, "user_events_1d"),
        1.0,
        "only the click is within a day"
    );
    assert_eq!(col(&c, 0, "user_events_7d"), 2.0);
    assert!((col(&c, 0, "user_hours_since_last") - 2f32.ln()).abs() < 1e-5);
    assert_eq!(col(&c, 0, "hour_of_day"), 2.0);
    assert_eq!(col(&c, 0, "day_of_week"), 4.0, "Friday (0 = Monday)");
    assert!(col(&c, 0, "device") >= 0.0);
    assert_eq!(col(&c, 0, "device"), col(&c, 1, "device"));
}

/// A model over a few schema columns, trained on synthetic lists in its own column order.
fn tiny_model(names: &[String]) -> cascade_gbdt::Model {
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut off = vec![0];
    for q in 0..40 {
        for r in 0..30 {
            let a = ((q * 7 + r * 13) % 29) as f32;
            let b = ((q * 3 + r * 5) % 11) as f32;
            x.extend([a, b]);
            y.push(if a > 20.0 { 1.0 } else { 0.0 });
        }
        off.push(y.len());
    }
    let p = Params {
        trees: 10,
        min_data_in_leaf: 5,
        ..Params::default()
    };
    cascade_gbdt::train(&Lists::new(&x, 2, &y, &off), None, names, &p, &|_, _| {})
        .expect("train")
        .0
}

#[test]
fn gbdt_scorer_reads_features_by_name_and_fails_without_a_model() {
    let mut env = world((0..3).map(|n| item(n, "A", "c")).collect(), vec![], vec![]);
    let mut c = cands(&[0, 1, 2]);
    // Serving layout: the model's features sit at other columns than in training.
    let schema = c.features.schema.clone();
    let (pop, age) = (
        schema.index("item_popularity").expect("col"),
        schema.index("item_age_days").expect("col"),
    );
    for (row, (p, a)) in [(25.0, 1.0), (3.0, 9.0), (21.0, 4.0)]
        .into_iter()
        .enumerate()
    {
        c.features.set(row as u32, pop, p);
        c.features.set(row as u32, age, a);
    }
    let scorer = GbdtScorer::default();
    let mut out = vec![0.0; 3];
    let err = scorer
        .score(&ctx(&env, query("u", 3, 10)), &c, &mut out)
        .expect_err("no ranker");
    assert!(err.to_string().contains("ranker"), "{err}");

    let names = vec!["item_popularity".to_string(), "item_age_days".to_string()];
    let model = Arc::new(tiny_model(&names));
    let mut m = (*env.models.load()).clone_shallow();
    m.ranker = Some(model.clone());
    env.models.publish(m);
    scorer
        .score(&ctx(&env, query("u", 3, 10)), &c, &mut out)
        .expect("score");
    for (row, o) in out.iter().enumerate() {
        let training_row = [
            c.features.get(row as u32, pop),
            c.features.get(row as u32, age),
        ];
        assert_eq!(*o, model.predict(&training_row), "row {row}");
    }
    assert!(out[0] > out[1], "{out:?}");
    // A model needing a feature this surface does not hydrate is refused, not guessed.
    let other = vec!["item_popularity".to_string(), "not_served".to_string()];
    let mut m = (*env.models.load()).clone_shallow();
    m.ranker = Some(Arc::new(tiny_model(&other)));
    env.models.publish(m);
    let err = scorer
        .score(&ctx(&env, query("u", 3, 10)), &c, &mut out)
        .expect_err("schema");
    assert!(err.to_string().contains("not_served"), "{err}");
    let _ = &mut env;
}
