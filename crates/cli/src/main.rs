//! `cascade`: argument parsing and dispatch. The work is done by the library crates: data in
//! by `cascade-worlds`, training by `cascade-training`, serving by `cascade-server`, and
//! measurement by `cascade-bench`.

mod args;
mod drift;
mod experiments;
mod models;
mod train;

use anyhow::Context;
use args::{DataDirArgs, WorldArgs};
use cascade_bench::{ann as bench_ann, eval, freshness as bench_fresh, load as bench};
use cascade_bench::{memory as bench_mem, rank as bench_rank, runtime, suggest as bench_suggest};
use cascade_server::Config;
use cascade_worlds::{generate, import, store};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "cascade",
    version,
    about = "Cascade: a fast, dependable recommendation engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic world (items, users, sessions of feedback) as JSONL files.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        world: WorldArgs,
    },
    /// Load items, users and events into a data dir (the server must not be running on it).
    Import {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, value_enum)]
        format: import::Format,
        path: PathBuf,
    },
    /// Serve the HTTP API over a data dir.
    Serve {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        addr: Option<String>,
    },
    /// Generate (or import) a world, build what the pipeline needs, serve it, print examples.
    Demo {
        /// Data dir to use (kept); a fresh temporary one when absent.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Import this MovieLens directory (as written by get-movielens) instead of generating.
        #[arg(long)]
        dataset: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[command(flatten)]
        world: WorldArgs,
    },
    /// Train embeddings, co-visitation, embedding neighbours and the HNSW index from a data
    /// dir's log and write a versioned model bundle that `serve` loads (stop the server first).
    Train {
        #[command(flatten)]
        dir: DataDirArgs,
        /// Users whose newest engagement is held out to measure the model (0: none).
        #[arg(long, default_value_t = 500)]
        holdout_users: usize,
        /// Print the manifest as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// Also write the ranker's training lists as CSV (for `bench/peer_lightgbm.py`).
        #[arg(long)]
        export_lists: Option<PathBuf>,
        /// Promote the new bundle without the gate against the active one.
        #[arg(long)]
        force: bool,
    },
    /// Measure ingest throughput and recommendation latency under concurrent load.
    Bench {
        #[command(subcommand)]
        what: Option<BenchKind>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Run the offline evaluation protocol (Recall, NDCG, HitRate, Coverage) on a dataset.
    Eval(eval::EvalArgs),
    /// The model registry: list bundles, activate one (validated), roll back.
    Models(models::ModelsArgs),
    /// Online metrics per experiment arm, with 95 % intervals and each arm's model.
    Experiments(experiments::ExperimentsArgs),
    /// Distribution shift: every signal against the active bundle's reference, worst first,
    /// and each model version's offline metrics beside its online rates.
    Drift(drift::DriftArgs),
    /// Write a snapshot of the data dir's state now (the server also writes them every
    /// `storage.snapshot_interval_s`): a restart then replays only the log after it.
    Snapshot {
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Compact the data dir's log now (the server also does every
    /// `storage.compaction_interval_s` when a retention is set or an erasure waits): events past
    /// `storage.retention_*` and every record of erased users leave it.
    Compact {
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// The online feature store (`storage.backend = "redis"`).
    Features {
        #[command(subcommand)]
        what: FeaturesCmd,
    },
}

#[derive(Subcommand)]
enum FeaturesCmd {
    /// Write every event in the data dir's log to the Redis feature store (seeds it with the
    /// history from before the deployment moved to the bus; idempotent).
    Backfill {
        #[command(flatten)]
        dir: DataDirArgs,
        /// Events per round trip.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Decommission a deployment's scale-out state: delete every Redis key under the
    /// configured prefix and the configured JetStream stream (with its consumers).
    Drop {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// The HNSW index alone: recall@10 vs exact, queries/s per `ef`, build time, memory.
    Ann(bench_ann::AnnArgs),
    /// The ranking stage (hydration, pre-ranker, GBDT) per request on one core, and GBDT
    /// inference alone on the pre-ranker's survivors.
    Rank(bench_rank::RankArgs),
    /// Event-to-effect latency: a like's neighbours appear, a hidden item vanishes.
    Freshness(bench_fresh::FreshArgs),
    /// The embedded state's memory for a synthetic world, by part, against a budget.
    Memory(bench_mem::MemArgs),
    /// The suggestion index: build, bytes per key and latency on a generated catalog, or
    /// client-side latency over HTTP on a data dir.
    Suggest(bench_suggest::SuggestArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CASCADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Generate { out, world } => {
            let t = Instant::now();
            let mut sink = generate::JsonlDirSink::create(&out)?;
            let c = generate::generate(&world.params(), &mut sink, true)?;
            sink.finish()?;
            println!(
                "wrote {} items, {} users, {} events to {} in {:.1}s",
                c.items,
                c.users,
                c.events,
                out.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Import {
            data_dir,
            format,
            path,
        } => {
            let t = Instant::now();
            let mut sink = store::StoreSink::open(&data_dir)?;
            import::import(format, &path, &mut sink, true)?;
            let c = sink.finish()?;
            println!(
                "imported {} items, {} users, {} events into {} in {:.1}s",
                c.items,
                c.users,
                c.events,
                data_dir.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Serve {
            data_dir,
            config,
            addr,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if let Some(a) = addr {
                cfg.server.addr = a;
            }
            runtime()?.block_on(serve(cfg, None))
        }
        Command::Demo {
            data_dir,
            dataset,
            addr,
            world,
        } => demo(data_dir, dataset, addr, world),
        Command::Train {
            dir,
            holdout_users,
            json,
            export_lists,
            force,
        } => train::run(&dir.load()?, holdout_users, json, export_lists, force),
        Command::Bench {
            what: Some(BenchKind::Ann(a)),
            ..
        } => bench_ann::run(a),
        Command::Bench {
            what: Some(BenchKind::Rank(a)),
            ..
        } => bench_rank::run(a),
        Command::Bench {
            what: Some(BenchKind::Freshness(a)),
            ..
        } => bench_fresh::run(a),
        Command::Bench {
            what: Some(BenchKind::Memory(a)),
            ..
        } => bench_mem::run(a),
        Command::Bench {
            what: Some(BenchKind::Suggest(a)),
            ..
        } => bench_suggest::run(a),
        Command::Bench { what: None, args } => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Models(args) => models::run(args),
        Command::Experiments(args) => experiments::run(args),
        Command::Drift(args) => drift::run(args),
        Command::Features {
            what: FeaturesCmd::Backfill { dir, batch },
        } => {
            let cfg = dir.load()?;
            let t = Instant::now();
            let rt = runtime()?;
            let done = rt.block_on(cascade_runtime::backfill::backfill(&cfg, batch))?;
            println!(
                "backfilled {} events in {} round trips into {} (prefix {}) in {:.1}s",
                done.events,
                done.batches,
                cfg.storage.redis.url,
                cfg.storage.redis.prefix,
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Snapshot { dir } => {
            let rt = runtime()?;
            let t = Instant::now();
            let engine = open_engine(&rt, dir.data_dir, dir.config.as_deref())?;
            let opened = t.elapsed();
            let t = Instant::now();
            let (path, bytes) = engine.snapshot_now()?;
            println!(
                "opened in {:.2}s ({} records replayed, {} from a snapshot); wrote {} ({:.1} MB) in {:.2}s",
                opened.as_secs_f64(),
                engine.replay.records,
                engine.replay.skipped,
                path.display(),
                bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            rt.block_on(engine.close());
            Ok(())
        }
        Command::Compact { dir } => {
            let rt = runtime()?;
            let t = Instant::now();
            let engine = open_engine(&rt, dir.data_dir, dir.config.as_deref())?;
            let opened = t.elapsed();
            let t = Instant::now();
            let e = engine.clone();
            let c = rt.block_on(async move {
                tokio::task::spawn_blocking(move || e.compact_now())
                    .await
                    .map_err(|e| anyhow::anyhow!("compaction panicked: {e}"))
            })??;
            println!(
                "opened in {:.2}s; compacted {} segments in {:.2}s: {} records ({:.1} MB) -> {} ({:.1} MB), {} events -> {}, {} erased users purged",
                opened.as_secs_f64(),
                c.segments,
                t.elapsed().as_secs_f64(),
                c.records_in,
                c.bytes_in as f64 / 1e6,
                c.records_out,
                c.bytes_out as f64 / 1e6,
                c.events_in,
                c.events_out,
                c.erased_users,
            );
            rt.block_on(engine.close());
            Ok(())
        }
        Command::Features {
            what: FeaturesCmd::Drop { config },
        } => {
            let cfg = Config::load(config.as_deref())?;
            let rt = runtime()?;
            let keys = rt.block_on(cascade_runtime::backfill::drop_deployment(&cfg))?;
            println!(
                "deleted {keys} keys under {} and stream {}",
                cfg.storage.redis.prefix, cfg.bus.nats.stream
            );
            Ok(())
        }
    }
}

/// Opens the engine on a data dir (server stopped) for a tool that reads or switches what
/// it holds: no background ranker training.
fn open_engine(
    rt: &tokio::runtime::Runtime,
    data_dir: PathBuf,
    config: Option<&Path>,
) -> anyhow::Result<std::sync::Arc<cascade_server::Engine>> {
    let mut cfg = Config::load(config)?;
    cfg.data_dir = data_dir;
    cfg.models.ranker.enabled = false;
    Ok(rt.block_on(cascade_server::Engine::open_async(cfg))?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

/// Binds, prints the address (tests and scripts read this line), serves until a signal.
/// Printed once the server listens, with its address.
type Banner = Box<dyn FnOnce(&str) + Send>;

async fn serve(cfg: Config, banner: Option<Banner>) -> anyhow::Result<()> {
    let t = Instant::now();
    let engine = cascade_server::Engine::open_async(cfg.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.server.addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.server.addr))?;
    let addr = listener.local_addr()?.to_string();
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(
        %addr,
        replayed = engine.replay.records,
        ready_ms = t.elapsed().as_millis() as u64,
        "cascade is serving"
    );
    if let Some(b) = banner {
        b(&addr);
    }
    let served = cascade_server::serve(engine.clone(), &cfg, listener, shutdown_signal()).await;
    engine.close().await;
    served.map_err(Into::into)
}

fn log_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("log")).map_or(true, |mut r| r.next().is_none())
}

fn demo(
    data_dir: Option<PathBuf>,
    dataset: Option<PathBuf>,
    addr: String,
    world: WorldArgs,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let (dir, _tmp) = match data_dir {
        Some(d) => (d, None),
        None => {
            let tmp = tempfile::Builder::new().prefix("cascade-demo-").tempdir()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let (example_user, example_item) = if let Some(ds) = &dataset {
        if log_is_empty(&dir) {
            eprintln!("importing {} into {}", ds.display(), dir.display());
            let mut sink = store::StoreSink::open(&dir)?;
            import::import(import::Format::Movielens, ds, &mut sink, true)?;
            sink.finish()?;
        }
        ("1".to_string(), "1".to_string())
    } else {
        if log_is_empty(&dir) {
            eprintln!(
                "generating {} items, {} users, {} events into {}",
                world.items,
                world.users,
                world.events,
                dir.display()
            );
            let mut sink = store::StoreSink::open(&dir)?;
            generate::generate(&world.params(), &mut sink, true)?;
            sink.finish()?;
        }
        ("u1".to_string(), "i1".to_string())
    };
    eprintln!(
        "data ready in {:.1}s; starting the server",
        t.elapsed().as_secs_f64()
    );
    let mut cfg = Config::load(None)?;
    cfg.data_dir = dir;
    cfg.server.addr = addr;
    let banner = Box::new(move |addr: &str| {
        println!(
            "\nCascade demo is up (started in {:.1}s). Try:\n\n\
             curl -s 'http://{addr}/v1/recommendations/home?user_id={example_user}&n=5' | python3 -m json.tool\n\
             curl -s -X POST http://{addr}/v1/recommendations/feed -H 'content-type: application/json' \\\n  \
             -d '{{\"user_id\":\"{example_user}\",\"n\":5,\"session_item_ids\":[\"{example_item}\"],\"explain\":true}}'\n\
             curl -s 'http://{addr}/v1/items/{example_item}/similar?n=5'\n\
             curl -s -X POST http://{addr}/v1/events -H 'content-type: application/json' \\\n  \
             -d '{{\"events\":[{{\"type\":\"like\",\"user_id\":\"{example_user}\",\"item_id\":\"{example_item}\"}}]}}'\n\
             curl -s http://{addr}/metrics | grep cascade_http_requests_total\n\n\
             The dashboard: http://{addr}/dashboard (users, items, models, drift, live metrics)\n\n\
             Press Ctrl-C to stop.",
            t.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    });
    runtime()?.block_on(serve(cfg, Some(banner)))
}
