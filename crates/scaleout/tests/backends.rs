//! The Redis feature store and the NATS JetStream bus against real servers
//! (`CASCADE_TEST_REDIS_URL`, `CASCADE_TEST_NATS_URL`; `.ci/run` sets both). Every test uses
//! its own key prefix and stream and removes them. One file: both backends share the world,
//! the helpers and the servers' set-up.

use cascade_core::{Event, EventKind, Item, Mutation, Target, TimeInput};
use cascade_features::state::StateConfig;
use cascade_features::{EmbeddedStore, FeatureStore, State, StoreError, UserState};
use cascade_scaleout::{NatsBus, NatsConfig, RedisConfig, RedisStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

fn redis_url() -> Option<String> {
    let url = std::env::var("CASCADE_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("CASCADE_TEST_REDIS_URL unset: skipping (CI sets it)");
    }
    url
}

fn nats_url() -> Option<String> {
    let url = std::env::var("CASCADE_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("CASCADE_TEST_NATS_URL unset: skipping (CI sets it)");
    }
    url
}

fn item(n: u32) -> Item {
    Item {
        id: format!("i{n}"),
        title: format!("Title {n}"),
        categories: vec![format!("c{}", n % 4)],
        tags: vec![],
        creator_id: Some(format!("cr{}", n % 7)),
        created_at: Some(TimeInput(0)),
        attributes: Default::default(),
        hidden: false,
        mature: false,
    }
}

fn catalog(n: u32) -> Arc<State> {
    let st = Arc::new(State::new(StateConfig::default()));
    st.apply(&Mutation::UpsertItems((0..n).map(item).collect()));
    st
}

fn ev(kind: EventKind, user: &str, target: Target, ts_ms: i64) -> Event {
    Event {
        kind,
        user_id: user.to_string(),
        target,
        value: 1.0,
        fraction: (kind == EventKind::Watch).then_some(0.6),
        ts: ts_ms,
        request_id: None,
        surface: None,
        position: None,
        propensity: None,
        experiment: None,
    }
}

/// A deterministic mix of every event kind over 5 users and 40 items, distinct times.
fn events(n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for k in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let kind = EventKind::ALL[(x % EventKind::ALL.len() as u64) as usize];
        let user = format!("u{}", (x >> 8) % 5);
        let target = match kind {
            EventKind::Follow => Target::Creator(format!("cr{}", (x >> 16) % 7)),
            EventKind::Hide if (x >> 20).is_multiple_of(3) => {
                Target::Creator(format!("cr{}", (x >> 16) % 7))
            }
            _ => Target::Item(format!("i{}", (x >> 24) % 40)),
        };
        out.push(ev(kind, &user, target, 1_700_000_000_000 + k as i64 * 1500));
    }
    out
}

/// The fields both backends keep (`engaged`, profile attributes and segments are the
/// replica's, not the store's).
fn store_fields(u: &UserState) -> impl PartialEq + std::fmt::Debug {
    (
        u.history.clone(),
        u.seen.clone(),
        u.first_s,
        u.hidden_items.clone(),
        u.hidden_creators.clone(),
        u.follows.clone(),
        u.shown.clone(),
    )
}

async fn redis(tag: &str, state: Arc<State>) -> Option<RedisStore> {
    let url = redis_url()?;
    let cfg = RedisConfig {
        url,
        prefix: unique(tag),
        ..Default::default()
    };
    Some(
        RedisStore::connect(cfg, state)
            .await
            .expect("connect redis"),
    )
}

#[tokio::test]
async fn redis_answers_what_the_embedded_store_answers() {
    let state = catalog(40);
    let Some(store) = redis("eq", state.clone()).await else {
        return;
    };
    let embedded = EmbeddedStore(catalog(40));
    let evs = events(400);
    for (seq, batch) in evs.chunks(25).enumerate() {
        store
            .apply(seq as u64 + 1, batch)
            .await
            .expect("redis apply");
        embedded.apply(seq as u64 + 1, batch).await.expect("apply");
    }
    let mut compared = 0;
    for u in 0..5 {
        let id = format!("u{u}");
        let want = embedded.user(&id).await.expect("embedded").expect("user");
        let got = store
            .user(&id)
            .await
            .expect("redis")
            .expect("user in redis");
        assert_eq!(store_fields(&got), store_fields(&want), "user {id}");
        assert!(!want.history.is_empty() && !want.shown.is_empty());
        compared += 1;
    }
    assert_eq!(compared, 5);
    assert!(store.user("nobody").await.expect("read").is_none());
    assert!(store.clear().await.expect("clear") > 0);
    assert!(store.user("u0").await.expect("read").is_none());
}

#[tokio::test]
async fn erasure_and_feedback_deletion_in_redis_answer_what_the_embedded_store_answers() {
    let state = catalog(40);
    let Some(store) = redis("forget", state.clone()).await else {
        return;
    };
    let embedded = EmbeddedStore(catalog(40));
    for (seq, batch) in events(400).chunks(25).enumerate() {
        store
            .apply(seq as u64 + 1, batch)
            .await
            .expect("redis apply");
        embedded.apply(seq as u64 + 1, batch).await.expect("apply");
    }
    let before = embedded.user("u1").await.expect("embedded").expect("u1");
    // An item u1 interacted with: in history and seen alike.
    let (item, _) = before.seen[0];
    // And another item in u1's history with the kind of that entry.
    let other = before
        .history
        .iter()
        .find(|x| x.item != item)
        .expect("another item");
    let other_kind = other.kind;
    let (item_id, other_id) = {
        let g = state.read();
        (
            g.items.name(item).expect("item").to_string(),
            g.items.name(other.item).expect("item").to_string(),
        )
    };
    for s in [&store as &dyn FeatureStore, &embedded] {
        for (seq, m) in [
            // One kind of one item, then every kind of another, then a whole user.
            Mutation::DeleteFeedback {
                user_id: "u1".into(),
                item_id: other_id.clone(),
                kind: Some(other_kind),
            },
            Mutation::DeleteFeedback {
                user_id: "u1".into(),
                item_id: item_id.clone(),
                kind: None,
            },
            Mutation::EraseUser { id: "u2".into() },
        ]
        .into_iter()
        .enumerate()
        {
            s.forget(1000 + seq as u64, &m).await.expect("forget");
        }
    }
    let want = embedded.user("u1").await.expect("embedded").expect("u1");
    assert!(want.seen.len() < before.seen.len());
    assert!(!want.history.iter().any(|x| x.item == item));
    let got = store.user("u1").await.expect("redis").expect("u1");
    assert_eq!(store_fields(&got), store_fields(&want));
    assert!(embedded.user("u2").await.expect("embedded").is_none());
    assert!(store.user("u2").await.expect("redis").is_none());
    // Every batch from before the erasure and the deletions delivered again (an updater that
    // failed and was redelivered after another applied them): none of it comes back.
    for (seq, batch) in events(400).chunks(25).enumerate() {
        store.apply(seq as u64 + 1, batch).await.expect("redeliver");
    }
    assert!(store.user("u2").await.expect("redis").is_none());
    let again = store.user("u1").await.expect("redis").expect("u1");
    assert_eq!(store_fields(&again), store_fields(&want));
    // No data key of the erased user is left; the tombstone expires within the guard.
    let client = redis::Client::open(redis_url().expect("url")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{u:u2}}:*", store.prefix()))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let tomb = format!("{}:{{u:u2}}:e", store.prefix());
    assert_eq!(left, vec![tomb.clone()]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&tomb)
        .query_async(&mut conn)
        .await
        .expect("ttl");
    let guard = cascade_scaleout::RedisConfig::default().erasure_guard_s as i64;
    assert!(ttl > 0 && ttl <= guard, "{ttl}");
    // Events after the erasure are a new user's, and are kept.
    let after: Vec<_> = events(400)
        .into_iter()
        .filter(|e| e.user_id == "u2")
        .take(3)
        .collect();
    store.apply(5000, &after).await.expect("after");
    assert!(store.user("u2").await.expect("redis").is_some());
    FeatureStore::forget(&store, 5001, &Mutation::EraseUser { id: "u2".into() })
        .await
        .expect("erase again");
    assert!(store.user("u2").await.expect("redis").is_none());
    let others: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{u:u0}}:*", store.prefix()))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!others.is_empty(), "the other users keep their keys");
    store.clear().await.expect("clear");
}

#[tokio::test]
async fn redelivered_and_reordered_batches_leave_the_same_features() {
    let state = catalog(40);
    let Some(once) = redis("once", state.clone()).await else {
        return;
    };
    let Some(twice) = redis("twice", state.clone()).await else {
        return;
    };
    let evs = events(300);
    let batches: Vec<(u64, &[Event])> = evs
        .chunks(20)
        .enumerate()
        .map(|(i, b)| (i as u64 + 1, b))
        .collect();
    for &(seq, b) in &batches {
        once.apply(seq, b).await.expect("apply");
    }
    // At-least-once delivery to concurrent updaters: every batch twice, in reverse order.
    for &(seq, b) in batches.iter().rev().chain(batches.iter()) {
        twice.apply(seq, b).await.expect("apply");
    }
    for u in 0..5 {
        let id = format!("u{u}");
        let a = once.user(&id).await.expect("read").expect("user");
        let b = twice.user(&id).await.expect("read").expect("user");
        assert_eq!(store_fields(&a), store_fields(&b), "user {id}");
    }
    once.clear().await.expect("clear");
    twice.clear().await.expect("clear");
}

#[tokio::test]
async fn session_data_expires_sooner_than_the_profile_and_history_is_capped() {
    let state = Arc::new(State::new(StateConfig {
        history_cap: 10,
        ..Default::default()
    }));
    state.apply(&Mutation::UpsertItems((0..40).map(item).collect()));
    let Some(url) = redis_url() else {
        return;
    };
    let cfg = RedisConfig {
        url,
        prefix: unique("ttl"),
        session_ttl_s: 600,
        ttl_s: 86_400,
        ..Default::default()
    };
    let store = RedisStore::connect(cfg, state).await.expect("connect");
    let evs: Vec<Event> = (0..30)
        .map(|k| {
            ev(
                EventKind::Hide,
                "u1",
                Target::Item(format!("i{k}")),
                1_700_000_000_000 + k * 1000,
            )
        })
        .collect();
    store.apply(1, &evs).await.expect("apply");
    let h = store.ttl("u1", "h").await.expect("ttl");
    let x = store.ttl("u1", "x").await.expect("ttl");
    assert!((1..=600).contains(&h), "session ttl {h}");
    assert!((600..=86_400).contains(&x), "profile ttl {x}");
    let u = store.user("u1").await.expect("read").expect("user");
    assert_eq!(u.history.len(), 10, "history capped at history_cap");
    assert_eq!(u.history[0].ts_s, 1_700_000_020, "the newest kept");
    assert_eq!(u.hidden_items.len(), 30);
    // Hiding an item hides its creator too (7 creators among 30 items).
    assert_eq!(u.hidden_creators.len(), 7);
    store.clear().await.expect("clear");
}

#[tokio::test]
async fn a_bad_prefix_is_refused_naming_the_key() {
    let cfg = RedisConfig {
        prefix: "a{b}".into(),
        ..Default::default()
    };
    let err = cfg.validate().expect_err("refused");
    assert!(err.to_string().contains("storage.redis.prefix"), "{err}");
}

fn nats_cfg(url: String, tag: &str) -> NatsConfig {
    let name = unique(tag).replace('-', "_");
    NatsConfig {
        url,
        stream: format!("T_{name}"),
        subject: format!("cascade.test.{name}"),
        durable: format!("d_{name}"),
        ack_wait_ms: 1000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_mutations_replicate_in_order() {
    let Some(url) = nats_url() else {
        return;
    };
    let bus = NatsBus::connect(nats_cfg(url, "rep"))
        .await
        .expect("connect");
    let evs = events(200);
    let mut seqs = Vec::new();
    for b in evs.chunks(10) {
        seqs.push(
            bus.publish(&Mutation::Events(b.to_vec()))
                .await
                .expect("ack"),
        );
    }
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert_eq!(
        bus.last_seq().await.expect("info"),
        *seqs.last().expect("seq")
    );
    let got = Arc::new(parking_lot_free::Log::default());
    let sink = got.clone();
    let rep = bus
        .replicate(1, move |seq, m| sink.push(seq, m))
        .await
        .expect("replicate");
    assert!(rep.wait_for(seqs[19], Duration::from_secs(10)).await);
    let got = got.take();
    assert_eq!(got.len(), 20);
    let replayed: Vec<Event> = got
        .into_iter()
        .flat_map(|(_, m)| match m {
            Mutation::Events(e) => e,
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(replayed, evs, "every event, in publish order");
    rep.stop();
    bus.delete_stream().await.expect("cleanup");
}

/// Counts what reaches the real store.
#[derive(Debug)]
struct Counting(EmbeddedStore, AtomicUsize);

#[async_trait::async_trait]
impl FeatureStore for Counting {
    fn backend(&self) -> &'static str {
        "counting"
    }
    async fn user(&self, id: &str) -> Result<Option<UserState>, StoreError> {
        self.0.user(id).await
    }
    async fn apply(&self, seq: u64, e: &[Event]) -> Result<(), StoreError> {
        self.1.fetch_add(e.len(), Ordering::SeqCst);
        self.0.apply(seq, e).await
    }
    async fn forget(&self, seq: u64, m: &Mutation) -> Result<(), StoreError> {
        self.0.forget(seq, m).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_dead_updater_held_are_applied_by_the_other() {
    let Some(url) = nats_url() else {
        return;
    };
    let cfg = nats_cfg(url.clone(), "upd");
    let bus = NatsBus::connect(cfg.clone()).await.expect("connect");
    let evs = events(300);
    for b in evs.chunks(10) {
        bus.publish(&Mutation::Events(b.to_vec()))
            .await
            .expect("ack");
    }
    // A replica's updater takes 20 of the 30 messages, then dies (its connection closes)
    // without acknowledging any.
    {
        use async_nats::jetstream::{self, consumer};
        use futures::StreamExt;
        let client = async_nats::connect(url.as_str()).await.expect("connect");
        let js = jetstream::new(client.clone());
        let stream = js.get_stream(&cfg.stream).await.expect("stream");
        let c: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &cfg.durable,
                consumer::pull::Config {
                    durable_name: Some(cfg.durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(cfg.ack_wait_ms),
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        let mut taken = c.fetch().max_messages(20).messages().await.expect("fetch");
        let mut held = 0;
        while let Some(m) = taken.next().await {
            m.expect("message");
            held += 1;
        }
        assert_eq!(held, 20);
        drop(taken);
        client.drain().await.expect("close");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let live = NatsBus::connect(cfg).await.expect("connect");
    let store = Arc::new(Counting(EmbeddedStore(catalog(40)), AtomicUsize::new(0)));
    live.run_updater(store.clone(), stop.clone())
        .await
        .expect("updater");
    let took = Instant::now();
    let t = Instant::now();
    while store.1.load(Ordering::SeqCst) < evs.len() && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.1.load(Ordering::SeqCst),
        evs.len(),
        "every event applied once"
    );
    // The held messages come back once their ack wait (1 s) has passed.
    assert!(
        took.elapsed() >= Duration::from_millis(500),
        "{:?}",
        took.elapsed()
    );
    // Same features as applying the events directly.
    let direct = EmbeddedStore(catalog(40));
    direct.apply(1, &evs).await.expect("apply");
    for u in 0..5 {
        let id = format!("u{u}");
        let a = store.user(&id).await.expect("read").expect("user");
        let b = direct.user(&id).await.expect("read").expect("user");
        assert_eq!(store_fields(&a), store_fields(&b));
    }
    stop.store(true, Ordering::SeqCst);
    live.delete_stream().await.expect("cleanup");
}

/// A tiny thread-safe log of what replication applied (std only).
mod parking_lot_free {
    use cascade_core::Mutation;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Log(Mutex<Vec<(u64, Mutation)>>);

    impl Log {
        pub fn push(&self, seq: u64, m: Mutation) {
            self.0.lock().expect("lock").push((seq, m));
        }
        pub fn take(&self) -> Vec<(u64, Mutation)> {
            std::mem::take(&mut *self.0.lock().expect("lock"))
        }
    }
}

/// A three-master Redis Cluster of this test's own (`redis-server` processes on free ports),
/// shut down on drop.
struct LocalCluster {
    nodes: Vec<std::process::Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    fn start() -> Option<Self> {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().ok()?;
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
                l.local_addr().expect("addr").port()
            })
            .collect();
        let mut nodes = Vec::new();
        for p in &ports {
            let d = dir.path().join(p.to_string());
            std::fs::create_dir_all(&d).ok()?;
            let child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--cluster-enabled", "yes"])
                .args([
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .current_dir(&d)
                .stdout(Stdio::null())
                .spawn()
                .ok()?;
            nodes.push(child);
        }
        let cluster = LocalCluster {
            nodes,
            ports,
            _dir: dir,
        };
        let up = |p: u16| {
            Command::new("redis-cli")
                .args(["-p", &p.to_string(), "ping"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        };
        let t = Instant::now();
        while !cluster.ports.iter().all(|&p| up(p)) {
            if t.elapsed() > Duration::from_secs(10) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !created {
            return None;
        }
        let ok = |p: u16| {
            Command::new("redis-cli")
                .args(["-p", &p.to_string(), "cluster", "info"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        };
        let t = Instant::now();
        while !cluster.ports.iter().all(|&p| ok(p)) {
            if t.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_addressed_by_slot_with_one_users_keys_on_one_node() {
    // Backend tests on (CI), and a `redis-server` to make a cluster of.
    if redis_url().is_none() {
        return;
    }
    let Some(cluster) = LocalCluster::start() else {
        panic!("could not start a local Redis Cluster (redis-server and redis-cli on PATH?)");
    };
    let cfg = RedisConfig {
        cluster_nodes: vec![format!("redis://127.0.0.1:{}", cluster.ports[0])],
        prefix: unique("cluster"),
        ..Default::default()
    };
    let store = RedisStore::connect(cfg, catalog(40))
        .await
        .expect("connect cluster");
    let embedded = EmbeddedStore(catalog(40));
    let evs = events(300);
    for (seq, batch) in evs.chunks(30).enumerate() {
        store.apply(seq as u64 + 1, batch).await.expect("apply");
        embedded.apply(seq as u64 + 1, batch).await.expect("apply");
    }
    for u in 0..5 {
        let id = format!("u{u}");
        let want = embedded.user(&id).await.expect("read").expect("user");
        let got = store.user(&id).await.expect("read").expect("user");
        assert_eq!(store_fields(&got), store_fields(&want), "user {id}");
    }
    // The five users' keys spread over the masters; clearing finds them on every one.
    let per_node: Vec<usize> = cluster
        .ports
        .iter()
        .map(|p| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "dbsize"])
                .output()
                .expect("dbsize");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_node:?}"
    );
    let total: usize = per_node.iter().sum();
    assert_eq!(store.clear().await.expect("clear"), total);
    assert!(store.user("u0").await.expect("read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_stops_visibly_at_a_message_it_cannot_read() {
    let Some(url) = nats_url() else {
        return;
    };
    let cfg = nats_cfg(url.clone(), "bad");
    let bus = NatsBus::connect(cfg.clone()).await.expect("connect");
    let good = bus
        .publish(&Mutation::Events(events(5)))
        .await
        .expect("ack");
    // Something else on the subject: never skipped silently.
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(
        cfg.subject.clone(),
        bytes::Bytes::from_static(b"\xffnot a mutation"),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let rep = bus.replicate(1, |_, _| {}).await.expect("replicate");
    assert!(rep.wait_for(good, Duration::from_secs(10)).await);
    let t = Instant::now();
    while rep.is_alive() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!rep.is_alive(), "replication stopped at the bad message");
    assert_eq!(rep.applied(), good, "and applied nothing past it");
    bus.delete_stream().await.expect("cleanup");
}
