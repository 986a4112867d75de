//! Crash safety: a server killed with SIGKILL while ingesting loses no acknowledged event.

mod common;

use cascade_core::{Event, Mutation, Target};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn start(dir: &Path) -> (Child, String) {
    common::serve(dir, &[])
}

fn event_json(seq: u64) -> serde_json::Value {
    let kind = ["view", "click", "like", "skip"][(seq % 4) as usize];
    serde_json::json!({
        "type": kind,
        "user_id": format!("u{}", seq % 97),
        "item_id": format!("i{}", seq % 1013),
        "value": (seq % 7) as f64 + 1.0,
        "timestamp": 1_700_000_000 + seq,
        "request_id": format!("r{seq}"),
    })
}

fn key(e: &Event) -> (String, String, String, u64, i64) {
    let item = match &e.target {
        Target::Item(i) | Target::Creator(i) => i.clone(),
    };
    (
        e.user_id.clone(),
        item,
        e.request_id.clone().unwrap_or_default(),
        e.value.to_bits() as u64,
        e.ts,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut child, base) = start(tmp.path());
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, base, acked, next) =
            (client.clone(), base.clone(), acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let start = next.fetch_add(50, std::sync::atomic::Ordering::SeqCst);
                let events: Vec<_> = (start..start + 50).map(event_json).collect();
                let resp = client
                    .post(format!("{base}/v1/events"))
                    .json(&serde_json::json!({ "events": events }))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().expect("lock").extend(start..start + 50);
                    }
                    _ => return,
                }
            }
        }));
    }
    // Kill once a good number of batches are acknowledged, while clients are still posting.
    while acked.lock().expect("lock").len() < 20_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 20_000,
        "only {} events acknowledged before the deadline",
        acked.len()
    );

    // The log is readable and holds every acknowledged event, with its content.
    let records =
        cascade_storage::EventLog::read_all(&tmp.path().join("log")).expect("log readable");
    let mut stored: Vec<_> = records
        .iter()
        .flat_map(|m| match m {
            Mutation::Events(v) => v.iter().map(key).collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    stored.sort();
    for seq in &acked {
        let ev: cascade_core::EventIn = serde_json::from_value(event_json(*seq)).expect("event");
        let want = key(&ev.into_event(i64::MAX / 2).expect("valid"));
        assert!(
            stored.binary_search(&want).is_ok(),
            "acknowledged event {seq} lost"
        );
    }

    // Restart: the server replays the log and serves all of it.
    let (mut child, base) = start(tmp.path());
    let health: serde_json::Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(
        health["events"].as_u64(),
        Some(stored.len() as u64),
        "{health}"
    );
    let r = client
        .get(format!("{base}/v1/recommendations/home?user_id=u1&n=5"))
        .send()
        .await
        .expect("recs");
    assert_eq!(r.status().as_u16(), 200);
    child.kill().expect("kill");
    let _ = child.wait();
}

/// Every page of `path` to the end (the rows under `key`).
async fn pages(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
) -> Vec<serde_json::Value> {
    let (mut rows, mut cursor) = (Vec::new(), String::new());
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let body: serde_json::Value = client
            .get(format!("{base}{path}{sep}n=1000&cursor={cursor}"))
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        rows.extend(body[key].as_array().expect("rows").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return rows,
        }
    }
}

/// What a server serves back of its data: items, users, and each user's feedback.
async fn read_back(client: &reqwest::Client, base: &str) -> serde_json::Value {
    let items = pages(client, base, "/v1/items", "items").await;
    let users = pages(client, base, "/v1/users", "users").await;
    let mut feedback = serde_json::Map::new();
    for u in &users {
        let id = u["id"].as_str().expect("id");
        let evs = pages(client, base, &format!("/v1/users/{id}/events"), "events").await;
        feedback.insert(id.to_string(), serde_json::Value::Array(evs));
    }
    serde_json::json!({"items": items, "users": users, "feedback": feedback})
}

/// Whether the log starts with a compacted segment (a compaction finished).
fn compacted(log_dir: &Path) -> bool {
    std::fs::read_dir(log_dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| std::fs::read(e.path()).is_ok_and(|b| b.starts_with(b"CSCLOG02")))
    })
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_compaction_under_ingest_loses_nothing_and_restart_equals_a_full_replay() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Small segments, a compaction every second (a retention that keeps all of these events,
    // so it always has work), snapshots every second.
    let env: Vec<(String, String)> = [
        ("CASCADE_STORAGE__SEGMENT_MB", "1"),
        ("CASCADE_STORAGE__RETENTION_DAYS", "36500"),
        ("CASCADE_STORAGE__COMPACTION_INTERVAL_S", "1"),
        ("CASCADE_STORAGE__SNAPSHOT_INTERVAL_S", "1"),
        ("CASCADE_STORAGE__SNAPSHOT_MIN_RECORDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let log_dir = tmp.path().join("log");
    let mut killed_mid_compaction = 0;
    for round in 0..3 {
        let (child, base) = common::serve(tmp.path(), &env);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut tasks = Vec::new();
        for w in 0..3 {
            let (client, base, acked, next) =
                (client.clone(), base.clone(), acked.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let start = next.fetch_add(50, std::sync::atomic::Ordering::SeqCst);
                    let events: Vec<_> = (start..start + 50).map(event_json).collect();
                    let mut ok = client
                        .post(format!("{base}/v1/events"))
                        .json(&serde_json::json!({ "events": events }))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    // Catalog writes too: compaction keeps their latest state.
                    if ok && w == 0 {
                        let item = serde_json::json!({"items": [{"id": format!("i{}", start % 1013),
                            "title": format!("Title {start}"), "categories": ["C"]}]});
                        ok = client
                            .post(format!("{base}/v1/items"))
                            .json(&item)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                    }
                    if !ok {
                        return;
                    }
                    acked.lock().expect("lock").extend(start..start + 50);
                }
            }));
        }
        // Round 0 and 2: SIGKILL as soon as a compaction is writing its output; round 1: once
        // a compaction has finished, at an arbitrary moment of the load.
        let floor = acked.lock().expect("lock").len() + 5_000;
        let mut mid = false;
        while Instant::now() < deadline {
            let enough = acked.lock().expect("lock").len() >= floor;
            let when = if round == 1 {
                compacted(&log_dir)
            } else {
                log_dir.join("compact.tmp").exists()
            };
            if enough && when {
                mid = log_dir.join("compact.tmp").exists();
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        kill(child);
        killed_mid_compaction += usize::from(mid);
        for t in tasks {
            let _ = t.await;
        }
    }
    assert!(
        killed_mid_compaction >= 1,
        "no kill landed inside a compaction"
    );

    // Every acknowledged event is in the log, with its content.
    let (child, base) = common::serve(tmp.path(), &env);
    let records = cascade_storage::EventLog::read_all(&log_dir).expect("log readable");
    let mut stored: Vec<_> = records
        .iter()
        .flat_map(|m| match m {
            Mutation::Events(v) => v.iter().map(key).collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    stored.sort();
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 15_000, "only {} acknowledged", acked.len());
    for seq in &acked {
        let ev: cascade_core::EventIn = serde_json::from_value(event_json(*seq)).expect("event");
        let want = key(&ev.into_event(i64::MAX / 2).expect("valid"));
        assert!(
            stored.binary_search(&want).is_ok(),
            "acknowledged event {seq} lost"
        );
    }
    assert!(compacted(&log_dir), "a compaction landed");
    let restarted = read_back(&client, &base).await;
    kill(child);

    // The same data dir replayed from scratch (no snapshot) serves the same data.
    let copy = tempfile::tempdir().expect("copy");
    std::fs::create_dir_all(copy.path().join("log")).expect("log dir");
    for f in std::fs::read_dir(&log_dir).expect("log") {
        let f = f.expect("entry").path();
        std::fs::copy(
            &f,
            copy.path().join("log").join(f.file_name().expect("name")),
        )
        .expect("copy");
    }
    let (child, base) = common::serve(copy.path(), &[]);
    let replayed = read_back(&client, &base).await;
    kill(child);
    assert_eq!(
        restarted["users"].as_array().map(Vec::len),
        replayed["users"].as_array().map(Vec::len)
    );
    assert!(
        restarted == replayed,
        "a restart from snapshot + log equals a full replay"
    );
}
