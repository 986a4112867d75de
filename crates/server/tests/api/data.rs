//! The data API read back over HTTP: items and users as stored, pages to the end in a stable
//! order (across a restart), a user's feedback newest first, bad parameters named, and the
//! data key required.

use super::{T0, TestServer, seed_world};
use reqwest::Method;
use serde_json::{Value, json};

/// Every page of `path` (n rows at a time) to the end: the rows under `key`, and the pages.
async fn all_pages(s: &TestServer, path: &str, key: &str, n: usize) -> (Vec<Value>, usize) {
    let (mut rows, mut cursor, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (st, body) = s.get(&format!("{path}{sep}n={n}&cursor={cursor}")).await;
        assert_eq!(st, 200, "{body}");
        pages += 1;
        rows.extend(body[key].as_array().expect("rows").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(pages < 1000, "paging never ends");
    }
    (rows, pages)
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_and_users_read_back_as_stored_and_page_to_the_end_across_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    let posted = json!({
        "id": "x1", "title": "Le Voyage", "categories": ["Drama", "Travel"], "tags": ["sea"],
        "creator_id": "c9", "created_at": "2026-01-31T12:00:00Z",
        "attributes": {"lang": "fr", "year": 1902}, "hidden": false, "mature": true
    });
    assert_eq!(s.post("/v1/items", json!({"items": [posted]})).await.0, 200);
    let (st, got) = s.get("/v1/items/x1").await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["item"], posted, "an item reads back as it was given");
    assert_eq!(got["counts"]["impressions"], 0);
    // What it reads back is accepted again as is.
    assert_eq!(
        s.post("/v1/items", json!({"items": [got["item"]]})).await.0,
        200
    );
    // Counts follow feedback.
    let ev = json!({"events": [{"type": "like", "user_id": "u1", "item_id": "x1", "timestamp": T0 + 9_000}]});
    assert_eq!(s.post("/v1/events", ev).await.0, 200);
    let (_, got) = s.get("/v1/items/x1").await;
    assert_eq!(got["counts"]["likes"], 1);
    assert_eq!(got["counts"]["engagements"], 1);

    let (st, body) = s.get("/v1/items/nope").await;
    assert_eq!((st, body["error"]["field"].as_str()), (404, Some("id")));
    assert_eq!(s.raw(Method::DELETE, "/v1/items/i7", "").await.0, 200);
    assert_eq!(s.get("/v1/items/i7").await.0, 404, "a deleted item is gone");

    // 31 items less the deleted one, 7 a page: every live item once, in first-seen order.
    let (rows, pages) = all_pages(&s, "/v1/items", "items", 7).await;
    let mut want: Vec<String> = (0..30)
        .filter(|&i| i != 7)
        .map(|i| format!("i{i}"))
        .collect();
    want.push("x1".into());
    assert_eq!(ids(&rows), want);
    assert_eq!(pages, 5);
    // Hidden items are read back (they are only never recommended).
    assert!(rows.iter().any(|r| r["id"] == "i5" && r["hidden"] == true));

    let (st, u) = s.get("/v1/users/u1").await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["user"]["follows"], json!(["c1"]));
    assert_eq!(u["known"], true);
    assert!(u["interacted_items"].as_u64().expect("n") >= 6);
    // A user seen only in events exists too.
    let ev = json!({"events": [{"type": "hide", "user_id": "ghost", "item_id": "i2", "timestamp": T0 + 9_500}]});
    assert_eq!(s.post("/v1/events", ev).await.0, 200);
    let (st, g) = s.get("/v1/users/ghost").await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(
        (g["known"].as_bool(), g["hidden_items"].clone()),
        (Some(false), json!(["i2"]))
    );
    let (st, body) = s.get("/v1/users/nobody").await;
    assert_eq!((st, body["error"]["field"].as_str()), (404, Some("id")));
    let (users, _) = all_pages(&s, "/v1/users", "users", 9).await;
    let mut want: Vec<String> = (0..40).map(|u| format!("u{u}")).collect();
    want.push("ghost".into());
    assert_eq!(ids(&users), want);

    // The same order after a restart (replay interns ids in log order): cursors stay valid.
    let (_, first) = s.get("/v1/items?n=3").await;
    s.stop().await;
    let s = TestServer::start(tmp.path(), |_| {}).await;
    let (again, _) = all_pages(&s, "/v1/items", "items", 7).await;
    assert_eq!(ids(&again), ids(&rows));
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let (st, next) = s.get(&format!("/v1/items?n=3&cursor={cursor}")).await;
    assert_eq!(st, 200);
    assert_eq!(
        ids(next["items"].as_array().expect("items")),
        ["i3", "i4", "i5"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_feedback_lists_newest_first_by_type_in_pages() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    // u4 (category 1): six events, views and likes alternating, ten seconds apart.
    let (events, pages) = all_pages(&s, "/v1/users/u4/events", "events", 4).await;
    assert_eq!((events.len(), pages), (6, 2));
    let ts: Vec<&str> = events
        .iter()
        .map(|e| e["ts"].as_str().expect("ts"))
        .collect();
    let mut sorted = ts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ts, sorted, "newest first");
    let (likes, _) = all_pages(&s, "/v1/users/u4/events?type=like", "events", 10).await;
    assert_eq!(likes.len(), 3);
    assert!(
        likes
            .iter()
            .all(|e| e["type"] == "like" && e["weight"].as_f64() > Some(0.0))
    );
    let (_, body) = s.get("/v1/users/u4/events").await;
    assert_eq!(body["kept"], 200);
    assert_eq!(body["events"][0]["item_id"], events[0]["item_id"]);

    // Bad parameters: a 400 naming the parameter.
    for (q, field) in [
        ("type=bogus", "type"),
        ("type=impression", "type"),
        ("n=0", "n"),
        ("n=1001", "n"),
        ("n=ten", "n"),
        ("cursor=u1", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (st, body) = s.get(&format!("/v1/users/u4/events?{q}")).await;
        assert_eq!(
            (st, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{q}: {body}"
        );
    }
    // One listing's cursor is refused by another.
    let (_, page) = s.get("/v1/items?n=2").await;
    let c = page["next_cursor"].as_str().expect("cursor");
    let (st, body) = s.get(&format!("/v1/users?cursor={c}")).await;
    assert_eq!((st, body["error"]["field"].as_str()), (400, Some("cursor")));
    assert_eq!(s.get("/v1/users/nobody/events").await.0, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_data_back_takes_the_data_key_not_the_read_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.auth.read_keys = vec!["read-key-123".into()];
        c.auth.write_keys = vec!["write-key-456".into()];
    })
    .await;
    let item = json!({"items": [{"id": "a", "title": "A"}]});
    let post = s
        .keyed(
            Method::POST,
            "/v1/items",
            Some("write-key-456"),
            Some(&item),
        )
        .await;
    assert_eq!(post.0, 200);
    for path in [
        "/v1/items/a",
        "/v1/items",
        "/v1/users",
        "/v1/users/u/events",
    ] {
        assert_eq!(
            s.keyed(Method::GET, path, None, None).await.0,
            401,
            "{path}"
        );
        let (st, _) = s.keyed(Method::GET, path, Some("read-key-123"), None).await;
        assert_eq!(st, 403, "{path}: the front end's key reads no user data");
    }
    let (st, body) = s
        .keyed(Method::GET, "/v1/items/a", Some("write-key-456"), None)
        .await;
    assert_eq!((st, body["item"]["title"].as_str()), (200, Some("A")));
    s.stop().await;
}
