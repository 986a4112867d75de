//! The policy layer over HTTP: editorial lists, cold start and new-item exposure, explain traces, business rules.

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editorial_lists_are_admin_managed_time_boxed_and_durable() {
    use reqwest::Method;
    const ADMIN: Option<&str> = Some("admin-key-789");
    const WRITE: Option<&str> = Some("write-key-456");
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = |c: &mut Config| {
        c.auth.write_keys = vec!["write-key-456".into()];
        c.auth.admin_keys = vec!["admin-key-789".into()];
    };
    let editorial_picks = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|i| i["reason"]["code"] == "editorial_pick")
            .map(|i| i["item_id"].as_str().expect("id").to_string())
            .collect()
    };
    let s = TestServer::start(tmp.path(), keys).await;
    let items: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("e{i}"), "categories": ["X"]}))
        .collect();
    assert_eq!(
        s.keyed(
            Method::POST,
            "/v1/items",
            WRITE,
            Some(&json!({ "items": items }))
        )
        .await
        .0,
        200
    );
    let list =
        json!({"id": "staff", "title": "Staff picks", "items": ["e7", "e3"], "surfaces": ["home"]});
    let (st, _) = s
        .keyed(Method::POST, "/v1/admin/editorial", WRITE, Some(&list))
        .await;
    assert_eq!(st, 403, "a write key is not an admin key");
    assert_eq!(
        s.keyed(Method::POST, "/v1/admin/editorial", ADMIN, Some(&list))
            .await
            .0,
        200
    );
    let bad = json!({"id": "x", "items": ["e1"], "starts_at": 200, "ends_at": 100});
    let (st, body) = s
        .keyed(Method::POST, "/v1/admin/editorial", ADMIN, Some(&bad))
        .await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (400, Some("ends_at"))
    );
    let expired = json!({"id": "old", "title": "Old", "items": ["e9"], "ends_at": 1_000});
    assert_eq!(
        s.keyed(Method::POST, "/v1/admin/editorial", ADMIN, Some(&expired))
            .await
            .0,
        200
    );

    let (_, home) = s
        .keyed(
            Method::GET,
            "/v1/recommendations/home?user_id=reader&n=5",
            ADMIN,
            None,
        )
        .await;
    assert_eq!(
        editorial_picks(&home),
        vec!["e7", "e3"],
        "in list order; the expired list unused: {home}"
    );
    assert_eq!(home["items"][0]["item_id"], "e7");
    assert_eq!(
        home["items"][0]["reason"]["text"],
        "From our editors: Staff picks"
    );
    let (_, feed) = s
        .keyed(
            Method::GET,
            "/v1/recommendations/feed?user_id=reader&n=5",
            ADMIN,
            None,
        )
        .await;
    assert!(
        editorial_picks(&feed).is_empty(),
        "the list targets home only"
    );
    let (_, listed) = s
        .keyed(Method::GET, "/v1/admin/editorial", ADMIN, None)
        .await;
    assert_eq!(listed["lists"].as_array().map(Vec::len), Some(2));
    s.stop().await;

    // Durable: after a restart the list is still there; then it can be deleted.
    let s = TestServer::start(tmp.path(), keys).await;
    let (_, home) = s
        .keyed(
            Method::GET,
            "/v1/recommendations/home?user_id=reader&n=5",
            ADMIN,
            None,
        )
        .await;
    assert_eq!(editorial_picks(&home), vec!["e7", "e3"]);
    assert_eq!(
        s.keyed(Method::DELETE, "/v1/admin/editorial/staff", ADMIN, None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.keyed(Method::DELETE, "/v1/admin/editorial/staff", ADMIN, None)
            .await
            .0,
        404
    );
    let (_, home) = s
        .keyed(
            Method::GET,
            "/v1/recommendations/home?user_id=reader&n=5",
            ADMIN,
            None,
        )
        .await;
    assert!(editorial_picks(&home).is_empty(), "{home}");
    s.stop().await;
}

/// 40 items (categories by `i % 4`); `fr` users engage with i0..i9, `en` users with
/// i10..i19, all a month before now.
async fn seed_locales(s: &TestServer) {
    let cats = ["Comedy", "Drama", "Science", "Sport"];
    let now = cascade_core::time::now_millis() / 1000;
    let items: Vec<Value> = (0..40)
        .map(|i| {
            json!({"id": format!("i{i}"), "title": format!("Film {i}"),
                   "categories": [cats[i % 4]], "creator_id": format!("c{i}"),
                   "created_at": now - 30 * DAY})
        })
        .collect();
    assert_eq!(s.post("/v1/items", json!({ "items": items })).await.0, 200);
    let users: Vec<Value> = (0..40)
        .map(|u| json!({"id": format!("u{u}"), "attributes": {"locale": if u < 20 { "fr" } else { "en" }}}))
        .collect();
    assert_eq!(s.post("/v1/users", json!({ "users": users })).await.0, 200);
    let mut events = Vec::new();
    for u in 0..40 {
        let base = if u < 20 { 0 } else { 10 };
        for k in 0..5 {
            events.push(json!({"type": "like", "user_id": format!("u{u}"),
                "item_id": format!("i{}", base + (u + k) % 10),
                "timestamp": now - 20 * DAY + u as i64 * 60 + k as i64}));
        }
    }
    assert_eq!(
        s.post("/v1/events", json!({ "events": events })).await.0,
        200
    );
    s.engine.rebuild_models();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_new_user_gets_a_full_local_list_and_new_items_get_exposure() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| c.models.ranker.enabled = false).await;
    seed_locales(&s).await;
    let local = |v: &Value, range: std::ops::Range<usize>| {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|i| i["placed_by"] == "ranked")
            .filter(|i| {
                let id = i["item_id"].as_str().expect("id");
                id[1..].parse::<usize>().is_ok_and(|n| range.contains(&n))
            })
            .count()
    };
    for (locale, mine, theirs) in [("fr", 0..10, 10..20), ("en", 10..20, 0..10)] {
        let (st, r) = s
            .post(
                "/v1/recommendations/home",
                json!({"user_id": format!("newbie-{locale}"), "n": 10, "context": {"locale": locale}}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        let items = r["items"].as_array().expect("items");
        assert_eq!(
            items.len(),
            10,
            "a full list for a user without history: {r}"
        );
        assert!(
            local(&r, mine.clone()) > local(&r, theirs.clone()),
            "{locale}: what is popular in {locale} leads: {r}"
        );
        // Default exploration holds a slot even for a cold user.
        assert!(
            items
                .iter()
                .any(|i| i["placed_by"] == "exploring" || i["placed_by"] == "new_item"),
            "{r}"
        );
    }
    // A brand-new item is shown within a bounded number of requests of the surface.
    let (st, _) = s
        .post(
            "/v1/items",
            json!({"items": [{"id": "brand-new", "title": "Brand New", "categories": ["Comedy"]}]}),
        )
        .await;
    assert_eq!(st, 200);
    // It joins the fresh pool with the next popular-list refresh (`popular_refresh_ms`).
    let in_pool = || {
        let idx = s.engine.env.state.read().items.get("brand-new");
        idx.is_some_and(|i| {
            s.engine
                .env
                .models
                .load()
                .popular
                .fresh
                .iter()
                .any(|&(x, _)| x == i)
        })
    };
    let t = std::time::Instant::now();
    while !in_pool() && t.elapsed() < std::time::Duration::from_secs(5) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(in_pool(), "the new item entered the fresh pool");
    // From then on, the guaranteed exploration slot shows it on the very next request.
    let mut shown_at = None;
    for k in 0..3 {
        let (_, r) = s
            .post(
                "/v1/recommendations/home",
                json!({"user_id": format!("u{k}"), "n": 10}),
            )
            .await;
        let hit = r["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["item_id"] == "brand-new")
            .cloned();
        if let Some(i) = hit {
            assert_eq!(i["placed_by"], "new_item", "{i}");
            assert_eq!(i["reason"]["code"], "new_for_you");
            shown_at = Some(k);
            break;
        }
    }
    assert!(shown_at.is_some(), "the new item was never shown");
    // Its impression is logged (with the propensity) and counted.
    let counted = || {
        let g = s.engine.env.state.read();
        g.items
            .get("brand-new")
            .map_or(0, |i| g.impressions[i as usize])
    };
    let t = std::time::Instant::now();
    while counted() == 0 && t.elapsed() < std::time::Duration::from_secs(5) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(counted() >= 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_traces_stages_ranker_contributions_filters_and_removals() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    s.stop().await;
    // Restarted over the seeded log, the engine trains the ranker in the background.
    let s = TestServer::start(tmp.path(), |_| {}).await;
    let e = s.engine.clone();
    tokio::task::spawn_blocking(move || e.wait_for_ranker())
        .await
        .expect("join");
    assert!(
        s.engine.env.models.load().ranker.is_some(),
        "ranker trained"
    );
    let (st, r) = s
        .post(
            "/v1/recommendations/home",
            json!({"user_id": "u0", "n": 10, "explain": true, "request_id": "trace-1"}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["request_id"], "trace-1");
    let items = r["items"].as_array().expect("items");
    assert!(!items.is_empty());
    let mut with_ranker = 0;
    for it in items {
        let x = &it["explain"];
        assert_eq!(
            x["filters_passed"],
            json!(["safety", "blocklist", "seen"]),
            "{x}"
        );
        assert_eq!(x["placed_by"], it["placed_by"]);
        let p = x["propensity"].as_f64().expect("propensity");
        assert!(p > 0.0 && p <= 1.0);
        if it["placed_by"] == "ranked" {
            assert_eq!(p, 1.0);
        }
        let stages = x["stages"].as_array().expect("stages");
        if it["placed_by"] == "fallback" {
            continue;
        }
        assert_eq!(stages[0]["stage"], "prerank", "{x}");
        let Some(gbdt) = stages.iter().find(|s| s["stage"] == "gbdt") else {
            continue;
        };
        with_ranker += 1;
        assert!(gbdt["rank"].as_u64() < gbdt["of"].as_u64());
        // The contributions explain the ranker's score exactly: bias + top + other.
        let rk = &x["ranker"];
        let top = rk["contributions"].as_array().expect("contributions");
        assert!(!top.is_empty() && top.len() <= 8, "{rk}");
        let sum: f64 = rk["bias"].as_f64().expect("bias")
            + rk["other"].as_f64().expect("other")
            + top
                .iter()
                .map(|c| c["value"].as_f64().expect("v"))
                .sum::<f64>();
        let score = gbdt["score"].as_f64().expect("score");
        assert!((sum - score).abs() < 1e-3, "{sum} vs {score}: {rk}");
        assert!((it["score"].as_f64().expect("score") - score).abs() < 1e-4);
        // Largest contribution first.
        let mag: Vec<f64> = top
            .iter()
            .map(|c| c["value"].as_f64().expect("v").abs())
            .collect();
        assert!(mag.windows(2).all(|w| w[0] >= w[1]), "{mag:?}");
    }
    assert!(with_ranker >= 5, "most items went through the ranker: {r}");
    // Removed candidates name the rule: u0 has seen its own history; i5 is hidden.
    let removed = r["removed"].as_array().expect("removed");
    assert!(
        removed
            .iter()
            .any(|x| x["by"] == "seen" && x["reason"] == "already_seen")
    );
    assert!(
        removed.iter().all(
            |x| ["safety", "blocklist", "seen"].contains(&x["by"].as_str().unwrap_or_default())
        ),
        "{removed:?}"
    );
    // The same request id replays the same list, exploration included.
    let (_, again) = s
        .post(
            "/v1/recommendations/home",
            json!({"user_id": "u0", "n": 10, "request_id": "trace-1"}),
        )
        .await;
    assert_eq!(ids(&again), ids(&r));
    let (st, bad) = s
        .post(
            "/v1/recommendations/home",
            json!({"user_id": "u0", "request_id": ""}),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(bad["error"]["field"], "request_id", "{bad}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_rules_apply_over_http() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.models.ranker.enabled = false;
        let home = c.surfaces.get_mut("home").expect("home");
        home.blocklist.creators = vec!["c2".into()];
        home.blocklist.items = vec!["i3".into()];
        home.boosts = vec![cascade_policy::BoostRule {
            name: "science".into(),
            category: Some("Science".into()),
            add: 100.0,
            ..Default::default()
        }];
        home.exploration.share = 0.0;
    })
    .await;
    seed_world(&s).await;
    // An editorial list pinned to slot 1; its first item is blocked (creator c2), the second
    // qualifies.
    let list = json!({"id": "staff", "title": "Staff picks", "items": ["i7", "i28"], "pin": 1});
    assert_eq!(s.post("/v1/admin/editorial", list).await.0, 200);
    for u in 0..10 {
        let (st, r) = s
            .post(
                "/v1/recommendations/home",
                json!({"user_id": format!("u{u}"), "n": 8}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        let items = r["items"].as_array().expect("items");
        assert_eq!(items.len(), 8);
        let g = s.engine.env.state.read();
        for it in items {
            let id = it["item_id"].as_str().expect("id");
            let idx = g.items.get(id).expect("known");
            let creator = g.creators.name(g.hot(idx).creator).unwrap_or_default();
            assert!(creator != "c2" && id != "i3", "blocked {id} shown");
        }
        assert_eq!(items[1]["item_id"], "i28", "pinned slot: {r}");
        assert_eq!(items[1]["placed_by"], "pinned");
        assert_eq!(items[1]["reason"]["code"], "editorial_pick");
        assert_eq!(items[1]["reason"]["text"], "From our editors: Staff picks");
        // The boost puts unseen Science items (category 2, creators c2 blocked aside)
        // first among the ranked.
        let first = items[0]["item_id"].as_str().expect("id");
        let cat = g
            .item(g.items.get(first).expect("id"))
            .expect("rec")
            .categories[0];
        assert_eq!(g.categories.name(cat), Some("Science"), "{r}");
    }
    s.stop().await;
}
