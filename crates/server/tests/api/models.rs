//! Models over HTTP: restart, items added after training, trained bundles served after restart, hot swap and refusal.

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_data_dir_gives_the_same_answers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let req = json!({"user_id": "u4", "n": 10, "context": {"time": T0 + 10 * DAY}});
    // The ranker is trained from the log at start, which the first run (started empty)
    // could not do; this test is about the log and the models rebuilt from it.
    // Exploration is off too: the first run's impressions (logged, so replayed after the
    // restart) change which items are under-exposed.
    let no_ranker = |c: &mut Config| {
        c.models.ranker.enabled = false;
        for s in c.surfaces.values_mut() {
            s.exploration.share = 0.0;
        }
    };
    let s = TestServer::start(tmp.path(), no_ranker).await;
    seed_world(&s).await;
    let (_, before) = s.post("/v1/recommendations/home", req.clone()).await;
    let (_, sim_before) = s.get("/v1/items/i3/similar").await;
    s.stop().await;
    let s = TestServer::start(tmp.path(), no_ranker).await;
    assert!(s.engine.replay.records >= 3);
    let (_, after) = s.post("/v1/recommendations/home", req).await;
    let (_, sim_after) = s.get("/v1/items/i3/similar").await;
    assert_eq!(ids(&before), ids(&after));
    let scores = |v: &Value| {
        v["items"]
            .as_array()
            .expect("i")
            .iter()
            .map(|i| i["score"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(scores(&before), scores(&after));
    assert_eq!(sim_before["items"], sim_after["items"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_added_after_training_is_searchable_without_a_retrain() {
    use cascade_surfaces::{SourceConfig, SourceKind, SurfaceConfig};
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        // The test steps the fold-in itself.
        c.models.popular_refresh_ms = 60_000;
        c.surfaces.insert(
            "ann".into(),
            SurfaceConfig {
                sources: vec![SourceConfig::new(SourceKind::Embedding, 5)],
                fallback: false,
                ..Default::default()
            },
        );
    })
    .await;
    seed_world(&s).await;
    let new_item = json!({"items": [{"id": "newcomer", "categories": ["Comedy"],
        "creator_id": "c9", "created_at": T0}]});
    assert_eq!(s.post("/v1/items", new_item).await.0, 200);
    // Every Comedy watcher but u0 likes it.
    let events: Vec<Value> = (3..40)
        .step_by(3)
        .map(|u| {
            json!({"type": "like", "user_id": format!("u{u}"), "item_id": "newcomer",
                "timestamp": T0 + 5_000})
        })
        .collect();
    assert_eq!(
        s.post("/v1/events", json!({ "events": events })).await.0,
        200
    );
    let path = "/v1/recommendations/ann?user_id=u0&n=5";
    let (st, before) = s.get(path).await;
    assert_eq!(st, 200, "{before}");
    assert!(!ids(&before).contains(&"newcomer".to_string()), "{before}");

    assert!(s.engine.fold_new_items() >= 1);
    let (_, after) = s.get(path).await;
    assert!(
        ids(&after).contains(&"newcomer".to_string()),
        "folded-in item is found by the next query: {after}"
    );
    // A Science watcher's neighbourhood is elsewhere.
    let (_, other) = s.get("/v1/recommendations/ann?user_id=u2&n=3").await;
    assert!(!ids(&other).contains(&"newcomer".to_string()), "{other}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_bundle_is_what_the_restarted_server_serves() {
    use cascade_training::{TrainOptions, train};
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    s.stop().await;
    // `cascade train` on the stopped server's data dir.
    let cfg = Config::with_data_dir(tmp.path());
    let manifest = tokio::task::spawn_blocking(move || {
        let r = cascade_runtime::replay(&cfg).expect("replay");
        let opts = TrainOptions { holdout_users: 5 };
        let mut b = train(&r.state, &cfg, &opts, &|_, _, _| {});
        b.save(&cascade_index::bundle::models_dir(&cfg.data_dir))
            .expect("save");
        b.manifest
    })
    .await
    .expect("train");
    assert_eq!((manifest.data.items, manifest.data.users), (30, 40));
    assert!(manifest.data.interactions > 100, "{:?}", manifest.data);
    assert_eq!(manifest.metrics.holdout_users, 5);
    assert!(manifest.metrics.ann_recall_at_10.is_some());
    assert_eq!(manifest.metrics.ann_items, 30);

    let s = TestServer::start(tmp.path(), |_| {}).await;
    let models = s.engine.env.models.load();
    assert_eq!(
        models.version, manifest.version,
        "served without retraining"
    );
    assert!(models.ann.as_ref().is_some_and(|a| a.len() == 30));
    let (st, r) = s.get("/v1/recommendations/home?user_id=u4&n=5").await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["model_version"], manifest.version.as_str());
    assert_eq!(ids(&r).len(), 5);
    s.stop().await;

    // A damaged bundle is reported and the server still starts, training in process.
    let cur = tmp.path().join("models").join(&manifest.version);
    std::fs::write(cur.join("embeddings.postcard"), b"garbage").expect("damage");
    let s = TestServer::start(tmp.path(), |_| {}).await;
    assert_ne!(s.engine.env.models.load().version, manifest.version);
    let (st, r) = s.get("/v1/recommendations/home?user_id=u4&n=5").await;
    assert_eq!((st, ids(&r).len()), (200, 5), "{r}");
    s.stop().await;
}

/// Trains a bundle from the server's current state and saves it to the registry.
pub(super) fn save_bundle(s: &TestServer, ranker: Option<cascade_gbdt::Model>) -> String {
    let opts = cascade_training::TrainOptions { holdout_users: 0 };
    let mut b =
        cascade_training::train(&s.engine.env.state, &s.engine.config, &opts, &|_, _, _| {});
    b.ranker = ranker;
    let dir = cascade_index::bundle::models_dir(&s.engine.config.data_dir);
    let path = b.save(&dir).expect("save");
    path.file_name()
        .expect("name")
        .to_string_lossy()
        .to_string()
}

/// Posts one more event so the next bundle gets another version (it names the generation).
pub(super) async fn touch(s: &TestServer, k: usize) {
    let (st, _) = s
        .post(
            "/v1/events",
            json!({"events": [{"type": "view", "user_id": format!("u{k}"), "item_id": "i1"}]}),
        )
        .await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_hot_swap_under_load_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| c.models.ranker.enabled = false).await;
    seed_world(&s).await;
    let a = save_bundle(&s, None);
    touch(&s, 1).await;
    let b = save_bundle(&s, None);
    assert_ne!(a, b);
    let (st, list) = s.get("/v1/admin/models").await;
    assert_eq!(st, 200);
    let listed: Vec<&str> = list["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["version"].as_str())
        .collect();
    assert_eq!(listed, vec![a.as_str(), b.as_str()], "oldest first");

    // A load generator runs through every swap.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = std::time::Instant::now();
    let load: Vec<_> = (0..4)
        .map(|c| {
            let (client, base, stop) = (s.client.clone(), s.base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut k = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = std::time::Instant::now();
                    let r = client
                        .get(format!(
                            "{base}/v1/recommendations/home?user_id=u{}&n=10",
                            (c + k) % 40
                        ))
                        .send()
                        .await
                        .expect("send");
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let version = v["model_version"].as_str().unwrap_or_default().to_string();
                    let at = (t - t0).as_secs_f64() * 1e3;
                    seen.push((
                        status,
                        version,
                        ids(&v).len(),
                        t.elapsed().as_secs_f64() * 1e3,
                        at,
                    ));
                    k += 1;
                }
                seen
            })
        })
        .collect();
    let version_now = |s: &TestServer| s.engine.env.models.load().version.clone();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    // When each swap ran (ms since t0), to compare latency during swaps with the rest.
    let mut swaps: Vec<(f64, f64)> = Vec::new();
    let now_ms = || (std::time::Instant::now() - t0).as_secs_f64() * 1e3;
    for target in [&a, &b] {
        let from = now_ms();
        let (st, r) = s
            .post(&format!("/v1/admin/models/{target}/activate"), json!({}))
            .await;
        swaps.push((from, now_ms()));
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["active"], target.as_str());
        assert_eq!(&version_now(&s), target);
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let from = now_ms();
    let (st, r) = s.post("/v1/admin/models/rollback", json!({})).await;
    swaps.push((from, now_ms()));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["active"], a.as_str());
    assert_eq!(version_now(&s), a);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for t in load {
        all.extend(t.await.expect("join"));
    }
    assert!(all.len() > 100, "the load ran: {}", all.len());
    assert!(
        all.iter().all(|(st, _, n, _, _)| *st == 200 && *n > 0),
        "every request answered with a list during the swaps"
    );
    for v in [&a, &b] {
        assert!(
            all.iter().any(|(_, seen, _, _, _)| seen == v),
            "answers switched to {v}"
        );
    }
    let p99 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let during = |&(_, _, _, ms, at): &(u16, String, usize, f64, f64)| {
        swaps.iter().any(|&(a, b)| at + ms >= a && at <= b)
    };
    let in_swap: Vec<f64> = all.iter().filter(|x| during(x)).map(|x| x.3).collect();
    let outside: Vec<f64> = all.iter().filter(|x| !during(x)).map(|x| x.3).collect();
    let (n_in, n_out) = (in_swap.len(), outside.len());
    let (p_in, p_out) = (p99(in_swap), p99(outside));
    println!(
        "hot swap: {} requests, 0 failed; p99 {p_out:.2} ms outside the swaps ({n_out}), {p_in:.2} ms during them ({n_in}); swaps took {:?} ms",
        all.len(),
        swaps
            .iter()
            .map(|(a, b)| (b - a).round())
            .collect::<Vec<_>>()
    );
    assert!(n_in > 0);
    assert!(
        p_in <= 2.0 * p_out + 2.0,
        "p99 during swaps {p_in} ms vs {p_out} ms"
    );

    // A damaged bundle is refused with a clear error; the active one keeps serving.
    touch(&s, 2).await;
    let c = save_bundle(&s, None);
    let emb = cascade_index::bundle::models_dir(tmp.path())
        .join(&c)
        .join("embeddings.postcard");
    let mut bytes = std::fs::read(&emb).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&emb, bytes).expect("write");
    let (st, r) = s
        .post(&format!("/v1/admin/models/{c}/activate"), json!({}))
        .await;
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["error"]["code"], "model_refused");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum"),
        "{r}"
    );
    assert_eq!(version_now(&s), a);
    // A ranker over features this server does not serve is refused too.
    touch(&s, 3).await;
    let x: Vec<f32> = (0..200).map(|i| (i % 7) as f32).collect();
    let y: Vec<f32> = x.iter().map(|&v| if v > 4.0 { 1.0 } else { 0.0 }).collect();
    let off: Vec<usize> = (0..=5).map(|q| q * 40).collect();
    let p = cascade_gbdt::Params {
        trees: 3,
        min_data_in_leaf: 5,
        ..Default::default()
    };
    let (foreign, _) = cascade_gbdt::train(
        &cascade_gbdt::Lists::new(&x, 1, &y, &off),
        None,
        &["not_a_served_feature".to_string()],
        &p,
        &|_, _| {},
    )
    .expect("train");
    let d = save_bundle(&s, Some(foreign));
    let (st, r) = s
        .post(&format!("/v1/admin/models/{d}/activate"), json!({}))
        .await;
    assert_eq!(st, 422, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not_a_served_feature"),
        "{r}"
    );
    assert_eq!(version_now(&s), a);
    let (st, r) = s.post("/v1/admin/models/nope/activate", json!({})).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (404, Some("unknown_model"))
    );
    let (st, _) = s.get("/v1/recommendations/home?user_id=u3").await;
    assert_eq!(st, 200);
    s.stop().await;
}
