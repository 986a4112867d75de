//! Erasure over HTTP: `DELETE /v1/users/{id}` removes the user from every API at once and,
//! by the next compaction, every byte of them from the data dir (log segments, snapshots),
//! checked by scanning the files; a feedback deletion forgets one user×item; recommendations
//! for everyone else keep working, and all of it holds across a restart.

use super::{T0, TestServer, seed_world};
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files under `dir` whose bytes contain any of `needles`.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
            {
                out.push(p);
            }
        }
    }
    out
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_user_leaves_every_api_at_once_and_every_file_by_the_next_compaction() {
    const GONE: &str = "erase-me-5b1c";
    const NICK: &str = "zz-private-nick-91";
    const CAPPED: &str = "capped-7f";
    let tmp = tempfile::tempdir().expect("tmp");
    let tweak = |c: &mut cascade_server::Config| {
        c.storage.snapshot_interval_s = 1;
        c.storage.snapshot_min_records = 1;
        c.storage.compaction_interval_s = 1;
        // Short histories: feedback the state no longer holds is still in the log.
        c.features.history_cap = 4;
        c.features.seen_cap = 4;
    };
    let s = TestServer::start(tmp.path(), tweak).await;
    seed_world(&s).await;
    let user = json!({"users": [{"id": GONE, "attributes": {"nick": NICK}, "follows": ["c2"]}]});
    assert_eq!(s.post("/v1/users", user).await.0, 200);
    let evs: Vec<_> = (0..6)
        .map(|k| {
            json!({"type": if k == 5 { "hide" } else { "like" }, "user_id": GONE,
                   "item_id": format!("i{}", k * 3), "timestamp": T0 + 5_000 + k})
        })
        .collect();
    assert_eq!(s.post("/v1/events", json!({ "events": evs })).await.0, 200);
    let (st, recs) = s
        .get(&format!("/v1/recommendations/home?user_id={GONE}&n=5"))
        .await;
    assert_eq!(st, 200, "{recs}");
    wait_for("a snapshot holding the user", || {
        files_holding(tmp.path(), &[GONE])
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "snap"))
    })
    .await;
    let (_, before) = s.get("/v1/users/u1/events").await;
    let u1_items: Vec<String> = before["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["item_id"].as_str().expect("item").to_string())
        .collect();

    // One user×item forgotten: u1's feedback on their newest item.
    let path = format!("/v1/users/u1/events/{}", u1_items[0]);
    let (st, body) = s.raw(Method::DELETE, &path, "").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "deleted");
    let (st, body) = s.raw(Method::DELETE, &path, "").await;
    assert_eq!(
        (st, body["status"].as_str()),
        (200, Some("not_held")),
        "{body}"
    );
    // Feedback older than the capped history is only in the log: its deletion is committed
    // anyway, and the compaction purges it.
    let old: Vec<_> = (0..6)
        .map(|k| {
            json!({"type": "like", "user_id": CAPPED, "item_id": format!("i{k}"),
                   "timestamp": T0 + 7_000 + k})
        })
        .collect();
    assert_eq!(s.post("/v1/events", json!({ "events": old })).await.0, 200);
    let (st, body) = s
        .raw(Method::DELETE, &format!("/v1/users/{CAPPED}/events/i0"), "")
        .await;
    assert_eq!(
        (st, body["status"].as_str()),
        (200, Some("not_held")),
        "{body}"
    );
    let (st, body) = s
        .raw(Method::DELETE, "/v1/users/nobody-3f/events/i0", "")
        .await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (404, Some("id")),
        "{body}"
    );
    let (_, after) = s.get("/v1/users/u1/events").await;
    let left: Vec<&str> = after["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["item_id"].as_str())
        .collect();
    assert!(
        !left.contains(&u1_items[0].as_str()) && !left.is_empty(),
        "{left:?}"
    );

    // The erasure: gone from every API at once.
    let (st, body) = s
        .raw(Method::DELETE, &format!("/v1/users/{GONE}"), "")
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["purged_within_s"].as_u64()),
        (Some("erased"), Some(1))
    );
    for p in [
        format!("/v1/users/{GONE}"),
        format!("/v1/users/{GONE}/events"),
    ] {
        let (st, body) = s.get(&p).await;
        assert_eq!(
            (st, body["error"]["field"].as_str()),
            (404, Some("id")),
            "{p}"
        );
    }
    let (_, users) = s.get("/v1/users?n=1000").await;
    assert!(!users.to_string().contains(GONE));
    assert_eq!(
        s.raw(Method::DELETE, &format!("/v1/users/{GONE}"), "")
            .await
            .0,
        404
    );
    // Everyone else is served as before.
    let (st, recs) = s.get("/v1/recommendations/home?user_id=u2&n=5").await;
    assert_eq!(st, 200);
    assert_eq!(recs["items"].as_array().map(Vec::len), Some(5));

    // By the next compaction, no file of the data dir holds the id or the attribute.
    wait_for("the compaction to purge the files", || {
        files_holding(tmp.path(), &[GONE, NICK]).is_empty()
    })
    .await;
    assert!(tmp.path().join("log").read_dir().expect("log").count() >= 1);
    s.stop().await;
    let pairs: Vec<(String, String)> = cascade_storage::EventLog::read_all(&tmp.path().join("log"))
        .expect("log")
        .into_iter()
        .flat_map(|m| match m {
            cascade_core::Mutation::Events(v) => v,
            _ => Vec::new(),
        })
        .filter(|e| e.user_id == CAPPED)
        .filter_map(|e| match e.target {
            cascade_core::Target::Item(i) => Some((e.user_id, i)),
            cascade_core::Target::Creator(_) => None,
        })
        .collect();
    assert_eq!(pairs.len(), 5, "{pairs:?}");
    assert!(!pairs.iter().any(|(_, i)| i == "i0"), "{pairs:?}");

    // A restart replays the compacted log: still gone, and u1 as they were left.
    let s = TestServer::start(tmp.path(), tweak).await;
    assert_eq!(s.get(&format!("/v1/users/{GONE}")).await.0, 404);
    let (_, again) = s.get("/v1/users/u1/events").await;
    assert_eq!(again["events"], after["events"]);
    let (st, recs) = s.get("/v1/recommendations/home?user_id=u2&n=5").await;
    assert_eq!((st, recs["items"].as_array().map(Vec::len)), (200, Some(5)));
    s.stop().await;
    assert!(files_holding(tmp.path(), &[GONE, NICK]).is_empty());
}
