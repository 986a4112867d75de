//! `cascade bench freshness`: event-to-effect latency against a real server on a data dir —
//! a like changes the user's next recommendations (the liked item's neighbours appear), a
//! hide removes the item — measured over many trials, p50/p99.

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
        let out = trials(&write_base, &read_base, &users, &args).await;
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

type Started = (
    std::sync::Arc<cascade_server::Engine>,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), cascade_server::ServerError>>,
);

/// Opens an engine and serves it on a free port.
async fn start(cfg: cascade_server::Config) -> anyhow::Result<Started> {
    let engine = cascade_server::Engine::open_async(cfg).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cascade_server::serve(engine.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    Ok((engine, base, stop_tx, server))
}

/// The user's `home` list: each item with the seed item that led to it (explain trace); items
/// an exploration slot placed carry no seed here, since chance, not the event, put them there.
async fn recs(
    client: &reqwest::Client,
    base: &str,
    user: &str,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let v: Value = client
        .get(format!(
            "{base}/v1/recommendations/home?user_id={user}&n=50&explain=true"
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
            let seed = i["explain"]["seed_item_id"]
                .as_str()
                .filter(|_| i["placed_by"] == "ranked")
                .map(str::to_string);
            Some((id, seed))
        })
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
    loop {
        let r = recs(client, base, user).await?;
        if done(&r) {
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
    let (mut ack, mut like, mut hide) = (
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
    );
    let (mut like_none, mut hide_none) = (0, 0);
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
            match wait_for(&client, base, &user, t0, max, by_like).await? {
                Some(d) => like.record(d.as_micros() as u64)?,
                None => like_none += 1,
            }
        }
        // Hide the first item shown: it must vanish.
        let now = recs(&client, base, &user).await?;
        let Some((top, _)) = now.first().cloned() else {
            continue;
        };
        let t0 = Instant::now();
        post(&client, write, "hide", &user, &top).await?;
        let gone = |r: &[(String, Option<String>)]| r.iter().all(|(i, _)| *i != top);
        match wait_for(&client, base, &user, t0, max, gone).await? {
            Some(d) => hide.record(d.as_micros() as u64)?,
            None => hide_none += 1,
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "event acknowledged (durable and applied): {} events, p50 {:.2} ms, p99 {:.2} ms",
        ack.len(),
        ms(&ack, 0.5),
        ms(&ack, 0.99)
    );
    println!(
        "like -> a neighbour of the liked item appears, seeded by it: {} trials, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; no effect within {} ms: {}",
        like.len(),
        ms(&like, 0.5),
        ms(&like, 0.99),
        like.max() as f64 / 1000.0,
        args.max_wait_ms,
        like_none
    );
    println!(
        "hide -> the item is gone: {} trials, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; no effect: {}",
        hide.len(),
        ms(&hide, 0.5),
        ms(&hide, 0.99),
        hide.max() as f64 / 1000.0,
        hide_none
    );
    Ok(())
}
