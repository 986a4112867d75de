//! End-to-end tests: a real server on port 0, driven over HTTP.

mod dashboard;
mod data;
mod drift;
mod erasure;
mod experiments;
mod gorse;
mod input;
mod limits;
mod models;
mod policy;
mod reliability;
mod serving;
mod suggest;

use cascade_server::{Config, Engine};

use serde_json::{Value, json};

use std::sync::Arc;

struct TestServer {
    base: String,
    engine: Arc<Engine>,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    async fn start(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = Config::with_data_dir(dir);
        cfg.models.popular_refresh_ms = 50;
        tweak(&mut cfg);
        let engine = Engine::open_async(cfg.clone()).await.expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let e = engine.clone();
        let serving = cascade_server::serve(e, &cfg, listener, async {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            serving.await.expect("serve");
        });
        Self {
            base,
            engine,
            client: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.engine.close().await;
    }

    /// A response's status and JSON body, its reasons checked.
    async fn read(&self, r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(Value::Null);
        self.check_reasons(&v);
        (status, v)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("send");
        self.read(r).await
    }

    /// Every recommendation response any test receives: each item has a non-empty reason
    /// whose code is backed by a source that found the item or the rule that placed it, and
    /// `because_you_liked` names an item the user really liked.
    fn check_reasons(&self, v: &Value) {
        let (Some(items), Some(user)) = (v["items"].as_array(), v["user_id"].as_str()) else {
            return;
        };
        if v.get("model_version").is_none() {
            return;
        }
        let g = self.engine.env.state.read();
        let history = g.user_view(user, i64::MAX, 200).recent;
        for it in items {
            let code = it["reason"]["code"].as_str().unwrap_or_default();
            let text = it["reason"]["text"].as_str().unwrap_or_default();
            assert!(!code.is_empty() && !text.is_empty(), "empty reason: {it}");
            let from = |s: &str| {
                it["sources"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == s))
            };
            let placed = it["placed_by"].as_str().unwrap_or_default();
            let backed = match code {
                "because_you_liked" | "similar_to_recent" => from("similar"),
                "from_followed_creator" => from("follows"),
                "editorial_pick" => from("editorial") || placed == "pinned",
                "exploring" => placed == "exploring",
                "new_for_you" => placed == "new_item" || from("fresh"),
                "trending" => from("trending"),
                "picked_for_you" => from("embedding"),
                "popular_in_category" | "popular" => from("popular") || placed == "fallback",
                other => panic!("unknown reason code {other}"),
            };
            assert!(backed, "reason {code} not backed by the trace: {it}");
            if code == "because_you_liked" {
                let liked = history.iter().any(|i| {
                    matches!(
                        i.kind,
                        cascade_core::EventKind::Like
                            | cascade_core::EventKind::Share
                            | cascade_core::EventKind::Purchase
                    ) && g.item(i.item).is_some_and(|r| text.contains(&*r.title))
                });
                assert!(liked, "`{text}` names nothing {user} liked");
            }
            if let Some(seed) = it["explain"]["seed_item_id"].as_str()
                && matches!(code, "because_you_liked" | "similar_to_recent")
            {
                let title = g
                    .items
                    .get(seed)
                    .and_then(|i| g.item(i))
                    .map(|r| r.title.to_string());
                assert!(
                    title.is_some_and(|t| text.contains(&t)),
                    "seed {seed} not in `{text}`"
                );
            }
        }
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A request with an optional API key (as `Authorization: Bearer`) and JSON body.
    async fn keyed(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.expect("send");
        self.read(r).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("send");
        self.read(r).await
    }
}

const DAY: i64 = 86_400;

const T0: i64 = 1_700_000_000;

/// 30 items in 3 categories (i5 hidden, i6 mature); 40 users who watch runs of consecutive
/// items of one category, so co-visitation has structure.
async fn seed_world(s: &TestServer) {
    let cats = ["Comedy", "Drama", "Science"];
    let items: Vec<Value> = (0..30)
        .map(|i| {
            json!({
                "id": format!("i{i}"),
                "title": format!("Film {i}"),
                "categories": [cats[i % 3]],
                "creator_id": format!("c{}", i % 5),
                "created_at": T0 - 30 * DAY,
                "hidden": i == 5,
                "mature": i == 6,
            })
        })
        .collect();
    assert_eq!(s.post("/v1/items", json!({ "items": items })).await.0, 200);
    let users: Vec<Value> = (0..40)
        .map(|u| json!({"id": format!("u{u}"), "follows": ["c1"]}))
        .collect();
    assert_eq!(s.post("/v1/users", json!({ "users": users })).await.0, 200);
    let mut events = Vec::new();
    for u in 0..40 {
        let cat = u % 3;
        for step in 0..6 {
            let item = (cat + 3 * ((u / 3 + step) % 10)) % 30;
            events.push(json!({
                "type": if step % 2 == 0 { "view" } else { "like" },
                "user_id": format!("u{u}"),
                "item_id": format!("i{item}"),
                "timestamp": T0 + u as i64 * 100 + step as i64 * 10,
            }));
        }
    }
    let (st, body) = s.post("/v1/events", json!({ "events": events })).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["accepted"], 240);
    s.engine.rebuild_models();
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["item_id"].as_str().expect("id").to_string())
        .collect()
}
