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
