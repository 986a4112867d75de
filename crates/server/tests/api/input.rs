//! The API's edges: bad input rejected whole with the field named, keys by role, the OpenAPI document and metrics.

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_whole_with_the_field_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.server.max_body_bytes = 4096;
        c.server.max_batch = 5;
    })
    .await;
    let before = s.get("/healthz").await.1;
    let post = reqwest::Method::POST;

    let (st, r) = s
        .raw(post.clone(), "/v1/events", r#"{"events": [ {"type": "#)
        .await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    assert_eq!(r["error"]["field"], "body");

    let (st, r) = s
        .raw(post.clone(), "/v1/events", r#"{"events":[{"type":"click","user_id":"u","item_id":"ok"},{"type":"poke","user_id":"u","item_id":"x"}]}"#)
        .await;
    assert_eq!(st, 400);
    assert_eq!(r["error"]["field"], "events[1].type");
    assert_eq!(r["error"]["index"], 1);
    assert!(r["error"]["message"].as_str().expect("m").contains("poke"));

    let (st, r) = s
        .raw(
            post.clone(),
            "/v1/events",
            r#"{"events":[{"type":"click","user_id":7,"item_id":"a"}]}"#,
        )
        .await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("events[0].user_id"))
    );
    assert_eq!(r["error"]["code"], "invalid_type");

    let (st, r) = s
        .raw(
            post.clone(),
            "/v1/events",
            r#"{"events":[{"type":"click","user_id":"u"}]}"#,
        )
        .await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("events[0].item_id"))
    );

    let (st, r) = s
        .raw(
            post.clone(),
            "/v1/items",
            r#"{"items":[{"id":"good"},{"title":"no id"}]}"#,
        )
        .await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("items[1].id"))
    );
    assert_eq!(r["error"]["code"], "missing_field");

    let (st, r) = s
        .raw(
            post.clone(),
            "/v1/items",
            r#"{"items":[{"id":"good2"},{"id":""}]}"#,
        )
        .await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("items[1].id"))
    );

    let (st, r) = s
        .raw(
            post.clone(),
            "/v1/users",
            r#"{"users":[{"id":"x","follows":"c1"}]}"#,
        )
        .await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("users[0].follows"))
    );

    let six: Vec<Value> = (0..6)
        .map(|i| json!({"type": "view", "user_id": "u", "item_id": format!("b{i}")}))
        .collect();
    let (st, r) = s.post("/v1/events", json!({ "events": six })).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (413, Some("batch_too_large"))
    );
    assert_eq!(r["error"]["field"], "events");

    let big = format!(
        r#"{{"items":[{{"id":"big","title":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    let (st, r) = s.raw(post.clone(), "/v1/items", &big).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let (st, r) = s.get("/v1/recommendations/home?n=5").await;
    assert_eq!((st, r["error"]["field"].as_str()), (400, Some("user_id")));
    let (st, r) = s.get("/v1/recommendations/home?user_id=u&n=0").await;
    assert_eq!((st, r["error"]["field"].as_str()), (400, Some("n")));
    let (st, r) = s.get("/v1/recommendations/home?user_id=u&n=abc").await;
    assert_eq!((st, r["error"]["field"].as_str()), (400, Some("n")));
    let (st, r) = s
        .get("/v1/recommendations/home?user_id=u&explain=maybe")
        .await;
    assert_eq!((st, r["error"]["field"].as_str()), (400, Some("explain")));
    let (st, r) = s.get("/v1/recommendations/home?user_id=u&colour=red").await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("colour")),
        "{r}"
    );
    let (st, r) = s.raw(reqwest::Method::PUT, "/v1/items", "{}").await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (st, r) = s
        .post(
            "/v1/recommendations/home",
            json!({"user_id": "u", "context": {"time": "yesterday"}}),
        )
        .await;
    assert_eq!(
        (st, r["error"]["field"].as_str()),
        (400, Some("context.time"))
    );

    let r = s
        .client
        .post(format!("{}/v1/events", s.base))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 415);

    // Nothing of any rejected batch was stored.
    let after = s.get("/healthz").await.1;
    assert_eq!(before, after, "a rejected batch changed state");
    for id in ["good", "good2", "big"] {
        assert_eq!(
            s.get(&format!("/v1/items/{id}/similar")).await.0,
            404,
            "{id} was stored"
        );
    }
    // Errors never leak as non-JSON.
    let (st, r) = s.get("/v2/nothing").await;
    assert_eq!((st, r["error"]["code"].as_str()), (404, Some("not_found")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_separate_read_and_write() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.auth.read_keys = vec!["read-key-123".into()];
        c.auth.write_keys = vec!["write-key-456".into()];
    })
    .await;
    let item = json!({"items": [{"id": "a"}]});
    let (st, body) = s.keyed(Method::POST, "/v1/items", None, Some(&item)).await;
    assert_eq!(st, 401);
    assert_eq!(body["error"]["field"], "authorization");
    let (st, _) = s
        .keyed(Method::POST, "/v1/items", Some("read-key-123"), Some(&item))
        .await;
    assert_eq!(st, 403, "a read key cannot write");
    let (st, _) = s
        .keyed(
            Method::POST,
            "/v1/items",
            Some("wrong-key-000"),
            Some(&item),
        )
        .await;
    assert_eq!(st, 401);
    let r = s
        .client
        .post(format!("{}/v1/items", s.base))
        .header("x-api-key", "write-key-456")
        .json(&item)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200, "X-API-Key works too");
    let recs = "/v1/recommendations/home?user_id=u";
    assert_eq!(s.keyed(Method::GET, recs, None, None).await.0, 401);
    assert_eq!(
        s.keyed(Method::GET, recs, Some("read-key-123"), None)
            .await
            .0,
        200
    );
    assert_eq!(s.get("/healthz").await.0, 200, "health stays open");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_metrics_describe_the_service() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    let _ = s.get("/v1/recommendations/home?user_id=u0").await;
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let expect = [
        ("/v1/items", "post"),
        ("/v1/items/{id}", "patch"),
        ("/v1/items/{id}", "delete"),
        ("/v1/users", "post"),
        ("/v1/events", "post"),
        ("/v1/recommendations/{surface}", "get"),
        ("/v1/recommendations/{surface}", "post"),
        ("/v1/items/{id}/similar", "get"),
        ("/v1/suggest", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/admin/editorial", "get"),
        ("/v1/admin/editorial", "post"),
        ("/v1/admin/editorial/{id}", "delete"),
        ("/v1/admin/faults", "get"),
        ("/v1/admin/faults", "post"),
        ("/v1/admin/faults", "delete"),
        ("/v1/admin/models", "get"),
        ("/v1/admin/models/{version}/activate", "post"),
        ("/v1/admin/models/rollback", "post"),
        ("/v1/admin/experiments", "get"),
        ("/v1/admin/experiments/{name}", "get"),
        ("/v1/admin/drift", "get"),
        ("/v1/items", "get"),
        ("/v1/items/{id}", "get"),
        ("/v1/users", "get"),
        ("/v1/users/{id}", "get"),
        ("/v1/users/{id}/events", "get"),
        ("/v1/users/{id}", "delete"),
        ("/v1/users/{id}/events/{item_id}", "delete"),
        ("/v1/admin/metrics/history", "get"),
        ("/v1/admin/items/{id}/sources", "get"),
    ];
    for (path, method) in expect {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from openapi"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(
        documented,
        expect.len(),
        "a documented route does not exist or vice versa"
    );
    let text = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    for needle in [
        "cascade_http_requests_total{route=\"/v1/recommendations/{surface}\"",
        "cascade_stage_seconds_bucket{surface=\"home\",stage=\"sources\"",
        "cascade_pipeline_seconds_bucket{surface=\"home\"",
        "cascade_events_ingested_total",
        "cascade_http_request_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}");
    }
    let (st, _) = s.get("/readyz").await;
    assert_eq!(st, 200);
    s.stop().await;
}
