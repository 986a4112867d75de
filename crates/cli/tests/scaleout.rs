//! Scale-out: two `cascade serve` processes sharing Redis and NATS JetStream. Events posted to
//! replica A change what replica B serves within 5 s; killing A loses no acknowledged event.
//! Needs `CASCADE_TEST_REDIS_URL` and `CASCADE_TEST_NATS_URL` (`.ci/run` sets both).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes the test's keys and stream however the test ends (`cascade features drop`).
struct Cleanup(Vec<(String, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let st = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["features", "drop"])
            .env("CASCADE_LOG", "warn")
            .envs(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .status();
        if !std::thread::panicking() {
            assert!(st.is_ok_and(|s| s.success()), "cleanup failed");
        }
    }
}

fn cascade(args: &[&str]) {
    let st = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(args)
        .env("CASCADE_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .expect("run cascade");
    assert!(st.success(), "cascade {args:?}");
}

fn start(dir: &Path, env: &[(String, String)]) -> Replica {
    let (child, base) = common::serve(dir, env);
    Replica { child, base }
}

#[derive(serde::Deserialize)]
struct Rec {
    item_id: String,
    sources: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Recs {
    items: Vec<Rec>,
    degraded: Vec<String>,
}

async fn recs(client: &reqwest::Client, base: &str, user: &str) -> Recs {
    client
        .get(format!(
            "{base}/v1/recommendations/home?user_id={user}&n=30"
        ))
        .send()
        .await
        .expect("request")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json")
}

async fn post_events(client: &reqwest::Client, base: &str, events: serde_json::Value) -> bool {
    client
        .post(format!("{base}/v1/events"))
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Polls `check` every 20 ms for up to `within`; the time it took to hold, if it did.
async fn until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < within {
        if check().await {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn redis_set(con: &mut redis::aio::MultiplexedConnection, key: &str) -> HashSet<String> {
    redis::cmd("SMEMBERS")
        .arg(key)
        .query_async(con)
        .await
        .expect("smembers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_features_and_lose_no_acknowledged_event() {
    let (Ok(redis_url), Ok(nats_url)) = (
        std::env::var("CASCADE_TEST_REDIS_URL"),
        std::env::var("CASCADE_TEST_NATS_URL"),
    ) else {
        eprintln!("CASCADE_TEST_REDIS_URL / CASCADE_TEST_NATS_URL unset: skipping (CI sets them)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let world = tmp.path().join("world");
    let world_s = world.to_str().expect("utf-8");
    cascade(&[
        "generate", "--out", world_s, "--items", "3000", "--users", "300", "--events", "30000",
        "--seed", "7",
    ]);
    let creator_of: HashMap<String, String> = std::fs::read_to_string(world.join("items.jsonl"))
        .expect("items")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("item json");
            (
                v["id"].as_str().expect("id").to_string(),
                v["creator_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&a_dir, &b_dir] {
        let d = d.to_str().expect("utf-8");
        cascade(&["import", "--data-dir", d, "--format", "jsonl", world_s]);
    }
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos()
    );
    let prefix = format!("cascade-e2e-{tag}");
    let stream = format!("E2E_{tag}");
    let env: Vec<(String, String)> = [
        ("CASCADE_STORAGE__BACKEND", "redis".to_string()),
        ("CASCADE_STORAGE__REDIS__URL", redis_url.clone()),
        ("CASCADE_STORAGE__REDIS__PREFIX", prefix.clone()),
        ("CASCADE_BUS__BACKEND", "nats".to_string()),
        ("CASCADE_BUS__NATS__URL", nats_url.clone()),
        ("CASCADE_BUS__NATS__STREAM", stream.clone()),
        ("CASCADE_BUS__NATS__SUBJECT", format!("cascade.e2e.{tag}")),
        ("CASCADE_BUS__NATS__DURABLE", format!("upd_{tag}")),
        ("CASCADE_BUS__NATS__ACK_WAIT_MS", "1000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let _cleanup = Cleanup(env.clone());
    let mut a_env = env.clone();
    a_env.push(("CASCADE_FAULTS__ENABLED".into(), "true".into()));
    let mut a = start(&a_dir, &a_env);
    let b = start(&b_dir, &env);
    let client = reqwest::Client::new();
    let redis_client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let mut con = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    // 1. A like posted to A: B starts recommending the liked item's neighbours (a new user has
    // no history, so nothing came from `similar` before).
    let user = format!("scale-{tag}");
    let before = recs(&client, &b.base, &user).await;
    assert!(
        before
            .items
            .iter()
            .all(|r| !r.sources.iter().any(|s| s == "similar"))
    );
    // The ranker may still be training at start; the feature store must answer.
    let store_ok = |d: &[String]| !d.iter().any(|x| x.starts_with("features:"));
    assert!(store_ok(&before.degraded), "{:?}", before.degraded);
    let liked = before.items[0].item_id.clone();
    assert!(
        post_events(
            &client,
            &a.base,
            serde_json::json!([{"type": "like", "user_id": user, "item_id": liked}]),
        )
        .await
    );
    let took = until(Duration::from_secs(5), || async {
        let r = recs(&client, &b.base, &user).await;
        r.items.iter().all(|x| x.item_id != liked)
            && r.items
                .iter()
                .any(|x| x.sources.iter().any(|s| s == "similar"))
    })
    .await;
    assert!(took.is_some(), "B did not reflect A's like within 5 s");
    let history: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:{{u:{user}}}:h"))
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .expect("zrange");
    assert!(
        history.iter().any(|m| m.ends_with(&format!("|{liked}"))),
        "{history:?}"
    );

    // 2. A hide posted to A: the item and everything by its creator vanish from B.
    let shown = recs(&client, &b.base, &user).await;
    let hidden = shown.items[0].item_id.clone();
    let creator = creator_of[&hidden].clone();
    assert!(
        post_events(
            &client,
            &a.base,
            serde_json::json!([{"type": "hide", "user_id": user, "item_id": hidden}]),
        )
        .await
    );
    let took = until(Duration::from_secs(5), || async {
        let r = recs(&client, &b.base, &user).await;
        !r.items.is_empty() && r.items.iter().all(|x| creator_of[&x.item_id] != creator)
    })
    .await;
    assert!(took.is_some(), "B still shows the hidden creator after 5 s");
    let creators = redis_set(&mut con, &format!("{prefix}:{{u:{user}}}:xc")).await;
    assert!(creators.contains(&creator), "{creators:?}");

    // 3. A stream of hides to A, then A is killed: every acknowledged one reaches the store
    // (B's updater takes over what A held) and B's replica.
    // A's feature writes hang (an injected fault): whatever A's updater takes it holds
    // unacknowledged until it dies.
    let fault = client
        .post(format!("{}/v1/admin/faults", a.base))
        .json(
            &serde_json::json!({"dependency": "features", "mode": "latency", "latency_ms": 60000}),
        )
        .send()
        .await
        .expect("fault");
    assert!(fault.status().is_success(), "{}", fault.status());
    let victim = format!("scale-kill-{tag}");
    let ids: Vec<String> = (0..400).map(|i| format!("i{i}")).collect();
    let mut acked = Vec::new();
    for chunk in ids.chunks(20) {
        let events: Vec<_> = chunk
            .iter()
            .map(|i| serde_json::json!({"type": "hide", "user_id": victim, "item_id": i}))
            .collect();
        if post_events(&client, &a.base, serde_json::Value::Array(events)).await {
            acked.extend(chunk.iter().cloned());
        }
    }
    a.child.kill().expect("SIGKILL A");
    let _ = a.child.wait();
    assert_eq!(acked.len(), ids.len());
    let key = format!("{prefix}:{{u:{victim}}}:x");
    let t = Instant::now();
    let mut got = redis_set(&mut con, &key).await;
    while got.len() < acked.len() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = redis_set(&mut con, &key).await;
    }
    let missing: Vec<_> = acked.iter().filter(|i| !got.contains(*i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let r = recs(&client, &b.base, &victim).await;
    assert!(r.items.iter().all(|x| !acked.contains(&x.item_id)));
    assert!(store_ok(&r.degraded), "{:?}", r.degraded);

    // 4. The first user erased through B: every Redis key of theirs goes (the feature
    // updater applies the erasure from the bus) but the tombstone, which holds no data and
    // expires; B forgets them, others are still served.
    let erase = client
        .delete(format!("{}/v1/users/{user}", b.base))
        .send()
        .await
        .expect("erase");
    assert_eq!(erase.status().as_u16(), 200);
    let pattern = format!("{prefix}:{{u:{user}}}:*");
    let tomb = format!("{prefix}:{{u:{user}}}:e");
    let gone = until(Duration::from_secs(5), || {
        let (client, base, user) = (client.clone(), b.base.clone(), user.clone());
        let mut con = con.clone();
        let (pattern, tomb) = (pattern.clone(), tomb.clone());
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut con)
                .await
                .expect("keys");
            let status = client
                .get(format!("{base}/v1/users/{user}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            keys.iter().all(|k| *k == tomb) && status == 404
        }
    })
    .await;
    assert!(
        gone.is_some(),
        "the erased user's Redis keys or state outlived 5 s"
    );
    let r = recs(&client, &b.base, &victim).await;
    assert!(
        !r.items.is_empty() && store_ok(&r.degraded),
        "{:?}",
        r.degraded
    );

    drop(b);
}
