//! Restart: the embedded state recovers from its newest snapshot plus the log's tail exactly
//! as it was before, and as a full replay would build it.

use cascade_core::{EditorialList, Event, EventKind, Item, Mutation, Target, TimeInput, User};
use cascade_features::Snapshot;
use cascade_runtime::{Engine, EngineConfig as Config};
use std::path::Path;

fn config(dir: &Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    c.storage.fsync = false;
    c.models.ranker.enabled = false;
    c.models.ann = false;
    // The periodic thread stays idle; the test snapshots when it wants.
    c.storage.snapshot_interval_s = 3600;
    c.features.segments = vec!["locale".into()];
    c
}

fn item(n: u32) -> Item {
    let mut attributes = serde_json::Map::new();
    attributes.insert("duration_s".into(), serde_json::json!(60 + n));
    Item {
        id: format!("i{n}"),
        title: format!("Item {n}"),
        categories: vec![format!("c{}", n % 5), "all".into()],
        tags: vec![format!("t{}", n % 3)],
        creator_id: Some(format!("cr{}", n % 9)),
        created_at: Some(TimeInput(1_700_000_000_000 + i64::from(n) * 1000)),
        attributes,
        hidden: n % 50 == 7,
        mature: false,
    }
}

fn events(from: u32, n: u32) -> Vec<Event> {
    (from..from + n)
        .map(|k| {
            let kind = EventKind::ALL[(k as usize * 7) % EventKind::ALL.len()];
            let target = if kind == EventKind::Follow {
                Target::Creator(format!("cr{}", k % 9))
            } else {
                Target::Item(format!("i{}", (k * 13) % 120))
            };
            Event {
                kind,
                user_id: format!("u{}", k % 17),
                target,
                value: 1.0 + (k % 4) as f32,
                fraction: (kind == EventKind::Watch).then_some(0.5),
                ts: 1_700_000_100_000 + i64::from(k) * 1500,
                request_id: Some(format!("r{}", k / 5)),
                surface: Some("home".into()),
                position: Some(k % 10),
                propensity: Some(1.0),
                experiment: (kind == EventKind::Impression).then(|| "x:a".to_string()),
            }
        })
        .collect()
}

/// Equal snapshots, or the first place they differ (they are large).
fn assert_same(a: &Snapshot, b: &Snapshot, what: &str) {
    if a == b {
        return;
    }
    let (x, y) = (format!("{a:?}"), format!("{b:?}"));
    let at = x
        .bytes()
        .zip(y.bytes())
        .position(|(p, q)| p != q)
        .unwrap_or(x.len().min(y.len()));
    let from = at.saturating_sub(150);
    panic!(
        "{what}: differ at byte {at}:\n  got  ...{}\n  want ...{}",
        &x[from..(at + 150).min(x.len())],
        &y[from..(at + 150).min(y.len())]
    );
}

async fn open(dir: &Path) -> std::sync::Arc<Engine> {
    Engine::open_async(config(dir)).await.expect("open")
}

async fn write(e: &Engine, m: Mutation) {
    e.commit(m).await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_log_tail_restores_the_same_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let e = open(tmp.path()).await;
    write(&e, Mutation::UpsertItems((0..120).map(item).collect())).await;
    let users: Vec<User> = (0..17)
        .map(|u| {
            serde_json::from_value(serde_json::json!({
                "id": format!("u{u}"),
                "attributes": {"locale": if u % 2 == 0 { "fr" } else { "de" }},
            }))
            .expect("user")
        })
        .collect();
    write(&e, Mutation::UpsertUsers(users)).await;
    for k in 0..20 {
        write(&e, Mutation::Events(events(k * 50, 50))).await;
    }
    let (path, bytes) = e.snapshot_now().expect("snapshot");
    assert!(bytes > 0 && path.exists());
    let at_snapshot = e.env.state.read().log_records;
    // The tail: more events, a patch, a delete, an editorial list.
    for k in 20..30 {
        write(&e, Mutation::Events(events(k * 50, 50))).await;
    }
    write(&e, Mutation::DeleteItem { id: "i3".into() }).await;
    let list: EditorialList = serde_json::from_value(serde_json::json!({
        "id": "picks", "title": "Picks", "items": ["i1", "i2"],
    }))
    .expect("list");
    write(&e, Mutation::UpsertEditorial(list)).await;
    let before = Snapshot::of(&e.env.state.read());
    let total = before.log_records;
    assert!(total > at_snapshot);
    e.close().await;
    drop(e);

    // Snapshot + tail.
    let e = open(tmp.path()).await;
    assert_eq!(
        e.replay.skipped, at_snapshot,
        "the snapshot's records were not replayed"
    );
    assert_eq!(e.replay.records, total - at_snapshot, "only the tail was");
    let restored = Snapshot::of(&e.env.state.read());
    assert_same(
        &restored,
        &before,
        "snapshot + tail = the state before the restart",
    );
    e.close().await;
    drop(e);

    // A full replay agrees (snapshots removed).
    std::fs::remove_dir_all(tmp.path().join("snapshots")).expect("rm");
    let e = open(tmp.path()).await;
    assert_eq!(e.replay.skipped, 0);
    assert_eq!(e.replay.records, total);
    assert_same(&Snapshot::of(&e.env.state.read()), &before, "full replay");
    let (newer, _) = e.snapshot_now().expect("snapshot");
    e.close().await;
    drop(e);

    // A damaged snapshot is skipped, never trusted: the state is still exact.
    let mut bytes = std::fs::read(&newer).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newer, bytes).expect("write");
    let e = open(tmp.path()).await;
    assert_eq!(e.replay.skipped, 0, "the damaged snapshot was not used");
    assert_same(
        &Snapshot::of(&e.env.state.read()),
        &before,
        "after a damaged snapshot",
    );
    e.close().await;
}
