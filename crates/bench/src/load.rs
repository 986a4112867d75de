//! `cascade bench`: durable ingest throughput and recommendation latency under concurrent load,
//! against a real server on loopback (the load generator shares the machine).

use anyhow::{Context, bail};
use cascade_worlds::{generate, store};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Existing data dir to serve; a fresh demo-sized world is generated when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 50_000)]
    items: usize,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seconds of recommendation load per surface.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events posted in the ingest phase.
    #[arg(long, default_value_t = 1_000_000)]
    ingest_events: usize,
    #[arg(long, default_value_t = 1000)]
    ingest_batch: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, serde::Serialize)]
struct LatencyReport {
    surface: String,
    requests: u64,
    errors: u64,
    req_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The server's own time per pipeline stage (the responses' `timings_ms`), mean over
    /// every eighth response: what a stage costs the request path, apart from the client's
    /// and the network's share of the latency above.
    stage_mean_ms: std::collections::BTreeMap<String, f64>,
}

/// The part of a response the bench reads back.
#[derive(serde::Deserialize)]
struct Timed {
    timings_ms: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    items: usize,
    users: usize,
    world_events: u64,
    ingest_events: usize,
    ingest_batch: usize,
    ingest_events_per_s: f64,
    fsync: bool,
    concurrency: usize,
    recommendations: Vec<LatencyReport>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("cascade-bench-")
                .tempdir()?;
            let dir = tmp.path().to_path_buf();
            _tmp = tmp;
            eprintln!(
                "generating {} items, {} users, {} events",
                args.items, args.users, args.events
            );
            let mut sink = store::StoreSink::open(&dir)?;
            let p = generate::GenerateParams::new(
                args.items,
                args.users,
                args.events,
                args.seed,
                cascade_core::time::now_millis(),
            );
            generate::generate(&p, &mut sink, false)?;
            sink.finish()?;
            dir
        }
    };
    rt.block_on(run_async(args, dir))
}

async fn run_async(args: BenchArgs, dir: PathBuf) -> anyhow::Result<()> {
    let mut cfg = cascade_server::Config::load(None)?;
    cfg.data_dir = dir;
    let (engine, base, stop_tx, server) = crate::serve::start(cfg.clone()).await?;
    let world_events = engine.env.state.stats().events;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;

    let ingest_rate = ingest(&client, &base, &args).await?;
    let mut recs = Vec::new();
    for surface in ["home", "feed"] {
        recs.push(load(&client, &base, surface, &args).await?);
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    engine.close().await;

    let report = Report {
        items: args.items,
        users: args.users,
        world_events,
        ingest_events: args.ingest_events,
        ingest_batch: args.ingest_batch,
        ingest_events_per_s: ingest_rate,
        fsync: cfg.storage.fsync,
        concurrency: args.concurrency,
        recommendations: recs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "ingest: {} events in batches of {} over HTTP, fsync={}: {:.0} events/s",
            report.ingest_events, report.ingest_batch, report.fsync, report.ingest_events_per_s
        );
        println!(
            "| surface | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | max ms |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &report.recommendations {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.surface,
                report.concurrency,
                r.requests,
                r.errors,
                r.req_per_s,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.max_ms
            );
        }
        for r in &report.recommendations {
            let stages: Vec<String> = r
                .stage_mean_ms
                .iter()
                .map(|(s, ms)| format!("{s} {ms:.3}"))
                .collect();
            println!(
                "{}: server time per stage, mean ms: {}",
                r.surface,
                stages.join(", ")
            );
        }
    }
    Ok(())
}

/// Posts `ingest_events` events in batches from `concurrency` clients; returns events/s.
async fn ingest(client: &reqwest::Client, base: &str, args: &BenchArgs) -> anyhow::Result<f64> {
    if args.ingest_events == 0 {
        return Ok(0.0);
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed ^ 0x5eed);
    let kinds = ["view", "click", "like", "skip"];
    let batches = args.ingest_events.div_ceil(args.ingest_batch.max(1));
    let mut bodies = Vec::with_capacity(batches);
    for b in 0..batches {
        let n = args
            .ingest_batch
            .min(args.ingest_events - b * args.ingest_batch);
        let events: Vec<serde_json::Value> = (0..n)
            .map(|_| {
                serde_json::json!({
                    "type": kinds[rng.random_range(0..kinds.len())],
                    "user_id": format!("u{}", rng.random_range(0..args.users.max(1))),
                    "item_id": format!("i{}", rng.random_range(0..args.items.max(1))),
                })
            })
            .collect();
        bodies.push(bytes_of(&serde_json::json!({ "events": events }))?);
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, bodies, next) = (
            client.clone(),
            format!("{base}/v1/events"),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!(
                        "ingest failed: {} {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("ingest task")??;
    }
    Ok(args.ingest_events as f64 / t.elapsed().as_secs_f64())
}

fn bytes_of(v: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

/// Closed-loop load: `concurrency` clients request recommendations for random users.
async fn load(
    client: &reqwest::Client,
    base: &str,
    surface: &str,
    args: &BenchArgs,
) -> anyhow::Result<LatencyReport> {
    // Warm up connections and caches briefly.
    let end = Instant::now() + Duration::from_secs(args.duration_s);
    let mut tasks = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let client = client.clone();
        let url = format!("{base}/v1/recommendations/{surface}");
        let users = args.users.max(1);
        let seed = args.seed.wrapping_add(w as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let mut stages: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
            let mut k = 0u64;
            while Instant::now() < end {
                let user = format!("u{}", rng.random_range(0..users));
                let t = Instant::now();
                let resp = client
                    .get(format!("{url}?user_id={user}&n=20"))
                    .send()
                    .await;
                let body = match resp {
                    Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                    _ => None,
                };
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                let ok = body.is_some();
                k += 1;
                if k.is_multiple_of(8)
                    && let Some(t) = body.and_then(|b| serde_json::from_slice::<Timed>(&b).ok())
                {
                    for (stage, ms) in t.timings_ms {
                        let e = stages.entry(stage).or_default();
                        e.0 += ms;
                        e.1 += 1;
                    }
                }
                if !ok {
                    errors += 1;
                }
            }
            Ok::<_, anyhow::Error>((h, errors, stages))
        }));
    }
    let t = Instant::now();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    let mut stages: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
    for task in tasks {
        let (h, e, st) = task.await.context("load task")??;
        all.add(h)?;
        errors += e;
        for (stage, (sum, n)) in st {
            let x = stages.entry(stage).or_default();
            x.0 += sum;
            x.1 += n;
        }
    }
    let secs = t.elapsed().as_secs_f64().max(args.duration_s as f64);
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(LatencyReport {
        surface: surface.to_string(),
        requests: all.len(),
        errors,
        req_per_s: all.len() as f64 / secs,
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: all.max() as f64 / 1000.0,
        stage_mean_ms: stages
            .into_iter()
            .map(|(stage, (sum, n))| (stage, sum / n.max(1) as f64))
            .collect(),
    })
}
