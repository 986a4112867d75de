//! Gorse's `/api/*` over HTTP from Rust (the PyGorse suite in `tests/pygorse` drives every
//! client method): Gorse's shapes, and no `/api/*` at all when `gorse.enabled = false`.

use super::{TestServer, seed_world};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorse_routes_answer_in_gorse_shapes_and_are_gone_when_disabled() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    let (st, body) = s
        .post(
            "/api/items",
            json!([{"itemid": "g1", "COMMENT": "Gorse Film", "categories": ["Drama"],
               "timestamp": "2026-01-02"}]),
        )
        .await;
    assert_eq!((st, body), (200, json!({"RowAffected": 1})));
    let (st, item) = s.get("/api/item/g1/").await;
    assert_eq!(st, 200);
    assert_eq!(
        item,
        json!({"ItemId": "g1", "IsHidden": false, "Categories": ["Drama"],
               "Timestamp": "2026-01-02T00:00:00Z", "Labels": null, "Comment": "Gorse Film"})
    );
    let (st, recs) = s.get("/api/recommend/u1?n=4").await;
    assert_eq!(st, 200);
    assert_eq!(recs.as_array().map(Vec::len), Some(4));
    assert!(recs[0].is_string(), "ids without X-API-Version: 2: {recs}");
    let (st, body) = s
        .post(
            "/api/feedback",
            json!([{"FeedbackType": "teleport", "UserId": "u1", "ItemId": "i1"}]),
        )
        .await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (400, Some("feedback[0].FeedbackType"))
    );
    s.stop().await;

    let s = TestServer::start(tmp.path(), |c| c.gorse.enabled = false).await;
    assert_eq!(s.get("/api/item/g1").await.0, 404);
    assert_eq!(s.get("/v1/items/g1").await.0, 200);
    s.stop().await;
}
