//! `cascade bench freshness`: event-to-effect latency against a real server on a data dir —
//! a like changes the user's next recommendations (the liked item's neighbours appear), a
//! hide removes the item — measured over many trials, p50/p99.

use crate::serve::start;
use anyhow::Context;
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct FreshArgs {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Longest wait for an effect before the trial counts as "no effect".
    #[arg(long, default_value_t = 5000)]
    max_wait_ms: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Scale-out: a second replica on this data dir (same config, which must put both on
    /// the bus); events are posted to the first, recommendations read from the second.
    #[arg(long)]
    replica_data_dir: Option<PathBuf>,
    /// Rounds of 20 new items each for the aggregate measurements (0: skip them).
    #[arg(long, default_value_t = 3)]
    item_rounds: usize,
}

pub fn run(args: FreshArgs) -> anyhow::Result<()> {
    let rt = crate::runtime()?;
    let mut cfg = cascade_server::Config::load(args.config.as_deref())?;
    cfg.data_dir = args.data_dir.clone();
    rt.block_on(async move {
        let (engine, write_base, write_stop, write_server) = start(cfg.clone()).await?;
        let replica = match &args.replica_data_dir {
            Some(dir) => {
                let mut c = cfg.clone();
                c.data_dir = dir.clone();
                Some(start(c).await?)
            }
            None => None,
        };
        let read_base = replica.as_ref().map_or(write_base.clone(), |r| r.1.clone());
        let users: Vec<String> = {
            let g = engine.env.state.read();
            (0..g.users.len().min(5000))
                .filter_map(|u| g.users.name(u as u32).map(str::to_string))
                .collect()
        };
        let mut out = trials(&write_base, &read_base, &users, &args).await;
        let reader = replica.as_ref().map_or(&engine, |r| &r.0);
        if out.is_ok() {
            out = social_trials(reader, &write_base, &read_base, &users, &args).await;
        }
        if out.is_ok() && args.item_rounds > 0 {
            out = item_trials(reader, &write_base, &users, &args).await;
        }
        for (e, _, stop, server) in replica.into_iter().chain(std::iter::once((
            engine,
            write_base,
            write_stop,
            write_server,
        ))) {
            let _ = stop.send(());
            let _ = server.await;
            e.close().await;
        }
        out
    })
}

/// The user's `home` list (`n` items): each item's id, the seed item that led to it (with
/// `explain`) and whether it was ranked (not explored, pinned or padded).
async fn home_list(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    n: usize,
    explain: bool,
) -> anyhow::Result<Vec<(String, Option<String>, bool)>> {
    let v: Value = client
        .get(format!(
            "{base}/v1/recommendations/home?user_id={user}&n={n}&explain={explain}"
        ))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| {
            let id = i["item_id"].as_str()?.to_string();
            let seed = i["explain"]["seed_item_id"].as_str().map(str::to_string);
            Some((id, seed, i["placed_by"] == "ranked"))
        })
        .collect())
}

/// The user's 50-item `home` list: each item with the seed item that led to it (explain
/// trace); items an exploration slot placed carry no seed here, since chance, not the event,
/// put them there.
async fn recs(
    client: &reqwest::Client,
    base: &str,
    user: &str,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let list = home_list(client, base, user, 50, true).await?;
    Ok(list
        .into_iter()
        .map(|(id, seed, ranked)| (id, seed.filter(|_| ranked)))
        .collect())
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    kind: &str,
    user: &str,
    item: &str,
) -> anyhow::Result<()> {
    let r = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"events": [{"type": kind, "user_id": user, "item_id": item}]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "event refused: {}", r.status());
    Ok(())
}

/// Polls the user's recommendations until `done` holds; the time since `t0`, or `None`.
async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    t0: Instant,
    max: Duration,
    done: impl Fn(&[(String, Option<String>)]) -> bool,
) -> anyhow::Result<Option<Duration>> {
    poll(t0, max, || async {
        Ok(done(&recs(client, base, user).await?))
    })
    .await
}

/// The `home` pipeline and the slot of its source `name` (what candidate checks look for).
fn home_source(
    engine: &cascade_server::Engine,
    name: &str,
) -> anyhow::Result<(std::sync::Arc<cascade_pipeline::Pipeline>, usize)> {
    let pipeline = engine
        .pipelines
        .get("home")
        .context("surface home")?
        .clone();
    let slot = pipeline
        .sources
        .iter()
        .position(|s| s.source.name() == name)
        .with_context(|| format!("home has no {name} source"))?;
    Ok((pipeline, slot))
}

/// Event-to-effect latencies of one kind of effect, and the trials without it.
struct Effect {
    label: &'static str,
    hist: Histogram<u64>,
    none: usize,
}

impl Effect {
    fn new(label: &'static str) -> anyhow::Result<Self> {
        Ok(Self {
            label,
            hist: Histogram::new(3)?,
            none: 0,
        })
    }

    fn record(&mut self, took: Option<Duration>) -> anyhow::Result<()> {
        match took {
            Some(d) => self.hist.record(d.as_micros() as u64)?,
            None => self.none += 1,
        }
        Ok(())
    }

    fn print(&self, max_wait_ms: u64) {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{}: {} trials, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; no effect within {} ms: {}",
            self.label,
            self.hist.len(),
            ms(0.5),
            ms(0.99),
            self.hist.max() as f64 / 1000.0,
            max_wait_ms,
            self.none
        );
    }
}

/// Polls `done` until it holds (the time since `t0`) or `max` has passed (`None`).
async fn poll<F, Fut>(t0: Instant, max: Duration, mut done: F) -> anyhow::Result<Option<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    loop {
        if done().await? {
            return Ok(Some(t0.elapsed()));
        }
        if t0.elapsed() > max {
            return Ok(None);
        }
    }
}

/// Posts to `write` and reads from `read` (the same server unless measuring scale-out).
async fn trials(write: &str, read: &str, users: &[String], args: &FreshArgs) -> anyhow::Result<()> {
    let base = read;
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed);
    let max = Duration::from_millis(args.max_wait_ms);
    let mut ack = Histogram::<u64>::new(3)?;
    let mut like = Effect::new("like -> a neighbour of the liked item appears, seeded by it")?;
    let mut hide = Effect::new("hide -> the item is gone")?;
    for _ in 0..args.trials {
        let user = users.choose(&mut rng).context("no users")?.clone();
        let before = recs(&client, base, &user).await?;
        if before.len() < 20 {
            continue;
        }
        // Like an item from deep in the list; the effect waited for is a neighbour not shown
        // before, found because of this like (the trace names it as the seed).
        let liked = before[rng.random_range(10..before.len())].0.clone();
        let sim: Value = client
            .get(format!("{base}/v1/items/{liked}/similar?n=10"))
            .send()
            .await?
            .json()
            .await?;
        let shown: HashSet<&String> = before.iter().map(|(i, _)| i).collect();
        let fresh: HashSet<String> = sim["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["item_id"].as_str().map(str::to_string))
            .filter(|i| !shown.contains(i) && *i != liked)
            .collect();
        let t0 = Instant::now();
        post(&client, write, "like", &user, &liked).await?;
        ack.record(t0.elapsed().as_micros() as u64)?;
        if !fresh.is_empty() {
            let by_like = |r: &[(String, Option<String>)]| {
                r.iter()
                    .any(|(i, seed)| fresh.contains(i) && seed.as_deref() == Some(liked.as_str()))
            };
            like.record(wait_for(&client, base, &user, t0, max, by_like).await?)?;
        }
        // Hide the first item shown: it must vanish.
        let now = recs(&client, base, &user).await?;
        let Some((top, _)) = now.first().cloned() else {
            continue;
        };
        let t0 = Instant::now();
        post(&client, write, "hide", &user, &top).await?;
        let gone = |r: &[(String, Option<String>)]| r.iter().all(|(i, _)| *i != top);
        hide.record(wait_for(&client, base, &user, t0, max, gone).await?)?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "event acknowledged (durable and applied): {} events, p50 {:.2} ms, p99 {:.2} ms",
        ack.len(),
        ms(&ack, 0.5),
        ms(&ack, 0.99)
    );
    like.print(args.max_wait_ms);
    hide.print(args.max_wait_ms);
    Ok(())
}

/// New items and aggregates: 20 new items per round are upserted, then 12 users each view a
/// popular item and like a new one; measured from the events' acknowledgement until each new
/// item is a `fresh` candidate, is in the ANN index, has co-visitation neighbours, and is in
/// the trending list (on the reading replica).
async fn item_trials(
    engine: &std::sync::Arc<cascade_server::Engine>,
    write: &str,
    users: &[String],
    args: &FreshArgs,
) -> anyhow::Result<()> {
    const NEW: usize = 20;
    const FANS: usize = 12;
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed + 1);
    let (pipeline, fresh_slot) = home_source(engine, "fresh")?;
    let (creators, anchors) = {
        let g = engine.env.state.read();
        let models = engine.env.models.load();
        let anchors: Vec<String> = models
            .popular
            .global
            .iter()
            .take(50)
            .map(|&(i, _)| g.item_id(i).to_string())
            .collect();
        let creators: Vec<String> = (0..g.creators.len().min(200) as u32)
            .filter_map(|c| g.creators.name(c).map(str::to_string))
            .collect();
        (creators, anchors)
    };
    let names = [
        "fresh candidate",
        "in the ANN index",
        "co-visitation neighbours",
        "trending",
    ];
    let mut hist: Vec<Histogram<u64>> = (0..4)
        .map(|_| Histogram::<u64>::new(3))
        .collect::<Result<_, _>>()?;
    let mut missing = [0usize; 4];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    for round in 0..args.item_rounds {
        let ids: Vec<String> = (0..NEW)
            .map(|k| format!("new-{nanos}-{round}-{k}"))
            .collect();
        let items: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"id": id, "title": format!("New {id}"), "categories": ["Tech"],
                       "creator_id": creators.choose(&mut rng)})
            })
            .collect();
        let r = client
            .post(format!("{write}/v1/items"))
            .json(&json!({ "items": items }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "items refused: {}", r.status());
        let mut events = Vec::new();
        for id in &ids {
            for _ in 0..FANS {
                let user = users.choose(&mut rng).context("no users")?;
                let anchor = anchors.choose(&mut rng).context("no items")?;
                events.push(json!({"type": "view", "user_id": user, "item_id": anchor}));
                events.push(json!({"type": "like", "user_id": user, "item_id": id}));
            }
        }
        let r = client
            .post(format!("{write}/v1/events"))
            .json(&json!({ "events": events }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "events refused: {}", r.status());
        let t0 = Instant::now();
        let mut done = vec![[false; 4]; NEW];
        while t0.elapsed() < Duration::from_secs(90) && done.iter().any(|d| d.iter().any(|x| !x)) {
            let user = users.choose(&mut rng).context("no users")?.clone();
            let q =
                cascade_pipeline::Query::new("home", &user, 20, cascade_core::time::now_millis());
            let cands = pipeline.merged_candidates(&engine.env, q).await;
            let models = engine.env.models.load();
            let idx: Vec<Option<u32>> = {
                let g = engine.env.state.read();
                ids.iter().map(|id| g.items.get(id)).collect()
            };
            for (k, i) in idx.iter().enumerate() {
                let Some(i) = *i else { continue };
                let now = [
                    cands.as_ref().is_some_and(|(_, c)| {
                        c.items
                            .iter()
                            .any(|x| x.item == i && x.has_source(fresh_slot))
                    }),
                    models.ann.as_ref().is_some_and(|a| a.contains(i)),
                    !models.covis.neighbors(i).0.is_empty(),
                    models.popular.trending.iter().any(|&(t, _)| t == i),
                ];
                for m in 0..4 {
                    if now[m] && !done[k][m] {
                        done[k][m] = true;
                        hist[m].record(t0.elapsed().as_micros() as u64)?;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for d in &done {
            for m in 0..4 {
                missing[m] += usize::from(!d[m]);
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for m in 0..4 {
        println!(
            "new item -> {}: {} items, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; not within 90 s: {}",
            names[m],
            hist[m].len(),
            ms(&hist[m], 0.5),
            ms(&hist[m], 0.99),
            hist[m].max() as f64 / 1000.0,
            missing[m]
        );
    }
    Ok(())
}

/// The user's `home` list: item ids and whether each was ranked (not explored, pinned or
/// padded) — what an event's effect is read from.
async fn ranked_ids(
    client: &reqwest::Client,
    base: &str,
    user: &str,
) -> anyhow::Result<Vec<(String, bool)>> {
    ranked_n(client, base, user, 50).await
}

async fn ranked_n(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, bool)>> {
    let list = home_list(client, base, user, n, false).await?;
    Ok(list.into_iter().map(|(id, _, r)| (id, r)).collect())
}

/// A follow (a creator whose items the user was not shown, nor follows): until one of the
/// creator's items is ranked in. A skip of the top item: until it is gone.
async fn social_trials(
    engine: &std::sync::Arc<cascade_server::Engine>,
    write: &str,
    read: &str,
    users: &[String],
    args: &FreshArgs,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed + 2);
    let max = Duration::from_millis(args.max_wait_ms);
    let mut candidate = Effect::new("follow -> the creator's items are `follows` candidates")?;
    let mut follow = Effect::new("follow -> one of the creator's items is ranked in")?;
    let mut skip = Effect::new("skip -> the item is gone")?;
    let (pipeline, follows_slot) = home_source(engine, "follows")?;
    let creator_of = |id: &str| -> Option<String> {
        let g = engine.env.state.read();
        let c = g.hot(g.items.get(id)?).creator;
        g.creators.name(c).map(str::to_string)
    };
    let popular: Vec<String> = {
        let g = engine.env.state.read();
        let models = engine.env.models.load();
        models
            .popular
            .global
            .iter()
            .take(2000)
            .map(|&(i, _)| g.item_id(i).to_string())
            .collect()
    };
    for _ in 0..args.trials {
        let user = users.choose(&mut rng).context("no users")?.clone();
        let before = ranked_ids(&client, read, &user).await?;
        if before.len() < 20 {
            continue;
        }
        let shown: HashSet<String> = before.iter().filter_map(|(i, _)| creator_of(i)).collect();
        let followed: HashSet<String> = {
            let g = engine.env.state.read();
            g.users
                .get(&user)
                .and_then(|u| g.user(u))
                .map(|u| {
                    u.follows
                        .iter()
                        .filter_map(|&c| g.creators.name(c).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        // A creator of plausible interest: one whose items the ranker places below the 50
        // shown (ranks 51–200), none of them shown.
        let deep = ranked_n(&client, read, &user, 200).await?;
        let plausible: Vec<String> = deep
            .iter()
            .skip(50)
            .filter_map(|(i, _)| creator_of(i))
            .filter(|c| !shown.contains(c) && !followed.contains(c))
            .collect();
        let Some(creator) = plausible.choose(&mut rng).cloned().or_else(|| {
            (0..50).find_map(|_| {
                let c = creator_of(popular.choose(&mut rng)?)?;
                (!shown.contains(&c) && !followed.contains(&c)).then_some(c)
            })
        }) else {
            continue;
        };
        let t0 = Instant::now();
        let r = client
            .post(format!("{write}/v1/events"))
            .json(&json!({"events": [{"type": "follow", "user_id": user, "creator_id": creator}]}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "follow refused: {}", r.status());
        // The follow reaches the features: the creator's items are `follows` candidates.
        let took = poll(t0, max, || async {
            let q =
                cascade_pipeline::Query::new("home", &user, 50, cascade_core::time::now_millis());
            let cands = pipeline.merged_candidates(&engine.env, q).await;
            let g = engine.env.state.read();
            Ok(cands.as_ref().is_some_and(|(_, c)| {
                c.items.iter().any(|x| {
                    x.has_source(follows_slot)
                        && g.creators.name(g.hot(x.item).creator) == Some(creator.as_str())
                })
            }))
        })
        .await?;
        candidate.record(took)?;
        let took = poll(t0, max, || async {
            let now = ranked_ids(&client, read, &user).await?;
            Ok(now
                .iter()
                .any(|(i, ranked)| *ranked && creator_of(i).as_deref() == Some(creator.as_str())))
        })
        .await?;
        follow.record(took)?;
        let now = ranked_ids(&client, read, &user).await?;
        let Some((top, _)) = now.first().cloned() else {
            continue;
        };
        let t0 = Instant::now();
        post(&client, write, "skip", &user, &top).await?;
        let took = poll(t0, max, || async {
            let now = ranked_ids(&client, read, &user).await?;
            Ok(now.iter().all(|(i, _)| *i != top))
        })
        .await?;
        skip.record(took)?;
    }
    for e in [&candidate, &follow, &skip] {
        e.print(args.max_wait_ms);
    }
    Ok(())
}
