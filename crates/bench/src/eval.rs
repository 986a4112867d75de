//! `cascade eval`: the offline protocol of `../shared/eval-protocol.md`, run through the same
//! engine, pipelines and components that serve requests.
//!
//! The train split is written to a fresh data dir and replayed by `Engine::open`, exactly as a
//! server starts. Each evaluated row is a surface: every candidate source alone, the union of
//! the sources at the candidate budget (the ceiling a ranker can reach), and the full serving
//! pipeline of `home`. Users are asked at one instant just after the last train event, so
//! features see all of train and none of test.

use anyhow::{Context, bail};
use cascade_core::{Event, Item, Millis, TimeInput};
use cascade_server::{Config, Engine};
use cascade_sources::EmbeddingConfig;
use cascade_surfaces::{SourceConfig, SourceKind, SurfaceConfig};
use cascade_worlds::import::{movielens_item, rating_event};
use cascade_worlds::store::StoreSink;
use cascade_worlds::world::WorldSink;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Directory written by `get-movielens` (split/train.csv, split/test.csv, items.csv).
    #[arg(long)]
    dataset: PathBuf,
    /// Serving configuration to evaluate (default: the built-in one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// TOML file of minimum metrics (`[[targets]] row, metric, min`); exit non-zero on a miss.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Candidate budget of the union row.
    #[arg(long, default_value_t = 500)]
    budget: usize,
    /// When each user is asked: `global` (one time just after the newest train rating),
    /// `replay` (each user 1 s after their own last train rating: what live serving faces,
    /// nothing after "now" exists), or `both`. Replay rows are named `ROW@replay`.
    #[arg(long, value_enum, default_value_t = Clock::Both)]
    clock: Clock,
}

/// The clock of an evaluation (see [`EvalArgs::clock`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Global,
    Replay,
    Both,
}

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub row: String,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
struct Results {
    dataset: String,
    users: usize,
    catalog: usize,
    train_events: usize,
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Targets {
    targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    row: String,
    metric: String,
    min: f64,
}

struct Rating {
    user: String,
    item: String,
    stars: f64,
    ts: i64,
}

fn read_ratings(path: &Path) -> anyhow::Result<Vec<Rating>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{} line {}", path.display(), i + 2))?;
        let field = |k: usize| {
            rec.get(k)
                .with_context(|| format!("{} line {}: column {k}", path.display(), i + 2))
        };
        out.push(Rating {
            user: field(0)?.to_string(),
            item: field(1)?.to_string(),
            stars: field(2)?
                .parse()
                .with_context(|| format!("{} line {}: rating", path.display(), i + 2))?,
            ts: field(3)?
                .parse()
                .with_context(|| format!("{} line {}: timestamp", path.display(), i + 2))?,
        });
    }
    Ok(out)
}

/// Writes the catalog (items occurring in train) and the train events into `dir`'s log.
fn load_train(dataset: &Path, dir: &Path, train: &[Rating]) -> anyhow::Result<usize> {
    let in_train: HashSet<&str> = train.iter().map(|r| r.item.as_str()).collect();
    let mut items: Vec<Item> = Vec::new();
    let path = dataset.join("items.csv");
    let mut r =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let now = cascade_core::time::now_millis();
    for rec in r.records() {
        let rec = rec?;
        let (id, title, genres) = (
            rec.get(0).unwrap_or(""),
            rec.get(1).unwrap_or(""),
            rec.get(2).unwrap_or(""),
        );
        if in_train.contains(id) {
            let mut item = movielens_item(id, title, genres);
            item.validate(now)?;
            items.push(item);
        }
    }
    let catalog = items.len();
    let mut sink = StoreSink::open(dir)?;
    sink.items(items)?;
    for chunk in train.chunks(10_000) {
        let events: Vec<Event> = chunk
            .iter()
            .map(|r| {
                rating_event(&r.user, &r.item, r.stars, TimeInput(r.ts * 1000))
                    .into_event(i64::MAX / 4)
            })
            .collect::<Result<_, _>>()?;
        sink.events(events)?;
    }
    sink.finish()?;
    Ok(catalog)
}

/// Adds one evaluation surface per source, the union at `budget`, and `pipeline` (= `home`).
fn eval_surfaces(cfg: &mut Config, budget: usize) -> anyhow::Result<Vec<(String, usize)>> {
    let Some(home) = cfg.surfaces.get("home").cloned() else {
        bail!("the configuration has no `home` surface")
    };
    let quiet = |mut s: SurfaceConfig| {
        s.side_effects.clear();
        s
    };
    let mut rows = Vec::new();
    for src in &home.sources {
        let name = format!(
            "source_{}",
            serde_json::to_value(src.kind)?.as_str().unwrap_or("?")
        );
        let mut s = quiet(home.clone());
        s.sources = vec![SourceConfig {
            limit: src.limit.max(50),
            ..src.clone()
        }];
        s.hydrators.clear();
        s.heavy_ranker = false;
        s.prerank_keep = s.prerank_keep.max(src.limit.max(50));
        s.fallback = false;
        s.scorer.source_weights = BTreeMap::new();
        s.scorer.popularity = 0.0;
        s.scorer.category_affinity = 0.0;
        s.scorer.creator_affinity = 0.0;
        s.scorer.follows_creator = 0.0;
        if src.kind == SourceKind::Embedding {
            // The trained user vector alone (no blend with recent items): the row to hold
            // against implicit's ALS.
            let mut pure = s.clone();
            pure.sources[0].embedding = Some(EmbeddingConfig {
                recent_items: 0,
                recent_weight: 0.0,
            });
            cfg.surfaces.insert("als_user_vector".into(), pure);
            rows.push(("als_user_vector".into(), 50));
        }
        cfg.surfaces.insert(name.clone(), s);
        rows.push((name, 50));
    }
    let mut union = quiet(home.clone());
    union.sources = home
        .sources
        .iter()
        .map(|s| SourceConfig {
            limit: budget,
            ..s.clone()
        })
        .collect();
    union.candidate_budget = budget;
    union.prerank_keep = budget;
    union.heavy_ranker = false;
    union.fallback = false;
    let union_name = format!("union_{budget}");
    cfg.surfaces.insert(union_name.clone(), union);
    rows.push((union_name, budget));
    // Each ranking stage of `home` beside the one before it: retrieval scores alone (every
    // source weighted 1, no features), the pre-ranker, then the full cascade.
    let mut retrieval = quiet(home.clone());
    retrieval.heavy_ranker = false;
    retrieval.scorer.source_weights = home
        .sources
        .iter()
        .map(|s| {
            (
                serde_json::to_value(s.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                1.0,
            )
        })
        .collect();
    retrieval.scorer.popularity = 0.0;
    retrieval.scorer.category_affinity = 0.0;
    retrieval.scorer.creator_affinity = 0.0;
    retrieval.scorer.follows_creator = 0.0;
    cfg.surfaces.insert("pipeline_retrieval".into(), retrieval);
    rows.push(("pipeline_retrieval".into(), 50));
    let mut prerank = quiet(home.clone());
    prerank.heavy_ranker = false;
    cfg.surfaces.insert("pipeline_prerank".into(), prerank);
    rows.push(("pipeline_prerank".into(), 50));
    cfg.surfaces.insert("pipeline".into(), quiet(home));
    rows.push(("pipeline".into(), 50));
    cfg.server.max_n = cfg.server.max_n.max(budget);
    Ok(rows)
}

/// Per-user relevance and the metrics of one ranked list.
fn score_list(list: &[String], relevant: &HashSet<&str>, k_big: usize) -> [f64; 5] {
    let hits_at = |k: usize| {
        list.iter()
            .take(k)
            .filter(|i| relevant.contains(i.as_str()))
            .count() as f64
    };
    let n_rel = relevant.len().max(1) as f64;
    let dcg: f64 = list
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, i)| relevant.contains(i.as_str()))
        .map(|(r, _)| 1.0 / ((r + 2) as f64).log2())
        .sum();
    let idcg: f64 = (0..relevant.len().min(10))
        .map(|r| 1.0 / ((r + 2) as f64).log2())
        .sum();
    let h10 = hits_at(10);
    [
        h10 / n_rel,
        hits_at(50) / n_rel,
        if idcg > 0.0 { dcg / idcg } else { 0.0 },
        f64::from(u8::from(h10 > 0.0)),
        hits_at(k_big) / n_rel,
    ]
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let train = read_ratings(&args.dataset.join("split/train.csv"))?;
    let test = read_ratings(&args.dataset.join("split/test.csv"))?;
    let tmp = tempfile::Builder::new().prefix("cascade-eval-").tempdir()?;
    let catalog = load_train(&args.dataset, tmp.path(), &train)?;
    let now: Millis = train.iter().map(|r| r.ts).max().unwrap_or(0) * 1000 + 1000;
    let mut cfg = Config::load(args.config.as_deref())?;
    cfg.data_dir = tmp.path().to_path_buf();
    let rows_spec = eval_surfaces(&mut cfg, args.budget)?;
    eprintln!(
        "loaded {} train ratings, {} catalog items in {:.1}s",
        train.len(),
        catalog,
        t0.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = rt.block_on(Engine::open_async(cfg))?;
    // "train s": what building the serving models from the replayed state costs.
    let t = Instant::now();
    engine.rebuild_models();
    let train_s = t.elapsed().as_secs_f64();
    // The ranker trains from the log in the background after start; the cascade rows need it.
    let t = Instant::now();
    engine.wait_for_ranker();
    eprintln!(
        "ranker ready after another {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let mut relevant: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for r in &test {
        relevant
            .entry(r.user.as_str())
            .or_default()
            .insert(r.item.as_str());
    }
    let users: Vec<String> = relevant.keys().map(|u| (*u).to_string()).collect();
    // Replay: each user 1 s after their own last train rating.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for r in &train {
        let e = last.entry(r.user.as_str()).or_insert(r.ts);
        *e = (*e).max(r.ts);
    }
    let replay_now: Vec<Millis> = users
        .iter()
        .map(|u| last.get(u.as_str()).map_or(now, |&ts| ts * 1000 + 1000))
        .collect();
    let global_now = vec![now; users.len()];
    let clocks: Vec<(&str, &[Millis])> = match args.clock {
        Clock::Global => vec![("", &global_now)],
        Clock::Replay => vec![("@replay", &replay_now)],
        Clock::Both => vec![("", &global_now), ("@replay", &replay_now)],
    };
    let mut rows = Vec::new();
    for (suffix, nows) in &clocks {
        for (name, n) in &rows_spec {
            let t = Instant::now();
            let lists = rt.block_on(recommend_all(&engine, name, &users, *n, nows))?;
            let mut sums = [0f64; 5];
            let mut covered: HashSet<&str> = HashSet::new();
            for (user, list) in users.iter().zip(&lists) {
                let rel = relevant.get(user.as_str()).context("user")?;
                let m = score_list(list, rel, *n);
                for (s, v) in sums.iter_mut().zip(m) {
                    *s += v;
                }
                covered.extend(list.iter().take(10).map(String::as_str));
            }
            let u = users.len().max(1) as f64;
            let mut metrics = BTreeMap::new();
            metrics.insert("recall@10".into(), sums[0] / u);
            metrics.insert("recall@50".into(), sums[1] / u);
            metrics.insert("ndcg@10".into(), sums[2] / u);
            metrics.insert("hitrate@10".into(), sums[3] / u);
            metrics.insert(
                "coverage@10".into(),
                covered.len() as f64 / catalog.max(1) as f64,
            );
            if *n > 50 {
                metrics.insert(format!("recall@{n}"), sums[4] / u);
            }
            metrics.insert("train_s".into(), train_s);
            metrics.insert("eval_s".into(), t.elapsed().as_secs_f64());
            rows.push(Row {
                row: format!("{name}{suffix}"),
                metrics,
            });
        }
    }
    rt.block_on(engine.close());

    print_table(&rows);
    let results = Results {
        dataset: args.dataset.display().to_string(),
        users: users.len(),
        catalog,
        train_events: train.len(),
        rows,
    };
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.targets {
        check_targets(p, &results.rows)?;
    }
    Ok(())
}

async fn recommend_all(
    engine: &Arc<Engine>,
    surface: &str,
    users: &[String],
    n: usize,
    nows: &[Millis],
) -> anyhow::Result<Vec<Vec<String>>> {
    let pipeline = engine
        .pipelines
        .get(surface)
        .cloned()
        .with_context(|| format!("surface {surface}"))?;
    // Two workers keep both cores busy; each request is the serving pipeline end to end.
    let asked: Vec<(String, Millis)> = users.iter().cloned().zip(nows.iter().copied()).collect();
    let chunks: Vec<Vec<(String, Millis)>> = asked
        .chunks(asked.len().div_ceil(2).max(1))
        .map(<[(String, Millis)]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (engine, pipeline) = (engine.clone(), pipeline.clone());
        let surface = surface.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(chunk.len());
            for (user, now) in chunk {
                let q = cascade_pipeline::Query::new(&surface, &user, n, now);
                let r = engine.recommend(&pipeline, q).await;
                let g = engine.env.state.read();
                out.push(
                    r.items
                        .iter()
                        .map(|c| g.item_id(c.item).to_string())
                        .collect::<Vec<_>>(),
                );
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(users.len());
    for t in tasks {
        all.extend(t.await?);
    }
    Ok(all)
}

fn print_table(rows: &[Row]) {
    println!(
        "| row | Recall@10 | Recall@50 | NDCG@10 | HitRate@10 | Coverage@10 | Recall@budget | train s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let m = |k: &str| r.metrics.get(k).copied();
        let budget = r.metrics.iter().find(|(k, _)| {
            k.starts_with("recall@") && !["recall@10", "recall@50"].contains(&k.as_str())
        });
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.2} |",
            r.row,
            m("recall@10").unwrap_or(0.0),
            m("recall@50").unwrap_or(0.0),
            m("ndcg@10").unwrap_or(0.0),
            m("hitrate@10").unwrap_or(0.0),
            m("coverage@10").unwrap_or(0.0),
            budget.map_or("".to_string(), |(k, v)| format!("{v:.4} ({k})")),
            m("train_s").unwrap_or(0.0),
        );
    }
}

fn check_targets(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let targets: Targets =
        toml_from(&text).with_context(|| format!("parsing {}", path.display()))?;
    let by_row: HashMap<&str, &Row> = rows.iter().map(|r| (r.row.as_str(), r)).collect();
    let mut missed = Vec::new();
    for t in &targets.targets {
        let got = by_row
            .get(t.row.as_str())
            .and_then(|r| r.metrics.get(&t.metric))
            .copied();
        match got {
            Some(v) if v >= t.min => {
                println!("target met: {} {} = {v:.4} >= {}", t.row, t.metric, t.min)
            }
            Some(v) => missed.push(format!("{} {} = {v:.4} < {}", t.row, t.metric, t.min)),
            None => missed.push(format!("{} {} was not measured", t.row, t.metric)),
        }
    }
    if !missed.is_empty() {
        bail!("evaluation targets missed:\n  {}", missed.join("\n  "));
    }
    Ok(())
}

fn toml_from<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    use figment::providers::{Format, Toml};
    Ok(figment::Figment::from(Toml::string(text)).extract()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn metrics_follow_the_protocol() {
        let rel: HashSet<&str> = ["a", "b", "z"].into_iter().collect();
        // Hits at ranks 1 and 3; "z" never recommended but stays in the denominator.
        let m = score_list(&list(&["a", "x", "b", "y"]), &rel, 50);
        assert!((m[0] - 2.0 / 3.0).abs() < 1e-12, "recall@10 {}", m[0]);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((m[2] - dcg / idcg).abs() < 1e-12, "ndcg {}", m[2]);
        assert_eq!(m[3], 1.0);
        let miss = score_list(&list(&["x", "y"]), &rel, 50);
        assert_eq!(miss, [0.0; 5]);
    }

    #[test]
    fn missed_targets_fail_the_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "[[targets]]\nrow = \"r\"\nmetric = \"ndcg@10\"\nmin = 0.5\n",
        )
        .expect("write");
        let row = |v: f64| Row {
            row: "r".into(),
            metrics: [("ndcg@10".to_string(), v)].into_iter().collect(),
        };
        assert!(check_targets(&f, &[row(0.6)]).is_ok());
        let err = check_targets(&f, &[row(0.4)]).expect_err("missed");
        assert!(err.to_string().contains("0.4000 < 0.5"), "{err}");
        assert!(
            check_targets(&f, &[]).is_err(),
            "an unmeasured target is a miss"
        );
    }
}
