//! Drift over HTTP: the report behind the admin key, its shape, the served lists and the
//! joined clicks it counts, and the window's bounds.

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_report_is_admin_only_counts_served_lists_and_checks_its_window() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.auth.admin_keys = vec!["admin-key-789".into()];
        c.auth.write_keys = vec!["write-key-456".into()];
        c.auth.read_keys = vec!["read-key-123".into()];
    })
    .await;
    let write = Some("write-key-456");
    let get = |key| s.keyed(reqwest::Method::GET, "/v1/admin/drift", key, None);
    assert_eq!(get(None).await.0, 401);
    assert_eq!(get(Some("read-key-123")).await.0, 403);
    let items: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("i{i}"), "title": format!("Film {i}"), "categories": ["Drama"]}))
        .collect();
    let (st, _) = s
        .keyed(
            reqwest::Method::POST,
            "/v1/items",
            write,
            Some(&json!({ "items": items })),
        )
        .await;
    assert_eq!(st, 200);
    for u in 0..20 {
        let (st, r) = s
            .keyed(
                reqwest::Method::POST,
                "/v1/recommendations/home",
                Some("read-key-123"),
                Some(&json!({"user_id": format!("u{u}"), "n": 5, "request_id": format!("r{u}")})),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        let first = r["items"][0]["item_id"]
            .as_str()
            .expect("an item")
            .to_string();
        let click = json!({"events": [{"type": "click", "user_id": format!("u{u}"), "item_id": first,
                                       "request_id": format!("r{u}"), "surface": "home"}]});
        assert_eq!(
            s.keyed(reqwest::Method::POST, "/v1/events", write, Some(&click))
                .await
                .0,
            200
        );
    }
    let m = s.engine.drift.as_ref().expect("monitor");
    assert!(m.flush(std::time::Duration::from_secs(10)));
    let (st, r) = get(Some("admin-key-789")).await;
    assert_eq!(st, 200, "{r}");
    for key in ["reference", "window", "signals", "versions"] {
        assert!(!r[key].is_null(), "{key} in {r}");
    }
    // No bundle was trained: the first window becomes the reference.
    assert!(
        r["reference"]["source"]
            .as_str()
            .expect("source")
            .contains("first window")
    );
    assert!(
        r["window"]["observed"].as_u64().expect("observed") >= 20,
        "{}",
        r["window"]
    );
    assert!(r["window"]["join_bytes"].as_u64().expect("join") > 0);
    let v = &r["versions"][0];
    assert_eq!(v["requests"], 20, "{v}");
    assert_eq!(v["clicks"], 20, "each click joined to its request: {v}");
    for bad in ["window_s=0", "window_s=999999", "window_s=x", "other=1"] {
        let (st, e) = s
            .keyed(
                reqwest::Method::GET,
                &format!("/v1/admin/drift?{bad}"),
                Some("admin-key-789"),
                None,
            )
            .await;
        assert_eq!(st, 400, "{bad}: {e}");
        assert!(e["error"]["message"].as_str().is_some(), "{e}");
    }
    let (_, e) = s
        .keyed(
            reqwest::Method::GET,
            "/v1/admin/drift?window_s=0",
            Some("admin-key-789"),
            None,
        )
        .await;
    assert_eq!(e["error"]["field"], "window_s");
    s.stop().await;
}
