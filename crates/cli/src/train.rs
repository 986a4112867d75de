//! `cascade train`: replays a data dir's log, runs `cascade-training`'s run (artifacts,
//! ranker, gate, registry) with a progress bar per stage, and prints what it made.

use cascade_server::Config;
use cascade_training::TrainOptions;
use cascade_training::run::{RunOptions, RunOutcome, train_and_save};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// One bar per stage, created as stages start.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    visible: bool,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            visible: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, stage: &str, done: u64, total: u64) {
        let mut bars = self.bars.lock();
        let bar = bars.entry(stage.to_string()).or_insert_with(|| {
            if !self.visible {
                eprintln!("train: {stage}");
                return ProgressBar::hidden();
            }
            let pb = self.multi.add(ProgressBar::new(total.max(1)));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {elapsed}")
            {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_prefix(stage.to_string());
            pb
        });
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    }
}

pub fn run(
    cfg: &Config,
    holdout_users: usize,
    json: bool,
    export_lists: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let t = Instant::now();
    let replayed = cascade_runtime::replay(cfg)?;
    let replay_s = t.elapsed().as_secs_f64();
    let bars = Bars::new();
    let opts = RunOptions {
        train: TrainOptions { holdout_users },
        export_lists,
        force,
    };
    let models_dir = cascade_index::bundle::models_dir(&cfg.data_dir);
    let RunOutcome {
        bundle,
        path,
        promoted,
        gate_skipped,
    } = train_and_save(
        &replayed.state,
        &replayed.dir.log_dir(),
        &models_dir,
        cfg,
        &opts,
        &|s, d, n| bars.update(s, d, n),
    )?;
    if let Some(why) = gate_skipped {
        eprintln!("train: promotion gate skipped: {why}");
    }
    let m = &bundle.manifest;
    if let Some(g) = &m.metrics.gate {
        println!(
            "gate vs {}: window of {} users from {}: NDCG@10 candidate {:.4} / active {:.4}, Recall@10 {:.4} / {:.4} -> {}",
            g.active_version,
            g.window_users,
            g.window_start,
            g.candidate_ndcg_at_10,
            g.active_ndcg_at_10,
            g.candidate_recall_at_10,
            g.active_recall_at_10,
            if g.passed { "promoted" } else { "REFUSED" }
        );
    }
    if !promoted {
        anyhow::bail!(
            "bundle {} saved but not promoted: its NDCG@10 on the gate window is more than {:.0} % below the active bundle's; `cascade models activate {}` or `cascade train --force` promotes it anyway",
            m.version,
            cfg.models.gate.tolerance * 100.0,
            m.version
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    let x = &m.metrics;
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    println!("bundle {} written to {}", m.version, path.display());
    println!(
        "  data: {} users, {} items, {} interactions, {} events (replayed in {replay_s:.1}s)",
        m.data.users, m.data.items, m.data.interactions, m.data.events
    );
    println!(
        "  als {:.2}s ({} factors, {} iterations), co-visitation {:.2}s, hnsw {:.2}s ({} items, {:.1} MB), neighbours {:.2}s",
        x.als_seconds,
        m.params.als.factors,
        m.params.als.iterations,
        x.covis_seconds,
        x.ann_seconds,
        x.ann_items,
        x.ann_bytes as f64 / 1e6,
        x.neighbors_seconds
    );
    println!(
        "  hold-out recall@10 {} on {} users; hnsw recall@10 vs exact {}",
        opt(x.holdout_recall_at_10),
        x.holdout_users,
        opt(x.ann_recall_at_10)
    );
    if let Some(r) = &x.ranker {
        println!(
            "  ranker: {} lists ({} held out), {} rows, {} trees, {} features; NDCG@10 held out {} (pre-ranker {}); lists {:.1}s, trees {:.1}s",
            r.train_lists + r.valid_lists,
            r.valid_lists,
            r.rows,
            r.rounds,
            r.features.len(),
            opt(r.valid_ndcg_at_10),
            opt(r.prerank_valid_ndcg_at_10),
            r.candidates_seconds,
            r.gbdt_seconds
        );
    }
    println!("  total {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
