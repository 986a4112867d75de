//! Connection-level and per-key bounds: a key's rate per route group (429 with
//! `Retry-After`, other keys and groups untouched), slow or idle connections closed after the
//! header timeout, and the cap on open connections.

use super::TestServer;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_is_its_own_and_a_spent_one_says_when_to_retry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.auth.read_keys = vec!["reader-one-key".into(), "reader-two-key".into()];
        c.server.rate_limit.read_per_s = 2;
        c.server.rate_limit.burst_s = 1.0;
    })
    .await;
    let get = |key: &'static str| {
        let (client, url) = (s.client.clone(), format!("{}/v1/suggest?q=a", s.base));
        async move {
            let r = client
                .get(url)
                .header("X-API-Key", key)
                .send()
                .await
                .expect("get");
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, retry, body)
        }
    };
    // A burst of two passes; the third is refused, naming the header and when to retry.
    assert_ne!(get("reader-one-key").await.0, 429);
    assert_ne!(get("reader-one-key").await.0, 429);
    let (st, retry, body) = get("reader-one-key").await;
    assert_eq!(st, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["field"], "authorization");
    assert_eq!(retry, Some(1));
    // Another key has its own bucket; no key at all is refused by auth, not by the rate.
    assert_ne!(get("reader-two-key").await.0, 429);
    let r = s
        .client
        .get(format!("{}/v1/suggest?q=a", s.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    // After the wait it said, the key is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(get("reader-one-key").await.0, 429);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_open_ones_are_capped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.server.header_timeout_ms = 400;
        c.server.max_connections = 2;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // A client that sends half a request line and stalls is closed after the timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HT").await.expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a stalled request was kept open past 5 s");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(300), "{held:?}");
    // Two idle connections take both slots: a third client waits until the timeout frees one,
    // then is served.
    let idle: Vec<_> = [0, 1]
        .iter()
        .map(|_| tokio::net::TcpStream::connect(&addr))
        .collect();
    let mut held_open = Vec::new();
    for c in idle {
        held_open.push(c.await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once a slot is free");
    assert_eq!(r.status().as_u16(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "served at once, past the cap: {waited:?}"
    );
    drop(held_open);
    s.stop().await;
}
