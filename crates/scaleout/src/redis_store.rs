//! The Redis online feature store: per-user features in hash-tagged keys, written with
//! idempotent commands by the feature updaters, read by a request in one pipelined round trip.
//! One file: the key layout below is its contract, and every write, read, deletion and
//! tombstone check here must agree on it.
//!
//! Keys of one user share the hash tag `{u:<user_id>}` so that they live in one Redis Cluster
//! slot (one node, one round trip):
//!
//! | key | type | holds | bound |
//! |---|---|---|---|
//! | `P:{u:ID}:h` | zset, score = event ms | history: `seq.k\|kind\|weight\|item` | `history_cap`, `session_ttl_s` |
//! | `P:{u:ID}:s` | zset, score = first second | seen items (`ZADD LT` keeps the first time) | `seen_cap`, `ttl_s` |
//! | `P:{u:ID}:x` / `:xc` | set | hidden items / hidden creators | `ttl_s` |
//! | `P:{u:ID}:f` | set | followed creators | `ttl_s` |
//! | `P:{u:ID}:i` | zset, score = second | impressions: `seq.k\|item` | `MAX_SHOWN`, `session_ttl_s` |
//! | `P:{u:ID}:e` | zset, score = bus seq | tombstones: `*` (erased), `d<kind>\|item` (deleted) | `erasure_guard_s` |
//!
//! Every write is idempotent (members carry the bus sequence and the event's position in its
//! batch; first-seen is a minimum; sets are sets), so a redelivered batch or two updaters
//! applying batches out of order leave the same state: no read-modify-write, no Lua, and it
//! works unchanged on Redis Cluster.

use crate::{Result, ScaleoutError};
use cascade_core::{Event, EventKind, Idx, Mutation, NONE_IDX, Target};
use cascade_features::state::{Interaction, MAX_SHOWN};
use cascade_features::{EventWeights, FeatureStore, State, StoreError, UserState};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// `[storage.redis]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`; for a cluster, the seed nodes in `cluster_nodes` instead.
    pub url: String,
    /// Redis Cluster seed nodes; when set, `url` is ignored and keys are routed by slot.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key (one per deployment; tests use a unique one per run).
    pub prefix: String,
    /// Idle time after which a user's session data (history, impressions) expires.
    pub session_ttl_s: u64,
    /// Idle time after which the rest of a user's features (seen, hidden, follows) expire.
    pub ttl_s: u64,
    /// Most items kept in a user's seen set (the oldest first-seen drop out).
    pub seen_cap: usize,
    /// Connection and response timeout of each command (requests have their own budget).
    pub timeout_ms: u64,
    /// How long an erasure's or a feedback deletion's tombstone (`:e`) is kept: the longest
    /// a batch from before it may still be redelivered to an updater. It holds the user's id
    /// in its name and a sequence number, nothing else.
    pub erasure_guard_s: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            prefix: "cascade".into(),
            session_ttl_s: 7 * 86_400,
            ttl_s: 180 * 86_400,
            seen_cap: 10_000,
            timeout_ms: 1000,
            erasure_guard_s: 3600,
        }
    }
}

impl RedisConfig {
    /// Checks what `connect` cannot (a prefix that would break hash tags or key scans).
    pub fn validate(&self) -> Result<()> {
        let ok = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !ok {
            return Err(ScaleoutError::Config(format!(
                "storage.redis.prefix `{}` must be non-empty ASCII letters, digits, `_-.:`",
                self.prefix
            )));
        }
        if !(1..=86_400).contains(&self.erasure_guard_s) {
            return Err(ScaleoutError::Config(format!(
                "storage.redis.erasure_guard_s = {} must be within 1..=86400",
                self.erasure_guard_s
            )));
        }
        if self.session_ttl_s == 0 || self.ttl_s == 0 || self.seen_cap == 0 {
            return Err(ScaleoutError::Config(
                "storage.redis: session_ttl_s, ttl_s and seen_cap must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// A standalone connection (auto-reconnecting) or a cluster connection (routes by slot).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        Ok(match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await?,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await?,
        })
    }
}

/// The Redis online feature store of one replica.
pub struct RedisStore {
    conn: Conn,
    config: RedisConfig,
    /// This replica's catalog: maps ids to dense indexes on read, items to creators on write.
    state: Arc<State>,
    weights: EventWeights,
    history_cap: usize,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

/// What one pipelined read returns: history, seen, hidden items, hidden creators, follows,
/// impressions.
type UserRows = (
    Vec<(String, f64)>,
    Vec<(String, f64)>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<(String, f64)>,
);

fn kind_code(k: EventKind) -> u8 {
    EventKind::ALL.iter().position(|&x| x == k).unwrap_or(0) as u8
}

fn secs(ms: i64) -> u32 {
    (ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
}

/// One write of an event: a member added to a capped, expiring zset or to an expiring set.
enum Op {
    Zset {
        key: String,
        member: String,
        score: f64,
        /// `ZADD LT`: keeps the smallest score (first-seen times).
        lt: bool,
        cap: isize,
        ttl: u64,
    },
    Set {
        key: String,
        member: String,
        ttl: u64,
    },
}

impl Op {
    fn set(key: String, member: String, ttl: u64) -> Self {
        Op::Set { key, member, ttl }
    }

    fn write(&self, pipe: &mut redis::Pipeline) {
        match self {
            Op::Zset {
                key,
                member,
                score,
                lt,
                cap,
                ttl,
            } => {
                let add = pipe.cmd("ZADD").arg(key);
                if *lt {
                    add.arg("LT");
                }
                add.arg(*score).arg(member).ignore();
                pipe.cmd("ZREMRANGEBYRANK")
                    .arg(key)
                    .arg(0)
                    .arg(-cap - 1)
                    .ignore();
                pipe.cmd("EXPIRE").arg(key).arg(*ttl).ignore();
            }
            Op::Set { key, member, ttl } => {
                pipe.cmd("SADD").arg(key).arg(member).ignore();
                pipe.cmd("EXPIRE").arg(key).arg(*ttl).ignore();
            }
        }
    }

    /// The seen set's entry (the only zset kept at its smallest score).
    fn is_seen(&self) -> bool {
        matches!(self, Op::Zset { lt: true, .. })
    }

    fn undo(&self, pipe: &mut redis::Pipeline) {
        match self {
            Op::Zset { key, member, .. } => pipe.cmd("ZREM").arg(key).arg(member).ignore(),
            Op::Set { key, member, .. } => pipe.cmd("SREM").arg(key).arg(member).ignore(),
        };
    }
}

/// A user's tombstones newer than one batch: an erasure (`*`) and deleted feedback
/// (`d<kind code or *>|<item>`), each scored by the bus sequence that made it.
#[derive(Default)]
struct Tombstones {
    erased: bool,
    /// (item, kind code or `None` for every kind).
    deleted: Vec<(String, Option<u8>)>,
}

impl Tombstones {
    fn parse(rows: &[(String, f64)], seq: u64) -> Self {
        let mut t = Self::default();
        for (member, at) in rows {
            if *at <= seq as f64 {
                continue;
            }
            if member == "*" {
                t.erased = true;
            } else if let Some((code, item)) =
                member.strip_prefix('d').and_then(|r| r.split_once('|'))
            {
                t.deleted.push((item.to_string(), code.parse().ok()));
            }
        }
        t
    }

    fn is_empty(&self) -> bool {
        !self.erased && self.deleted.is_empty()
    }

    /// Whether event `e` (of this user, from before the tombstones) must not stay written:
    /// `Some(all)`, where `all` is false when only a deletion of its kind covers it (which,
    /// as in the embedded state, leaves the item's seen time).
    fn covers(&self, e: &Event) -> Option<bool> {
        if self.erased {
            return Some(true);
        }
        let Target::Item(item) = &e.target else {
            return None;
        };
        let mut found = None;
        for (i, k) in &self.deleted {
            if i == item {
                match k {
                    None => return Some(true),
                    Some(k) if *k == kind_code(e.kind) => found = Some(false),
                    Some(_) => {}
                }
            }
        }
        found
    }
}

impl RedisStore {
    /// Connects (standalone or cluster) and checks the server answers.
    pub async fn connect(config: RedisConfig, state: Arc<State>) -> Result<Self> {
        config.validate()?;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let conn = if config.cluster_nodes.is_empty() {
            let client = redis::Client::open(config.url.as_str())?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2);
            Conn::Single(ConnectionManager::new_with_config(client, cfg).await?)
        } else {
            let client = redis::cluster::ClusterClient::builder(config.cluster_nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        };
        let mut ping = redis::pipe();
        ping.cmd("PING");
        let _: (String,) = conn.run(&ping).await?;
        let (weights, history_cap) = {
            let g = state.read();
            (g.config.weights, g.config.history_cap)
        };
        Ok(Self {
            conn,
            config,
            state,
            weights,
            history_cap,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    fn key(&self, user: &str, part: &str) -> String {
        format!("{}:{{u:{user}}}:{part}", self.config.prefix)
    }

    /// What event `k` of batch `seq` writes (history, seen, impressions, hides, follows), as
    /// operations that can be rendered as writes or, for a batch an erasure overtook, as
    /// removals of exactly what it wrote.
    fn ops(&self, seq: u64, k: usize, e: &Event, creator: Option<&str>, out: &mut Vec<Op>) {
        let u = &e.user_id;
        match &e.target {
            Target::Creator(c) => {
                let part = match e.kind {
                    EventKind::Follow => "f",
                    EventKind::Hide => "xc",
                    _ => return,
                };
                out.push(Op::set(self.key(u, part), c.clone(), self.config.ttl_s));
            }
            Target::Item(item) => {
                let ts_s = f64::from(secs(e.ts));
                if e.kind == EventKind::Impression {
                    out.push(Op::Zset {
                        key: self.key(u, "i"),
                        member: format!("{seq}.{k}|{item}"),
                        score: ts_s,
                        lt: false,
                        cap: MAX_SHOWN as isize,
                        ttl: self.config.session_ttl_s,
                    });
                    return;
                }
                if e.kind == EventKind::Hide {
                    out.push(Op::set(self.key(u, "x"), item.clone(), self.config.ttl_s));
                    if let Some(c) = creator {
                        out.push(Op::set(self.key(u, "xc"), c.into(), self.config.ttl_s));
                    }
                }
                if !e.kind.is_interaction() {
                    return;
                }
                let w = self.weights.weight(e.kind, e.value, e.fraction);
                out.push(Op::Zset {
                    key: self.key(u, "h"),
                    member: format!("{seq}.{k}|{}|{w}|{item}", kind_code(e.kind)),
                    score: e.ts as f64,
                    lt: false,
                    cap: self.history_cap.max(1) as isize,
                    ttl: self.config.session_ttl_s,
                });
                out.push(Op::Zset {
                    key: self.key(u, "s"),
                    member: item.clone(),
                    score: ts_s,
                    lt: true,
                    cap: self.config.seen_cap as isize,
                    ttl: self.config.ttl_s,
                });
            }
        }
    }

    /// Writes one batch: one pipeline, one round trip, whatever the number of users.
    ///
    /// An erasure or a feedback deletion applied by another updater must not be undone by a
    /// batch from before it that arrives later (a redelivery): each one leaves a tombstone
    /// (`:e`, its bus sequence per erased user or deleted item), read at the end of the same
    /// pipeline. A batch older than a tombstone it finds removes what it just wrote, in a
    /// second round trip. That closes the race without Lua or WATCH: the tombstone is set
    /// before the erasure's deletes, so either those deletes run after this batch's writes,
    /// or this batch's read sees the tombstone.
    pub async fn write(&self, seq: u64, events: &[Event]) -> Result<()> {
        // Creators of hidden items, from this replica's catalog (copied: no lock across await).
        let creators: Vec<Option<String>> = {
            let g = self.state.read();
            events
                .iter()
                .map(|e| match (&e.target, e.kind) {
                    (Target::Item(id), EventKind::Hide) => g
                        .items
                        .get(id)
                        .map(|i| g.hot(i).creator)
                        .filter(|&c| c != NONE_IDX)
                        .and_then(|c| g.creators.name(c).map(str::to_string)),
                    _ => None,
                })
                .collect()
        };
        // One pipeline, one round trip; on a cluster one per user (each user's keys share a
        // slot, and a cluster pipeline may not cross slots), sent concurrently.
        let cluster = matches!(self.conn, Conn::Cluster(_));
        let mut pipes: std::collections::HashMap<&str, (redis::Pipeline, Vec<&str>)> =
            Default::default();
        let mut ops = Vec::new();
        for (k, (e, creator)) in events.iter().zip(&creators).enumerate() {
            let u = e.user_id.as_str();
            let (pipe, users) = pipes
                .entry(if cluster { u } else { "" })
                .or_insert_with(|| (redis::pipe(), Vec::new()));
            ops.clear();
            self.ops(seq, k, e, creator.as_deref(), &mut ops);
            for op in &ops {
                op.write(pipe);
            }
            if !users.contains(&u) {
                users.push(u);
            }
        }
        for (pipe, users) in pipes.values_mut() {
            for u in users.iter() {
                pipe.cmd("ZRANGE")
                    .arg(self.key(u, "e"))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES");
            }
        }
        let tombs = futures::future::try_join_all(
            pipes
                .values()
                .map(|(p, _)| self.conn.run::<Vec<Vec<(String, f64)>>>(p)),
        )
        .await?;
        // Users with a tombstone newer than this batch, and what it covers.
        let mut undo = redis::pipe();
        let mut any = false;
        for ((_, users), tombs) in pipes.values().zip(&tombs) {
            for (u, tomb) in users.iter().zip(tombs) {
                let tomb = Tombstones::parse(tomb, seq);
                if tomb.is_empty() {
                    continue;
                }
                for (k, (e, creator)) in events.iter().zip(&creators).enumerate() {
                    if e.user_id != *u {
                        continue;
                    }
                    let Some(all) = tomb.covers(e) else {
                        continue;
                    };
                    ops.clear();
                    self.ops(seq, k, e, creator.as_deref(), &mut ops);
                    for op in ops.iter().filter(|op| all || !op.is_seen()) {
                        op.undo(&mut undo);
                        any = true;
                    }
                }
                if cluster && any {
                    self.conn.run::<()>(&undo).await?;
                    undo = redis::pipe();
                    any = false;
                }
            }
        }
        if any {
            self.conn.run::<()>(&undo).await?;
        }
        Ok(())
    }

    /// Deletes every key of a user (an erasure at bus sequence `seq`), or their feedback on
    /// one item: its history and impression entries, its seen time and its hide; with a
    /// `kind`, only that kind's history entries (and impressions or the hide, for those
    /// kinds), as the embedded state. Either leaves a tombstone first (see [`Self::write`]),
    /// which expires after `erasure_guard_s` and holds nothing but the sequence.
    pub async fn forget(
        &self,
        seq: u64,
        user_id: &str,
        item_id: Option<(&str, Option<EventKind>)>,
    ) -> Result<()> {
        let tomb = self.key(user_id, "e");
        let member = match item_id {
            None => "*".to_string(),
            Some((item, kind)) => format!(
                "d{}|{item}",
                kind.map_or("*".to_string(), |k| kind_code(k).to_string())
            ),
        };
        let mut mark = redis::pipe();
        mark.cmd("ZADD")
            .arg(&tomb)
            .arg("GT")
            .arg(seq)
            .arg(member)
            .ignore();
        mark.cmd("EXPIRE")
            .arg(&tomb)
            .arg(self.config.erasure_guard_s)
            .ignore();
        let Some((item, kind)) = item_id else {
            for part in ["h", "s", "x", "xc", "f", "i"] {
                mark.cmd("DEL").arg(self.key(user_id, part)).ignore();
            }
            return self.conn.run::<()>(&mark).await;
        };
        self.conn.run::<()>(&mark).await?;
        let (h, i) = (self.key(user_id, "h"), self.key(user_id, "i"));
        let mut read = redis::pipe();
        read.cmd("ZRANGE").arg(&h).arg(0).arg(-1);
        read.cmd("ZRANGE").arg(&i).arg(0).arg(-1);
        let (hist, shown): (Vec<String>, Vec<String>) = self.conn.run(&read).await?;
        // History members are `seq.k|kind|weight|item`, impressions `seq.k|item`: the item is
        // what follows the fixed number of separators (ids may hold `|` themselves).
        let of = |m: &String, fields: usize| m.splitn(fields, '|').nth(fields - 1) == Some(item);
        let code = kind.map(|k| kind_code(k).to_string());
        let of_kind = |m: &String| {
            code.as_deref()
                .is_none_or(|c| m.split('|').nth(1) == Some(c))
        };
        let shown_too = kind.is_none_or(|k| k == EventKind::Impression);
        let mut pipe = redis::pipe();
        for (key, members, fields, on) in [(&h, &hist, 4, true), (&i, &shown, 2, shown_too)] {
            let gone: Vec<&String> = members
                .iter()
                .filter(|m| on && of(m, fields) && (fields == 2 || of_kind(m)))
                .collect();
            if !gone.is_empty() {
                pipe.cmd("ZREM").arg(key).arg(gone).ignore();
            }
        }
        if kind.is_none() {
            pipe.cmd("ZREM")
                .arg(self.key(user_id, "s"))
                .arg(item)
                .ignore();
        }
        if kind.is_none_or(|k| k == EventKind::Hide) {
            pipe.cmd("SREM")
                .arg(self.key(user_id, "x"))
                .arg(item)
                .ignore();
        }
        self.conn.run::<()>(&pipe).await
    }

    /// Reads one user's features in one round trip, resolved to this replica's dense ids.
    pub async fn read(&self, user_id: &str) -> Result<Option<UserState>> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.key(user_id, "h"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("ZRANGE")
            .arg(self.key(user_id, "s"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("SMEMBERS").arg(self.key(user_id, "x"));
        pipe.cmd("SMEMBERS").arg(self.key(user_id, "xc"));
        pipe.cmd("SMEMBERS").arg(self.key(user_id, "f"));
        pipe.cmd("ZRANGE")
            .arg(self.key(user_id, "i"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        let (hist, seen, hidden, hidden_c, follows, shown): UserRows = self.conn.run(&pipe).await?;
        if hist.is_empty()
            && seen.is_empty()
            && hidden.is_empty()
            && hidden_c.is_empty()
            && follows.is_empty()
            && shown.is_empty()
        {
            return Ok(None);
        }
        let g = self.state.read();
        let mut st = UserState::default();
        for (member, score) in &hist {
            let mut parts = member.splitn(4, '|');
            let (_, kind, w, item) = (parts.next(), parts.next(), parts.next(), parts.next());
            let (Some(kind), Some(w), Some(item)) = (kind, w, item) else {
                return Err(ScaleoutError::Encode(format!("history member `{member}`")));
            };
            let kind = kind
                .parse::<usize>()
                .ok()
                .and_then(|k| EventKind::ALL.get(k).copied())
                .ok_or_else(|| ScaleoutError::Encode(format!("event kind `{kind}`")))?;
            let Some(item) = g.items.get(item) else {
                continue;
            };
            st.history.push(Interaction {
                item,
                ts_s: secs(*score as i64),
                kind,
                weight: w.parse().unwrap_or(0.0),
            });
        }
        if st.history.len() > self.history_cap {
            let extra = st.history.len() - self.history_cap;
            st.history.drain(..extra);
        }
        st.seen = seen
            .iter()
            .filter_map(|(item, t)| g.items.get(item).map(|i| (i, *t as u32)))
            .collect();
        st.seen.sort_unstable();
        st.first_s = seen.first().map_or(0, |&(_, t)| t as u32);
        let sorted = |ids: &[String], map: &cascade_core::IdMap| {
            let mut v: Vec<Idx> = ids.iter().filter_map(|i| map.get(i)).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        st.hidden_items = sorted(&hidden, &g.items);
        st.hidden_creators = sorted(&hidden_c, &g.creators);
        st.follows = sorted(&follows, &g.creators);
        st.shown = shown
            .iter()
            .filter_map(|(m, t)| {
                let item = m.split_once('|')?.1;
                g.items.get(item).map(|i| (i, *t as u32))
            })
            .collect();
        Ok(Some(st))
    }

    /// Deletes every key under this store's prefix (tests and decommissioning); on a
    /// cluster, on every master (a scan sees one node's keys).
    pub async fn clear(&self) -> Result<usize> {
        match &self.conn {
            Conn::Single(_) => Self::clear_on(&self.conn, &self.config.prefix).await,
            Conn::Cluster(_) => {
                let mut slots = redis::pipe();
                slots.cmd("CLUSTER").arg("SLOTS");
                let (ranges,): (Vec<redis::Value>,) = self.conn.run(&slots).await?;
                let mut masters: Vec<String> = Vec::new();
                for r in &ranges {
                    // [start, end, [host, port, id], replicas...]
                    if let redis::Value::Array(parts) = r
                        && let Some(redis::Value::Array(master)) = parts.get(2)
                        && let (Some(host), Some(redis::Value::Int(port))) =
                            (master.first(), master.get(1))
                    {
                        let host: String = redis::FromRedisValue::from_redis_value(host.clone())
                            .map_err(|e| ScaleoutError::Encode(e.to_string()))?;
                        let url = format!("redis://{host}:{port}");
                        if !masters.contains(&url) {
                            masters.push(url);
                        }
                    }
                }
                let mut deleted = 0;
                for url in masters {
                    let client = redis::Client::open(url.as_str())?;
                    let node = Conn::Single(ConnectionManager::new(client).await?);
                    deleted += Self::clear_on(&node, &self.config.prefix).await?;
                }
                Ok(deleted)
            }
        }
    }

    async fn clear_on(conn: &Conn, prefix: &str) -> Result<usize> {
        let pattern = format!("{prefix}:*");
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let mut scan = redis::pipe();
            scan.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, keys),): ((u64, Vec<String>),) = conn.run(&scan).await?;
            for key in &keys {
                let mut del = redis::pipe();
                del.cmd("DEL").arg(key);
                let (n,): (usize,) = conn.run(&del).await?;
                deleted += n;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(deleted);
            }
        }
    }

    /// Remaining time to live of one of a user's keys (`h`, `s`, `x`, `xc`, `f`, `i`), in
    /// seconds; negative when it has none or does not exist.
    pub async fn ttl(&self, user_id: &str, part: &str) -> Result<i64> {
        let mut pipe = redis::pipe();
        pipe.cmd("TTL").arg(self.key(user_id, part));
        let (t,): (i64,) = self.conn.run(&pipe).await?;
        Ok(t)
    }
}

#[async_trait::async_trait]
impl FeatureStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn user(&self, user_id: &str) -> std::result::Result<Option<UserState>, StoreError> {
        self.read(user_id).await.map_err(|e| match e {
            ScaleoutError::Encode(m) => StoreError::Malformed(m),
            e => StoreError::Unavailable(e.to_string()),
        })
    }

    async fn apply(&self, seq: u64, events: &[Event]) -> std::result::Result<(), StoreError> {
        self.write(seq, events)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    async fn forget(&self, seq: u64, m: &Mutation) -> std::result::Result<(), StoreError> {
        let r = match m {
            Mutation::EraseUser { id } => RedisStore::forget(self, seq, id, None).await,
            Mutation::DeleteFeedback {
                user_id,
                item_id,
                kind,
            } => RedisStore::forget(self, seq, user_id, Some((item_id, *kind))).await,
            _ => Ok(()),
        };
        r.map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}
