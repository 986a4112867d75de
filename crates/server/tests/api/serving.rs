//! Serving over HTTP: the full response, feedback taking effect at once, replayed time, a catalog served before any model.

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_end_to_end() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;

    for surface in ["home", "feed"] {
        let (st, r) = s
            .get(&format!("/v1/recommendations/{surface}?user_id=u0&n=10"))
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["surface"], surface);
        assert_eq!(r["user_id"], "u0");
        assert!(r["model_version"].as_str().is_some_and(|v| !v.is_empty()));
        assert!(r["request_id"].as_str().is_some_and(|v| v.len() == 32));
        let got = ids(&r);
        assert_eq!(got.len(), 10, "{r}");
        assert!(!got.contains(&"i5".to_string()), "hidden item served");
        assert!(
            !got.contains(&"i6".to_string()),
            "mature item served to a user who did not opt in"
        );
        // u0 interacted with i0, i3, ..., i15: none may come back.
        for seen in [0, 3, 6, 9, 12, 15] {
            assert!(
                !got.contains(&format!("i{seen}")),
                "seen item i{seen} served: {got:?}"
            );
        }
        for (rank, it) in r["items"].as_array().expect("items").iter().enumerate() {
            assert_eq!(it["rank"], rank + 1);
            assert!(
                it["reason"]["text"].as_str().is_some_and(|t| !t.is_empty()),
                "{it}"
            );
            assert!(
                it["reason"]["code"].as_str().is_some_and(|t| !t.is_empty()),
                "{it}"
            );
            assert!(!it["sources"].as_array().expect("sources").is_empty());
        }
        assert!(r["timings_ms"]["sources"].is_number());
        // The engine started on an empty log, so no ranker could be trained: the pre-ranker's
        // order serves, and the response says so.
        assert_eq!(r["degraded"], json!(["scorer:gbdt:unavailable"]));
    }

    // u0's history is Comedy runs: the similar source must produce Comedy items next.
    let (_, r) = s.get("/v1/recommendations/home?user_id=u0&n=3").await;
    let first = &r["items"][0];
    assert!(
        first["sources"]
            .as_array()
            .expect("s")
            .contains(&json!("similar")),
        "{r}"
    );
    let n: usize = first["item_id"].as_str().expect("id")[1..]
        .parse()
        .expect("n");
    assert_eq!(n % 3, 0, "neighbours of a Comedy run should be Comedy: {r}");

    // Session items and exclusions are honoured; explain adds a trace.
    let (st, r) = s
        .post(
            "/v1/recommendations/home",
            json!({"user_id": "new-user", "n": 5, "session_item_ids": ["i1"], "exclude": ["i4"], "explain": true,
                   "context": {"device": "tv", "locale": "en-GB"}}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let got = ids(&r);
    assert_eq!(got.len(), 5);
    assert!(
        !got.contains(&"i1".into()) && !got.contains(&"i4".into()),
        "{got:?}"
    );
    assert!(r["items"][0]["explain"]["sources"].is_object(), "{r}");
    let removed = r["removed"].as_array().expect("removed");
    assert!(
        removed
            .iter()
            .any(|x| x["item_id"] == "i4" && x["reason"] == "excluded"),
        "{r}"
    );

    // A cold user still gets a full list.
    let (_, r) = s.get("/v1/recommendations/feed?user_id=stranger&n=8").await;
    assert_eq!(ids(&r).len(), 8);

    // Similar items.
    let (st, r) = s.get("/v1/items/i0/similar?n=4").await;
    assert_eq!(st, 200);
    assert_eq!(r["item_id"], "i0");
    let sim = ids(&r);
    assert!(!sim.is_empty() && sim.len() <= 4);
    assert!(!sim.contains(&"i5".into()));
    let (st, r) = s.get("/v1/items/nope/similar").await;
    assert_eq!(st, 404);
    assert_eq!(r["error"]["code"], "item_not_found");

    // Unknown surface.
    let (st, r) = s.get("/v1/recommendations/nowhere?user_id=u0").await;
    assert_eq!(st, 404);
    assert_eq!(r["error"]["field"], "surface");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_like_brings_the_liked_items_neighbours_into_the_next_response() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Exploration off: an explored slot could show a neighbour by chance.
    let s = TestServer::start(tmp.path(), |c| {
        if let Some(h) = c.surfaces.get_mut("home") {
            h.exploration.share = 0.0;
        }
    })
    .await;
    seed_world(&s).await;
    let recs = |v: &Value| -> Vec<(String, Option<String>)> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                (
                    i["item_id"].as_str().expect("id").to_string(),
                    i["explain"]["seed_item_id"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    // A new user: nothing is seeded by anything yet.
    let path = "/v1/recommendations/home?user_id=newfan&n=10&explain=true";
    let (_, r) = s.get(path).await;
    let before = recs(&r);
    assert!(before.iter().all(|(_, seed)| seed.is_none()), "{before:?}");
    // Like an item whose co-visited neighbours were not shown.
    let mut chosen = None;
    for i in 0..30 {
        let id = format!("i{i}");
        if [5, 6].contains(&i) || before.iter().any(|(x, _)| *x == id) {
            continue;
        }
        let (_, sim) = s.get(&format!("/v1/items/{id}/similar?n=5")).await;
        let unseen: Vec<String> = sim["items"]
            .as_array()
            .expect("similar")
            .iter()
            .filter_map(|x| x["item_id"].as_str().map(str::to_string))
            .filter(|x| before.iter().all(|(b, _)| b != x))
            .collect();
        if !unseen.is_empty() {
            chosen = Some((id, unseen));
            break;
        }
    }
    let (liked, unseen) = chosen.expect("an item with unseen neighbours");
    let like = json!({"events": [{"type": "like", "user_id": "newfan", "item_id": liked}]});
    assert_eq!(s.post("/v1/events", like).await.0, 200);
    let (_, r) = s.get(path).await;
    let after = recs(&r);
    assert!(after.iter().all(|(i, _)| *i != liked), "liked is seen now");
    assert!(
        after
            .iter()
            .any(|(i, seed)| unseen.contains(i) && seed.as_deref() == Some(liked.as_str())),
        "a neighbour of {liked} ({unseen:?}) came in, seeded by it: {after:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_hides_and_deletes_take_effect_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    let (_, r) = s.get("/v1/recommendations/home?user_id=u1&n=5").await;
    let top = ids(&r)[0].clone();
    // The user hides the top item: it vanishes from the very next response.
    let (st, _) = s
        .post(
            "/v1/events",
            json!({"events": [{"type": "hide", "user_id": "u1", "item_id": top}]}),
        )
        .await;
    assert_eq!(st, 200);
    let (_, r) = s.get("/v1/recommendations/home?user_id=u1&n=20").await;
    assert!(!ids(&r).contains(&top));
    // ...and so does everything by its creator (seed_world: creator of `iN` is `c{N % 5}`).
    let creator_of = |id: &str| id[1..].parse::<usize>().map(|n| n % 5).expect("id");
    let gone = creator_of(&top);
    assert!(
        ids(&r).iter().all(|i| creator_of(i) != gone),
        "{:?}",
        ids(&r)
    );
    // A creator can be hidden by name too.
    let keep = ids(&r)[0].clone();
    let named = format!("c{}", creator_of(&keep));
    let (st, body) = s
        .post(
            "/v1/events",
            json!({"events": [{"type": "hide", "user_id": "u1", "creator_id": named}]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (_, r) = s.get("/v1/recommendations/home?user_id=u1&n=20").await;
    assert!(!ids(&r).is_empty());
    assert!(
        ids(&r)
            .iter()
            .all(|i| creator_of(i) != creator_of(&keep) && creator_of(i) != gone),
        "{:?}",
        ids(&r)
    );
    // An operator hides another item for everyone; then deletes a third.
    let (_, r) = s.get("/v1/recommendations/home?user_id=u2&n=5").await;
    let (a, b) = (ids(&r)[0].clone(), ids(&r)[1].clone());
    let (st, body) = s
        .raw(
            reqwest::Method::PATCH,
            &format!("/v1/items/{a}"),
            r#"{"hidden": true}"#,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = s
        .raw(reqwest::Method::DELETE, &format!("/v1/items/{b}"), "")
        .await;
    assert_eq!(st, 200);
    for user in ["u2", "u3", "brand-new"] {
        let (_, r) = s
            .get(&format!("/v1/recommendations/home?user_id={user}&n=25"))
            .await;
        let got = ids(&r);
        assert!(!got.contains(&a) && !got.contains(&b), "{user}: {got:?}");
    }
    // An event stamped a little ahead of the server clock (client skew) still counts now.
    let (_, r) = s.get("/v1/recommendations/home?user_id=u5&n=1").await;
    let next = ids(&r)[0].clone();
    let ahead = cascade_core::time::now_millis() / 1000 + 600;
    let ev =
        json!({"events": [{"type": "view", "user_id": "u5", "item_id": next, "timestamp": ahead}]});
    assert_eq!(s.post("/v1/events", ev).await.0, 200);
    let (_, r) = s.get("/v1/recommendations/home?user_id=u5&n=20").await;
    assert!(
        !ids(&r).contains(&next),
        "an item viewed a moment ago came straight back"
    );
    let (st, _) = s
        .raw(
            reqwest::Method::PATCH,
            "/v1/items/missing",
            r#"{"hidden": true}"#,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .raw(reqwest::Method::DELETE, &format!("/v1/items/{b}"), "")
        .await;
    assert_eq!(st, 404, "deleted twice");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_time_replays_the_past() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    let items = json!({"items": [{"id": "old", "categories": ["A"]}, {"id": "later", "categories": ["A"]}]});
    assert_eq!(s.post("/v1/items", items).await.0, 200);
    let mut events = Vec::new();
    for u in 0..3 {
        events.push(
            json!({"type": "click", "user_id": format!("a{u}"), "item_id": "old", "timestamp": T0}),
        );
    }
    for u in 0..9 {
        events.push(json!({"type": "click", "user_id": format!("b{u}"), "item_id": "later", "timestamp": T0 + DAY}));
    }
    events.push(
        json!({"type": "click", "user_id": "me", "item_id": "old", "timestamp": T0 + 2 * DAY}),
    );
    assert_eq!(
        s.post("/v1/events", json!({ "events": events })).await.0,
        200
    );
    s.engine.rebuild_models();
    let at = |t: i64| json!({"user_id": "me", "n": 1, "context": {"time": t}});
    // Before "later" had any clicks, "old" leads; after, "later" does.
    let (_, r) = s.post("/v1/recommendations/home", at(T0 + DAY / 2)).await;
    assert_eq!(ids(&r), vec!["old"], "{r}");
    // At T0+1.5d "me" has not clicked "old" yet, but "later" is more popular.
    let (_, r) = s
        .post("/v1/recommendations/home", at(T0 + DAY + DAY / 2))
        .await;
    assert_eq!(ids(&r), vec!["later"], "{r}");
    // After "me" clicked "old", it is excluded as seen.
    let (_, r) = s
        .post(
            "/v1/recommendations/home",
            json!({"user_id": "me", "n": 2, "context": {"time": T0 + 3 * DAY}}),
        )
        .await;
    assert_eq!(ids(&r), vec!["later"], "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_catalog_is_served_before_any_model_rebuild() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| c.models.popular_refresh_ms = 60_000).await;
    let items = json!({"items": [{"id": "a"}, {"id": "b", "hidden": true}, {"id": "c"}]});
    assert_eq!(s.post("/v1/items", items).await.0, 200);
    let (st, r) = s
        .get("/v1/recommendations/home?user_id=first-visitor&n=5")
        .await;
    assert_eq!(st, 200);
    let got = ids(&r);
    assert_eq!(got.len(), 2, "{r}");
    assert!(!got.contains(&"b".to_string()));
    assert!(
        r["items"][0]["reason"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    s.stop().await;
}
