//! `cascade bench rank`: the ranking stage of a surface on one core, per request, over a data
//! dir with a trained bundle: hydration of every merged candidate (up to the surface's budget),
//! the pre-ranker's cut, and the GBDT ranker on the survivors; then GBDT inference alone.

use anyhow::{Context, bail};
use cascade_server::{Config, Engine};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct RankArgs {
    /// Data dir with a trained bundle (`cascade train`).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "home")]
    surface: String,
    /// Users (requests) timed.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Repetitions of GBDT inference per request for the inference-only figure.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub fn run(args: RankArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    cfg.data_dir = args.data_dir.clone();
    // Only the ranking stage is timed here; impressions would write to the log.
    for s in cfg.surfaces.values_mut() {
        s.side_effects.clear();
    }
    let rt = crate::runtime()?;
    let engine = rt.block_on(Engine::open_async(cfg))?;
    let models = engine.env.models.load();
    let Some(model) = models.ranker.clone() else {
        bail!("the data dir's bundle has no ranker: run `cascade train` first")
    };
    let pipeline = engine
        .pipelines
        .get(&args.surface)
        .cloned()
        .with_context(|| format!("surface {}", args.surface))?;
    let users: Vec<String> = {
        let g = engine.env.state.read();
        (0..g.users.len().min(args.users))
            .filter_map(|u| g.users.name(u as u32).map(str::to_string))
            .collect()
    };
    let now = engine.env.state.read().watermark + 1000;
    let mut stage = Histogram::<u64>::new(3)?;
    let mut infer = Histogram::<u64>::new(3)?;
    let (mut merged, mut kept, mut features) = (0usize, 0usize, 0usize);
    let mut degraded = 0usize;
    let mut per_step: Vec<(&'static str, f64)> = Vec::new();
    let mut policy = Histogram::<u64>::new(3)?;
    // Sums over requests: context + sources + merge; ranking + policy; policy (incl. filters).
    let (mut gather_ms, mut request_ms, mut policy_ms) = (0f64, 0f64, 0f64);
    let mut out = Vec::new();
    for user in &users {
        let mut q = cascade_pipeline::Query::new(&args.surface, user, 10, now);
        q.request_id = format!("bench-{user}");
        let t = Instant::now();
        let Some((ctx, cands)) = rt.block_on(pipeline.merged_candidates(&engine.env, q)) else {
            continue;
        };
        gather_ms += t.elapsed().as_secs_f64() * 1e3;
        merged += cands.items.len();
        // Timed on this thread: one core, nothing else running.
        let t = Instant::now();
        let rs = pipeline.rank_stage(&ctx, cands);
        let rank_took = t.elapsed();
        stage.record(rank_took.as_nanos() as u64)?;
        let ranked = rs.cands.clone();
        let d = rs.degraded.clone();
        // The policy stage on the ranked list: selectors, padding, explanations.
        let t = Instant::now();
        let done = pipeline.policy_stage(&ctx, rs);
        let policy_took = t.elapsed();
        policy.record(policy_took.as_nanos() as u64)?;
        let steps = done.timings;
        // The filters are policy too (safety, blocklist, seen, caps).
        let filter_ms: f64 = steps
            .iter()
            .filter(|(name, _)| *name == "filter")
            .map(|(_, ms)| ms)
            .sum();
        policy_ms += policy_took.as_secs_f64() * 1e3 + filter_ms;
        request_ms += (rank_took + policy_took).as_secs_f64() * 1e3;
        for (name, ms) in steps {
            match per_step.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += ms,
                None => per_step.push((name, ms)),
            }
        }
        degraded += usize::from(!d.is_empty());
        kept += ranked.items.len();
        features = ranked.features.schema.len();
        let names: Vec<&str> = ranked.features.schema.names().collect();
        let bound = model.bind_to(&names)?;
        let rows: Vec<u32> = ranked.items.iter().map(|c| c.row).collect();
        out.resize(rows.len(), 0f32);
        for _ in 0..args.repeat {
            out.fill(0.0);
            let t = Instant::now();
            bound.predict_rows(&ranked.features.values, &rows, &mut out);
            infer.record(t.elapsed().as_nanos() as u64)?;
        }
        std::hint::black_box(&out);
    }
    let n = stage.len().max(1) as f64;
    println!(
        "surface {}: {} requests, {:.0} merged candidates and {:.0} kept by the pre-ranker per request, {} features, {} trees ({} requests degraded)",
        args.surface,
        stage.len(),
        merged as f64 / n,
        kept as f64 / n,
        features,
        model.trees(),
        degraded
    );
    println!(
        "ranking stage (filters + hydration + pre-rank + GBDT), one core: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(&stage, 0.5) / 1000.0,
        pct(&stage, 0.99) / 1000.0,
        stage.max() as f64 / 1e6
    );
    let steps: Vec<String> = per_step
        .iter()
        .map(|(name, total)| format!("{name} {:.3}", total / n))
        .collect();
    println!("  mean ms per step: {}", steps.join(", "));
    println!(
        "policy after ranking (selectors, padding, explanations): p50 {:.1} µs, p99 {:.1} µs",
        pct(&policy, 0.5),
        pct(&policy, 0.99)
    );
    let whole = gather_ms + request_ms;
    println!(
        "policy incl. filters: {:.3} ms of a {:.3} ms request (context + sources {:.3} ms, CPU stage {:.3} ms): {:.1} %",
        policy_ms / n,
        whole / n,
        gather_ms / n,
        request_ms / n,
        100.0 * policy_ms / whole.max(f64::MIN_POSITIVE)
    );
    println!(
        "GBDT inference alone on the survivors: p50 {:.1} µs, p99 {:.1} µs",
        pct(&infer, 0.5),
        pct(&infer, 0.99)
    );
    rt.block_on(engine.close());
    Ok(())
}
