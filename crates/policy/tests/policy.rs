//! Policy components on small real worlds.

use cascade_core::EventKind::{Click, Hide, Like};
use cascade_core::User;
use cascade_pipeline::testkit::{ctx, event, item, query, world};
use cascade_pipeline::{
    Candidate, Candidates, Explainer, FeatureBlock, Filter, Hit, Selector, SourceSlot,
};
use cascade_policy::{SafetyFilter, SeenFilter, TemplateExplainer, TopScore};
use cascade_sources::ItemSimilaritySource;
use std::sync::Arc;
use std::time::Duration;

fn cands(items: &[u32]) -> Candidates {
    let schema = Arc::new(cascade_features::FeatureSchema::new(vec![]));
    Candidates {
        items: items.iter().map(|&i| Candidate::new(i)).collect(),
        features: FeatureBlock::new(schema, items.len()),
    }
}

fn removed(r: Vec<cascade_pipeline::Removal>, c: &Candidates) -> Vec<(u32, &'static str)> {
    r.into_iter()
        .map(|x| (c.items[x.index].item, x.reason))
        .collect()
}

#[test]
fn safety_removes_hidden_mature_deleted_and_user_hidden_items() {
    let mut items: Vec<_> = (0..6).map(|n| item(n, "A", "c")).collect();
    items[1].hidden = true;
    items[2].mature = true;
    // Hiding item 3 hides its creator `c3` (item 5 too); creator `c4` is hidden by name.
    items[3].creator_id = Some("c3".into());
    items[5].creator_id = Some("c3".into());
    items[4].creator_id = Some("c4".into());
    let users = vec![
        User {
            id: "kid".into(),
            attributes: Default::default(),
            follows: vec![],
        },
        User {
            id: "adult".into(),
            attributes: serde_json::from_str(r#"{"allow_mature": true}"#).expect("attrs"),
            follows: vec![],
        },
    ];
    let mut hide_creator = event(Hide, "kid", 0, 10);
    hide_creator.target = cascade_core::Target::Creator("c4".into());
    let env = world(
        items,
        users,
        vec![
            event(Hide, "kid", 3, 10),
            hide_creator,
            event(Click, "x", 9, 10),
        ],
    );
    let c = cands(&[0, 1, 2, 3, 4, 5, 99]);
    let kid = removed(
        SafetyFilter
            .filter(&ctx(&env, query("kid", 5, 100)), &c)
            .expect("ok"),
        &c,
    );
    assert_eq!(
        kid,
        vec![
            (1, "hidden"),
            (2, "mature"),
            (3, "hidden_by_user"),
            (4, "creator_hidden_by_user"),
            (5, "creator_hidden_by_user"),
            (99, "unknown_or_deleted")
        ]
    );
    let adult = removed(
        SafetyFilter
            .filter(&ctx(&env, query("adult", 5, 100)), &c)
            .expect("ok"),
        &c,
    );
    assert_eq!(adult, vec![(1, "hidden"), (99, "unknown_or_deleted")]);
    // Items only seen in events (never upserted; `i9` got index 6) are unknown too.
    let c = cands(&[6]);
    assert_eq!(
        SafetyFilter
            .filter(&ctx(&env, query("adult", 5, 100)), &c)
            .expect("ok")
            .len(),
        1
    );
}

#[test]
fn seen_filter_respects_now_session_and_exclude() {
    let items: Vec<_> = (0..6).map(|n| item(n, "A", "c")).collect();
    let env = world(
        items,
        vec![],
        vec![event(Click, "u", 0, 10), event(Like, "u", 1, 50)],
    );
    let c = cands(&[0, 1, 2, 3, 4]);
    let mut q = query("u", 5, 30);
    q.session_item_ids = vec!["i2".into()];
    q.exclude = vec!["i3".into()];
    let r = removed(SeenFilter.filter(&ctx(&env, q), &c).expect("ok"), &c);
    // At t=30s the like of i1 (t=50s) has not happened yet.
    assert_eq!(
        r,
        vec![(0, "already_seen"), (2, "in_session"), (3, "excluded")]
    );
    let r = removed(
        SeenFilter
            .filter(&ctx(&env, query("u", 5, 60)), &c)
            .expect("ok"),
        &c,
    );
    assert_eq!(r, vec![(0, "already_seen"), (1, "already_seen")]);
}

#[test]
fn top_score_orders_by_score_ties_by_item() {
    let env = world((0..6).map(|n| item(n, "A", "c")).collect(), vec![], vec![]);
    let mut c = cands(&[0, 1, 2, 3, 4, 5]);
    for (cand, s) in c.items.iter_mut().zip([0.1, 0.9, 0.5, 0.9, 0.2, 0.0]) {
        cand.score = s;
    }
    TopScore
        .select(&ctx(&env, query("u", 3, 10)), &mut c)
        .expect("ok");
    // The executor keeps the first `n`; selectors after this one still see the rest.
    let got: Vec<u32> = c.items.iter().map(|c| c.item).collect();
    assert_eq!(got, vec![1, 3, 2, 4, 0, 5]);
}

#[test]
fn explanations_name_the_real_seed_and_category() {
    let env = world(
        (0..4).map(|n| item(n, "Comedy", "c")).collect(),
        vec![],
        vec![event(Like, "u", 0, 10), event(Click, "u", 1, 20)],
    );
    let source = Arc::new(ItemSimilaritySource {
        config: Default::default(),
        pool: env.pool.clone(),
    });
    let slots = vec![SourceSlot {
        source,
        limit: 10,
        timeout: Duration::from_millis(10),
        protected: false,
    }];
    let c = ctx(&env, query("u", 5, 100));
    let seeded = |seed| {
        let mut c = Candidate::new(2);
        c.sources = 1;
        let h = Hit {
            item: 2,
            score: 1.0,
            seed,
        };
        c.seed = h.seed;
        c
    };
    let r = TemplateExplainer::default().explain(&c, &seeded(0), &slots);
    assert_eq!(
        (r.code, r.text.as_str()),
        ("because_you_liked", "Because you liked Title 0")
    );
    let r = TemplateExplainer::default().explain(&c, &seeded(1), &slots);
    assert_eq!(r.code, "similar_to_recent");
    assert!(r.text.contains("Title 1"));
    let r = TemplateExplainer::default().explain(&c, &Candidate::new(3), &slots);
    assert_eq!(
        (r.code, r.text.as_str()),
        ("popular_in_category", "Popular this week in Comedy")
    );
}

#[test]
fn explanations_for_follows_and_trending_name_creator_and_category() {
    use cascade_sources::{FollowsSource, TrendingSource};
    let env = world(vec![item(0, "Jazz", "miles")], vec![], vec![]);
    let c = ctx(&env, query("u", 5, 100));
    let slot = |source: Arc<dyn cascade_pipeline::CandidateSource>| SourceSlot {
        source,
        limit: 10,
        timeout: Duration::from_millis(10),
        protected: false,
    };
    let slots = vec![
        slot(Arc::new(TrendingSource)),
        slot(Arc::new(FollowsSource {
            pool: env.pool.clone(),
        })),
    ];
    let mut cand = Candidate::new(0);
    cand.sources = 0b01;
    let r = TemplateExplainer::default().explain(&c, &cand, &slots);
    assert_eq!(
        (r.code, r.text.as_str()),
        ("trending", "Trending in Jazz today")
    );
    cand.sources = 0b11;
    let r = TemplateExplainer::default().explain(&c, &cand, &slots);
    assert_eq!(
        (r.code, r.text.as_str()),
        (
            "from_followed_creator",
            "New from miles, a creator you follow"
        )
    );
}
