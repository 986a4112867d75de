//! Business rules and exploration on small real worlds: blocklists, boosts, pinned and
//! sponsored slots, MMR, Thompson-sampled exploration with propensities.

use cascade_core::{EditorialList, EventKind, Mutation, TimeInput};
use cascade_pipeline::testkit::{ctx, event, item, query, world};
use cascade_pipeline::{
    Candidate, Candidates, FeatureBlock, Filter, Placement, Query, Scorer, Selector,
};
use cascade_policy::{
    Blocklist, BlocklistConfig, BoostRule, Boosts, Exploration, ExplorationConfig, Mmr, MmrConfig,
    PinnedSlots, SponsoredConfig, SponsoredLimit, TopScore, WindowDiversity,
};
use std::sync::Arc;

/// Candidates `items` with descending scores in the given order.
fn ranked(items: &[u32]) -> Candidates {
    let schema = Arc::new(cascade_features::FeatureSchema::new(vec![]));
    Candidates {
        items: items
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut c = Candidate::new(i);
                c.score = 100.0 - k as f32;
                c.row = k as u32;
                c
            })
            .collect(),
        features: FeatureBlock::new(schema, items.len()),
    }
}

fn ids(c: &Candidates) -> Vec<u32> {
    c.items.iter().map(|c| c.item).collect()
}

#[test]
fn blocklist_removes_listed_items_creators_categories_and_tags() {
    let mut items: Vec<_> = (0..6).map(|n| item(n, "A", "good")).collect();
    items[1].creator_id = Some("bad".into());
    items[2].categories = vec!["Gore".into()];
    items[3].tags = vec!["spoiler".into()];
    let env = world(items, vec![], vec![]);
    let cfg = BlocklistConfig {
        items: vec!["i4".into()],
        creators: vec!["bad".into()],
        categories: vec!["Gore".into()],
        tags: vec!["spoiler".into(), "unknown-tag".into()],
    };
    let c = ranked(&[0, 1, 2, 3, 4, 5]);
    let r = Blocklist { config: cfg }
        .filter(&ctx(&env, query("u", 5, 10)), &c)
        .expect("ok");
    let gone: Vec<(u32, &str)> = r
        .iter()
        .map(|x| (c.items[x.index].item, x.reason))
        .collect();
    assert_eq!(
        gone,
        vec![
            (1, "blocked"),
            (2, "blocked"),
            (3, "blocked"),
            (4, "blocked")
        ]
    );
    assert_eq!(
        Blocklist {
            config: BlocklistConfig::default()
        }
        .fail_mode(),
        cascade_pipeline::FailMode::Closed
    );
}

#[test]
fn boosts_and_demotions_add_to_matching_items_only() {
    let mut items: Vec<_> = (0..4).map(|n| item(n, "Drama", "c")).collect();
    items[1].categories = vec!["Comedy".into()];
    items[2].attributes = serde_json::from_str(r#"{"original": true}"#).expect("attrs");
    items[3].creator_id = Some("spammy".into());
    let env = world(items, vec![], vec![]);
    let rules = vec![
        BoostRule {
            name: "comedy_week".into(),
            category: Some("Comedy".into()),
            add: 0.5,
            ..Default::default()
        },
        BoostRule {
            name: "originals".into(),
            attribute: Some("original".into()),
            add: 0.25,
            ..Default::default()
        },
        BoostRule {
            name: "demote_spammy".into(),
            creator: Some("spammy".into()),
            add: -2.0,
            ..Default::default()
        },
    ];
    assert!(rules.iter().all(|r| r.validate().is_ok()));
    let c = ranked(&[0, 1, 2, 3]);
    let mut scores = vec![1.0f32; 4];
    Boosts { rules }
        .score(&ctx(&env, query("u", 4, 10)), &c, &mut scores)
        .expect("ok");
    assert_eq!(scores, vec![1.0, 1.5, 1.25, -1.0]);
    // A rule that matches nothing by construction is refused at configuration time.
    assert!(
        BoostRule {
            name: "empty".into(),
            add: 1.0,
            ..Default::default()
        }
        .validate()
        .is_err()
    );
}

fn editorial(id: &str, items: &[&str], pin: Option<u32>) -> Mutation {
    Mutation::UpsertEditorial(EditorialList {
        id: id.into(),
        title: format!("{id} picks"),
        items: items.iter().map(|s| s.to_string()).collect(),
        surfaces: vec![],
        starts_at: None,
        ends_at: Some(TimeInput(1_000_000)),
        boost: 1.0,
        pin,
    })
}

#[test]
fn pinned_slots_take_the_first_qualifying_editorial_item_and_survive_diversity() {
    let env = world(
        (0..12)
            .map(|n| item(n, &format!("c{}", n % 3), &format!("k{n}")))
            .collect(),
        vec![],
        vec![],
    );
    // i99 is unknown and i7 is not among the candidates (filtered): i9 qualifies.
    env.state
        .apply(&editorial("staff", &["i99", "i7", "i9", "i10"], Some(1)));
    env.state.apply(&editorial("unpinned", &["i11"], None));
    let c_ctx = ctx(&env, query("u", 5, 10));
    let mut c = ranked(&[0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]);
    TopScore.select(&c_ctx, &mut c).expect("ok");
    PinnedSlots.select(&c_ctx, &mut c).expect("ok");
    assert_eq!(c.items[1].item, 9);
    assert_eq!(c.items[1].placed, Placement::Pinned);
    assert_eq!(&ids(&c)[..5], &[0, 9, 1, 2, 3]);
    // Selecting again (as over fallback padding) pins nothing twice.
    PinnedSlots.select(&c_ctx, &mut c).expect("ok");
    assert_eq!(&ids(&c)[..5], &[0, 9, 1, 2, 3]);
    // Diversity reorders around the pinned slot but leaves it in place.
    WindowDiversity {
        config: Default::default(),
        sponsored: None,
    }
    .select(&c_ctx, &mut c)
    .expect("ok");
    assert_eq!(c.items[1].item, 9);
    // Past its end time the list pins nothing.
    let late = ctx(&env, query("u", 5, 2_000));
    let mut c = ranked(&[0, 1, 2, 3, 4, 9]);
    PinnedSlots.select(&late, &mut c).expect("ok");
    assert_eq!(ids(&c), vec![0, 1, 2, 3, 4, 9]);
}

#[test]
fn sponsored_items_are_capped_and_kept_below_the_minimum_position() {
    let mut items: Vec<_> = (0..10).map(|n| item(n, "A", "c")).collect();
    for n in [0, 1, 5, 6] {
        items[n].attributes = serde_json::from_str(r#"{"sponsored": true}"#).expect("attrs");
    }
    let env = world(items, vec![], vec![]);
    let c_ctx = ctx(&env, query("u", 8, 10));
    let mut c = ranked(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    SponsoredLimit {
        config: SponsoredConfig {
            max_items: 2,
            min_position: 2,
        },
    }
    .select(&c_ctx, &mut c)
    .expect("ok");
    // 0 and 1 wait for slot 2; 5 and 6 exceed the cap of two and are dropped.
    assert_eq!(ids(&c), vec![2, 3, 0, 1, 4, 7, 8, 9]);
}

#[test]
fn mmr_trades_relevance_for_novelty_by_lambda() {
    let env = world((0..4).map(|n| item(n, "A", "c")).collect(), vec![], vec![]);
    // Items 0 and 1 point the same way; 2 is orthogonal; 3 the opposite of 0.
    let mut m = env.models.load().clone_shallow();
    m.embeddings = Some(Arc::new(cascade_index::Embeddings {
        dim: 2,
        users: vec![],
        items: vec![1.0, 0.0, 1.0, 0.01, 0.0, 1.0, -1.0, 0.0],
        ..Default::default()
    }));
    env.models.publish(m);
    let c_ctx = ctx(&env, query("u", 3, 10));
    let run = |lambda: f32| {
        let mut c = ranked(&[0, 1, 2, 3]);
        Mmr {
            config: MmrConfig {
                lambda,
                pool_factor: 4,
            },
            sponsored: None,
        }
        .select(&c_ctx, &mut c)
        .expect("ok");
        ids(&c)[..3].to_vec()
    };
    assert_eq!(run(1.0), vec![0, 1, 2]);
    // Diversity-leaning: after 0, its near twin 1 is passed over.
    let low = run(0.3);
    assert_eq!(low[0], 0);
    assert!(!low.contains(&1), "{low:?}");
}

fn explore_world() -> cascade_pipeline::Env {
    // 40 items: 0..20 well exposed (500 impressions), 20..40 under-exposed; 39 is new.
    let mut items: Vec<_> = (0..40).map(|n| item(n, "A", &format!("k{n}"))).collect();
    items[39].created_at = Some(TimeInput(9_000_000));
    let mut events = Vec::new();
    for n in 0..20 {
        for k in 0..500 {
            events.push(event(EventKind::Impression, &format!("v{k}"), n, 100));
        }
    }
    // Under-exposed items with a good record so far.
    for n in 20..39 {
        for k in 0..10 {
            events.push(event(EventKind::Impression, &format!("v{k}"), n, 100));
        }
        for k in 0..(n % 5) {
            events.push(event(EventKind::Click, &format!("v{k}"), n, 101));
        }
    }
    world(items, vec![], events)
}

fn explore(env: &cascade_pipeline::Env, request_id: &str, n: usize) -> Candidates {
    let mut q: Query = query("u", n, 10_000);
    q.request_id = request_id.into();
    let c_ctx = ctx(env, q);
    let mut c = ranked(&(0..40).collect::<Vec<u32>>());
    TopScore.select(&c_ctx, &mut c).expect("ok");
    Exploration {
        config: ExplorationConfig {
            share: 0.2,
            first_slot: 2,
            ..Default::default()
        },
    }
    .select(&c_ctx, &mut c)
    .expect("ok");
    c
}

#[test]
fn exploration_fills_its_slots_deterministically_with_propensities() {
    let env = explore_world();
    let c = explore(&env, "req-1", 10);
    let slots: Vec<(usize, Placement, f32, u32)> = c
        .items
        .iter()
        .enumerate()
        .filter(|(_, x)| x.placed != Placement::Ranked)
        .map(|(p, x)| (p, x.placed, x.propensity, x.item))
        .collect();
    // Two slots (20 % of 10) at 2 and 6; the new item takes the first with certainty.
    assert_eq!(slots.len(), 2, "{slots:?}");
    assert_eq!(
        (slots[0].0, slots[0].1, slots[0].2, slots[0].3),
        (2, Placement::NewItem, 1.0, 39)
    );
    assert_eq!(slots[1].0, 6);
    assert_eq!(slots[1].1, Placement::Exploring);
    assert!(slots[1].2 > 0.0 && slots[1].2 <= 1.0);
    // Explored items are under-exposed and were not already in the exploited part.
    assert!((20..39).contains(&slots[1].3));
    // The exploited slots keep the best-scored items in order.
    let exploit: Vec<u32> = c
        .items
        .iter()
        .take(10)
        .filter(|x| x.placed == Placement::Ranked)
        .map(|x| x.item)
        .collect();
    assert_eq!(exploit, (0..8).collect::<Vec<u32>>());
    // Same request id, same list; the draws vary across requests.
    assert_eq!(ids(&explore(&env, "req-1", 10)), ids(&c));
    let picked: std::collections::HashSet<u32> = (0..40)
        .map(|k| explore(&env, &format!("req-{k}"), 10).items[6].item)
        .collect();
    assert!(picked.len() > 3, "{picked:?}");
}

#[test]
fn exploration_propensities_match_how_often_items_are_picked() {
    let env = explore_world();
    // Frequencies of the bandit's slot over many requests against each pick's logged
    // propensity: the mean propensity of an item ≈ its pick frequency.
    let runs = 600;
    let mut freq = std::collections::HashMap::<u32, (usize, f32)>::new();
    for k in 0..runs {
        let c = explore(&env, &format!("p-{k}"), 10);
        let x = c.items[6];
        let e = freq.entry(x.item).or_default();
        e.0 += 1;
        e.1 += x.propensity;
    }
    let mut checked = 0;
    for (item, (count, psum)) in freq {
        if count < 40 {
            continue;
        }
        checked += 1;
        let observed = count as f32 / runs as f32;
        let logged = psum / count as f32;
        assert!(
            (observed - logged).abs() < 0.12,
            "item {item}: picked {observed:.3} of requests, logged propensity {logged:.3}"
        );
    }
    assert!(checked >= 2, "too few frequent picks to compare");
}

#[test]
fn a_followed_boost_applies_only_to_creators_the_user_follows() {
    let items: Vec<_> = (0..4).map(|n| item(n, "Drama", &format!("c{n}"))).collect();
    let follow = cascade_core::Event {
        kind: EventKind::Follow,
        target: cascade_core::Target::Creator("c1".into()),
        ..event(EventKind::Follow, "fan", 0, 5)
    };
    let env = world(items, vec![], vec![follow]);
    let rules = vec![BoostRule {
        name: "followed".into(),
        followed: Some(true),
        add: 1.0,
        ..Default::default()
    }];
    assert!(rules[0].validate().is_ok());
    let c = ranked(&[0, 1, 2, 3]);
    for (user, want) in [("fan", vec![1.0, 2.0, 1.0, 1.0]), ("other", vec![1.0; 4])] {
        let mut scores = vec![1.0f32; 4];
        Boosts {
            rules: rules.clone(),
        }
        .score(&ctx(&env, query(user, 4, 10)), &c, &mut scores)
        .expect("ok");
        assert_eq!(scores, want, "{user}");
    }
}
