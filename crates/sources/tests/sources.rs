//! Candidate sources on small real worlds.

use cascade_core::EventKind::{Click, Like, Skip};
use cascade_pipeline::CandidateSource;
use cascade_pipeline::testkit::{ctx, event, item, query, world};
use cascade_sources::{ItemSimilaritySource, PopularSource, SimilarConfig};

fn catalog() -> Vec<cascade_core::Item> {
    (0..10)
        .map(|n| item(n, if n < 5 { "A" } else { "B" }, "c"))
        .collect()
}

#[tokio::test]
async fn popular_ranks_by_engagement_with_normalised_scores() {
    let mut events = Vec::new();
    for u in 0..5 {
        events.push(event(Click, &format!("u{u}"), 3, 100));
    }
    events.push(event(Click, "u0", 7, 100));
    let env = world(catalog(), vec![], events);
    let hits = PopularSource
        .retrieve(&ctx(&env, query("x", 10, 1000)), 2)
        .await
        .expect("hits");
    assert_eq!(hits.len(), 2);
    assert_eq!((hits[0].item, hits[0].score), (3, 1.0));
    assert_eq!(hits[1].item, 7);
    assert!(hits[1].score < 1.0);
}

#[tokio::test]
async fn similar_follows_directed_transitions_from_recent_seeds() {
    // Many users go 0 → 1 → 2; one user goes 5 → 6.
    let mut events = Vec::new();
    for u in 0..6 {
        let user = format!("u{u}");
        events.push(event(Click, &user, 0, 10));
        events.push(event(Click, &user, 1, 20));
        events.push(event(Click, &user, 2, 30));
    }
    events.push(event(Click, "w", 5, 10));
    events.push(event(Click, "w", 6, 20));
    // The target user just watched 1 (and long ago 5); they skipped 0.
    events.push(event(Click, "me", 5, 50));
    events.push(event(Like, "me", 1, 100));
    events.push(event(Skip, "me", 0, 110));
    let env = world(catalog(), vec![], events);
    let src = ItemSimilaritySource {
        config: SimilarConfig::default(),
        pool: env.pool.clone(),
    };
    let hits = src
        .retrieve(&ctx(&env, query("me", 10, 1000)), 10)
        .await
        .expect("hits");
    assert_eq!(
        hits[0].item, 2,
        "what follows the most recent seed comes first: {hits:?}"
    );
    assert_eq!(hits[0].seed, 1);
    assert!(
        hits.iter().any(|h| h.item == 6 && h.seed == 5),
        "older seed still contributes"
    );
    // Point in time: before "me" watched item 1, only the seed 5 exists. (Co-visitation
    // itself is an artifact built at one time, so it may know transitions made later.)
    let early = src
        .retrieve(&ctx(&env, query("me", 10, 60)), 10)
        .await
        .expect("hits");
    assert!(early.iter().any(|h| h.item == 6), "{early:?}");
    assert!(early.iter().all(|h| h.seed == 5), "{early:?}");
}

#[tokio::test]
async fn session_items_seed_cold_users() {
    let mut events = Vec::new();
    for u in 0..4 {
        events.push(event(Click, &format!("u{u}"), 7, 10));
        events.push(event(Click, &format!("u{u}"), 8, 20));
    }
    let env = world(catalog(), vec![], events);
    let src = ItemSimilaritySource {
        config: SimilarConfig::default(),
        pool: env.pool.clone(),
    };
    let mut q = query("stranger", 5, 1000);
    assert!(
        src.retrieve(&ctx(&env, q.clone()), 5)
            .await
            .expect("none")
            .is_empty()
    );
    q.session_item_ids = vec!["i7".into()];
    let hits = src.retrieve(&ctx(&env, q), 5).await.expect("hits");
    assert_eq!(hits[0].item, 8);
    assert_eq!(hits[0].seed, 7);
}

#[tokio::test]
async fn trending_fresh_and_follows() {
    use cascade_core::{EventKind::View, TimeInput, User};
    use cascade_sources::{FollowsSource, FreshSource, TrendingSource};
    let day = 86_400;
    let mut items = catalog();
    // i8 and i9 are new (created a day before "now"); i1, i2 are by the followed creator.
    for (n, created) in [(8usize, 9 * day), (9, 9 * day + 60)] {
        items[n].created_at = Some(TimeInput(created * 1000));
    }
    items[1].creator_id = Some("fav".into());
    items[2].creator_id = Some("fav".into());
    items[2].created_at = Some(TimeInput(5 * day * 1000));
    let users = vec![User {
        id: "me".into(),
        attributes: Default::default(),
        follows: vec!["fav".into()],
    }];
    let mut events = Vec::new();
    // i4: steady over ten days; i6: a burst in the last hours.
    for d in 0..10 {
        events.push(event(View, &format!("s{d}"), 4, d * day));
    }
    for k in 0..6 {
        events.push(event(View, &format!("b{k}"), 6, 10 * day - 3600 + k * 60));
    }
    let env = world(items, users, events);
    let now = 10 * day;
    let trending = TrendingSource
        .retrieve(&ctx(&env, query("me", 5, now)), 5)
        .await
        .expect("trending");
    assert_eq!(
        trending.first().map(|h| h.item),
        Some(6),
        "the burst trends: {trending:?}"
    );
    assert!(
        trending.iter().all(|h| h.item != 4),
        "a steady trickle below support does not"
    );
    let fresh = FreshSource::default()
        .retrieve(&ctx(&env, query("me", 5, now)), 5)
        .await
        .expect("fresh");
    let got: Vec<u32> = fresh.iter().map(|h| h.item).collect();
    assert_eq!(got, vec![9, 8], "newest first, only items within 72 h");
    let follows = FollowsSource {
        pool: env.pool.clone(),
    }
    .retrieve(&ctx(&env, query("me", 5, now)), 5)
    .await
    .expect("follows");
    let got: Vec<u32> = follows.iter().map(|h| h.item).collect();
    assert_eq!(
        got,
        vec![2, 1],
        "the followed creator's items, newest first"
    );
    // Before i2 was created it is not offered.
    let early = FollowsSource {
        pool: env.pool.clone(),
    }
    .retrieve(&ctx(&env, query("me", 5, 4 * day)), 5)
    .await
    .expect("follows");
    assert_eq!(early.iter().map(|h| h.item).collect::<Vec<_>>(), vec![1]);
    assert!(
        FollowsSource {
            pool: env.pool.clone()
        }
        .retrieve(&ctx(&env, query("x", 5, now)), 5)
        .await
        .expect("none")
        .is_empty()
    );
}

/// Users u0..u9 like items 0..5, users v0..v9 items 5..10; each misses one of their group.
fn taste_groups() -> (cascade_pipeline::Env, cascade_sources::EmbeddingSource) {
    let mut events = Vec::new();
    for u in 0..10u32 {
        for i in 0..5u32 {
            if i != u % 5 {
                events.push(event(Click, &format!("u{u}"), i, i64::from(10 + i)));
                events.push(event(Click, &format!("v{u}"), 5 + i, i64::from(10 + i)));
            }
        }
    }
    let env = world(catalog(), vec![], events);
    let src = cascade_sources::EmbeddingSource {
        config: cascade_sources::EmbeddingConfig::default(),
        pool: env.pool.clone(),
    };
    (env, src)
}

#[tokio::test]
async fn embeddings_retrieve_the_users_taste_group() {
    let (env, src) = taste_groups();
    let hits = src
        .retrieve(&ctx(&env, query("u3", 10, 1000)), 5)
        .await
        .expect("hits");
    assert!(
        hits.iter().all(|h| h.item < 5),
        "u3's taste is items 0..5: {hits:?}"
    );
    let hits = src
        .retrieve(&ctx(&env, query("v1", 10, 1000)), 5)
        .await
        .expect("hits");
    assert!(
        hits.iter().all(|h| h.item >= 5),
        "v1's taste is items 5..10: {hits:?}"
    );
    // A cold user with a session item gets that item's group.
    let mut q = query("stranger", 5, 1000);
    q.session_item_ids = vec!["i7".into()];
    let hits = src.retrieve(&ctx(&env, q), 3).await.expect("hits");
    assert!(hits.iter().all(|h| h.item >= 5), "{hits:?}");
    // Nothing known about the user: nothing to say.
    assert!(
        src.retrieve(&ctx(&env, query("stranger", 5, 1000)), 3)
            .await
            .expect("ok")
            .is_empty()
    );
}

#[tokio::test]
async fn popular_blends_the_users_segments_and_the_requests_surface() {
    use cascade_core::User;
    let user = |id: &str, locale: Option<&str>| User {
        id: id.into(),
        attributes: locale
            .map(|l| {
                let mut m = serde_json::Map::new();
                m.insert("locale".into(), l.into());
                m
            })
            .unwrap_or_default(),
        follows: vec![],
    };
    let mut users = vec![user("fr-reader", Some("fr")), user("nobody", None)];
    let mut events = Vec::new();
    // Globally item 8 wins (six English readers); French readers prefer item 2.
    for u in 0..6 {
        users.push(user(&format!("en{u}"), Some("en")));
        events.push(event(Click, &format!("en{u}"), 8, 100));
    }
    for u in 0..3 {
        users.push(user(&format!("fr{u}"), Some("fr")));
        events.push(event(Click, &format!("fr{u}"), 2, 100));
    }
    // Engagements that came from the `feed` surface favour item 4.
    for u in 0..2 {
        let mut e = event(Click, &format!("anon{u}"), 4, 100);
        e.surface = Some("feed".into());
        events.push(e);
    }
    let env = world(catalog(), users, events);
    let top = |q| async {
        PopularSource
            .retrieve(&ctx(&env, q), 3)
            .await
            .expect("hits")
    };
    assert_eq!(top(query("nobody", 3, 1000)).await[0].item, 8, "global");
    assert_eq!(
        top(query("fr-reader", 3, 1000)).await[0].item,
        2,
        "segment first"
    );
    assert_eq!(top(query("en0", 3, 1000)).await[0].item, 8);
    let mut feed = query("nobody", 3, 1000);
    feed.surface = "feed".into();
    let hits = top(feed).await;
    assert_eq!(hits[0].item, 4, "the surface's own favourites: {hits:?}");
    assert!(hits.iter().any(|h| h.item == 8), "global still blended in");
}

#[tokio::test]
async fn embedding_search_through_the_index_matches_the_exact_scan() {
    use cascade_index::Models;
    let (env, src) = taste_groups();
    let ids = |h: Vec<cascade_pipeline::Hit>| h.into_iter().map(|h| h.item).collect::<Vec<_>>();
    let with_index = ids(src
        .retrieve(&ctx(&env, query("u2", 5, 1000)), 6)
        .await
        .expect("ann"));
    let m = env.models.load();
    assert!(m.ann.is_some(), "the test world builds an index");
    env.models.publish(Models {
        version: m.version.clone(),
        popular: m.popular.clone(),
        covis: m.covis.clone(),
        embeddings: m.embeddings.clone(),
        ann: None,
        item_neighbors: m.item_neighbors.clone(),
        ranker: None,
    });
    let exact = ids(src
        .retrieve(&ctx(&env, query("u2", 5, 1000)), 6)
        .await
        .expect("exact"));
    assert_eq!(with_index.len(), 6);
    // Ten items: the graph search finds the exact top six (order may differ where half
    // precision ties two scores).
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(with_index), sorted(exact));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_represents_every_followed_creator_before_the_cut() {
    use cascade_core::{TimeInput, User};
    use cascade_sources::FollowsSource;
    // "busy" posted 8 new items; "quiet" one old item: a cut at 5 by recency alone would
    // leave "quiet" out.
    let mut items = catalog();
    for (n, it) in items.iter_mut().enumerate().take(9) {
        it.creator_id = Some("busy".into());
        it.created_at = Some(TimeInput((1000 + n as i64) * 1000));
    }
    items[9].creator_id = Some("quiet".into());
    items[9].created_at = Some(TimeInput(10_000));
    let users = vec![User {
        id: "me".into(),
        attributes: Default::default(),
        follows: vec!["busy".into(), "quiet".into()],
    }];
    let env = world(items, users, vec![]);
    let src = FollowsSource {
        pool: env.pool.clone(),
    };
    let hits = src
        .retrieve(&ctx(&env, query("me", 5, 5000)), 5)
        .await
        .expect("hits");
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().any(|h| h.item == 9), "{hits:?}");
    assert_eq!(hits[0].item, 8, "round one, newest first: {hits:?}");
}
