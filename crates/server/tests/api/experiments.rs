//! Experiments: sticky arms in their shares, holdouts, and online metrics per arm.

use crate::*;

fn experiment_config(c: &mut Config) {
    c.models.ranker.enabled = false;
    c.experiments = vec![cascade_runtime::ExperimentConfig {
        name: "feedlike".into(),
        surface: "home".into(),
        salt: None,
        holdout: 0.1,
        arms: vec![
            cascade_runtime::ArmConfig {
                name: "control".into(),
                weight: 1.0,
                pipeline: None,
                model: None,
            },
            cascade_runtime::ArmConfig {
                name: "treatment".into(),
                weight: 1.0,
                pipeline: Some("feed".into()),
                model: None,
            },
        ],
    }];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_assign_sticky_arms_in_their_shares_and_report_online_metrics() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), experiment_config).await;
    seed_world(&s).await;
    let x = &s.engine.experiments[0];
    // Shares over 100k users within statistical tolerance (3 sigma is ≈ 0.005 here).
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for u in 0..100_000 {
        let user = format!("user-{u}");
        let arm = x.assign(&user).name.clone();
        assert_eq!(x.assign(&user).name, arm, "sticky");
        *counts.entry(arm).or_default() += 1;
    }
    for (arm, share) in [("holdout", 0.1), ("control", 0.45), ("treatment", 0.45)] {
        let got = counts[arm] as f64 / 100_000.0;
        assert!((got - share).abs() < 0.006, "{arm}: {got} vs {share}");
    }
    // Responses name their arm; the holdout is served the baseline (popular list only).
    let mut by_arm = std::collections::HashMap::<String, Vec<Value>>::new();
    for u in 0..40 {
        let user = format!("u{u}");
        let (st, r) = s
            .post(
                "/v1/recommendations/home",
                json!({"user_id": user, "n": 5, "request_id": format!("req-{u}")}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["experiment"]["name"], "feedlike");
        let arm = r["experiment"]["arm"].as_str().expect("arm").to_string();
        assert_eq!(
            arm,
            x.assign(&user).name,
            "the response names the user's arm"
        );
        let (_, again) = s
            .get(&format!("/v1/recommendations/home?user_id={user}&n=5"))
            .await;
        assert_eq!(
            again["experiment"]["arm"],
            arm.as_str(),
            "sticky over requests"
        );
        by_arm.entry(arm).or_default().push(r);
    }
    for r in by_arm.get("holdout").into_iter().flatten() {
        for it in r["items"].as_array().expect("items") {
            let sources: Vec<&str> = it["sources"]
                .as_array()
                .expect("sources")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                sources
                    .iter()
                    .all(|s| *s == "popular" || *s == "fallback_popular"),
                "holdout never gets the treatment: {sources:?}"
            );
        }
    }
    // Feedback joined by request id lands on the arm that served it.
    let treated = by_arm.get("treatment").expect("some treatment users");
    let mut clicks = Vec::new();
    for r in treated {
        let item = r["items"][0]["item_id"].as_str().expect("item").to_string();
        clicks.push(
            json!({"type": "click", "user_id": r["user_id"], "item_id": item,
                           "request_id": r["request_id"]}),
        );
    }
    assert_eq!(
        s.post("/v1/events", json!({ "events": clicks })).await.0,
        200
    );
    let t = std::time::Instant::now();
    let report = loop {
        let (st, rep) = s.get("/v1/admin/experiments/feedlike").await;
        assert_eq!(st, 200, "{rep}");
        let arm = |name: &str| {
            rep["arms"]
                .as_array()
                .expect("arms")
                .iter()
                .find(|a| a["arm"] == name)
                .cloned()
                .expect("arm")
        };
        let tr = arm("treatment");
        let imps = tr["impressions"].as_u64().expect("impressions");
        if tr["ctr"]["value"].as_f64().unwrap_or(0.0) > 0.0 && imps >= 5 * treated.len() as u64 {
            break rep;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{rep}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let arms = report["arms"].as_array().expect("arms");
    assert_eq!(arms.len(), 3);
    for a in arms {
        let ctr = &a["ctr"];
        let (v, lo, hi) = (
            ctr["value"].as_f64().expect("v"),
            ctr["low"].as_f64().expect("lo"),
            ctr["high"].as_f64().expect("hi"),
        );
        assert!(lo <= v && v <= hi, "{a}");
        if a["arm"] == "treatment" {
            assert_eq!(a["requests"].as_u64(), Some(treated.len() as u64 * 2));
            assert!(v > 0.0);
            assert_eq!(a["pipeline"], "feed");
        } else {
            assert_eq!(a["ctr"]["value"].as_f64(), Some(0.0), "{a}");
        }
    }
    let (st, _) = s.get("/v1/admin/experiments/nope").await;
    assert_eq!(st, 404);
    s.stop().await;
}
