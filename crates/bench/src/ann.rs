//! `cascade bench ann`: the HNSW index on clustered vectors — recall@10 against the exact
//! inner-product top 10, single-thread queries per second at several `ef`, build time and
//! memory. Built with `--features usearch` or `--features hnsw-rs`, the same run measures
//! those crates on the same vectors (what the index was chosen against).

use anyhow::bail;
use cascade_core::Idx;
use cascade_index::als::dot;
use cascade_index::{AnnConfig, AnnIndex, Quantization};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct AnnArgs {
    /// Vectors indexed.
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Gaussian clusters the vectors are drawn around (taste groups).
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// Queries timed (and checked against the exact scan).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Search beam widths to sweep, comma-separated.
    #[arg(long, default_value = "32,64,128,256,512")]
    ef: String,
    /// Graph degree `M`.
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Stored precision: f16 (what serving uses) or f32.
    #[arg(long, default_value = "f16")]
    quantization: String,
    /// Comma-separated: `cascade` (the serving index), `usearch` and `hnsw_rs` (when built
    /// with the features of those names).
    #[arg(long, default_value = "cascade")]
    engine: String,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print one JSON object per engine instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the vectors, queries and exact top 10 here (raw little-endian arrays and
    /// `meta.json`), for `bench/peer_hnswlib.py` to index the very same data.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
    /// Cascade's index: load it from this file when it exists (same `--n`, `--seed`, `--m`),
    /// else build it and save it there — for timing search changes without rebuilding.
    #[arg(long)]
    index_file: Option<std::path::PathBuf>,
    /// Passes over the queries per `ef`; the fastest pass is reported (this shared machine's
    /// noise only ever slows a pass down).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

fn dump(
    dir: &std::path::Path,
    args: &AnnArgs,
    base: &[f32],
    queries: &[f32],
    truth: &[Vec<Idx>],
) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, bytes: &mut dyn Iterator<Item = [u8; 4]>| -> anyhow::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for b in bytes {
            f.write_all(&b)?;
        }
        f.flush()?;
        Ok(())
    };
    write("base.f32", &mut base.iter().map(|x| x.to_le_bytes()))?;
    write("queries.f32", &mut queries.iter().map(|x| x.to_le_bytes()))?;
    write(
        "truth.u32",
        &mut truth.iter().flatten().map(|x| x.to_le_bytes()),
    )?;
    let meta = serde_json::json!({"n": args.n, "dim": args.dim, "queries": args.queries,
        "clusters": args.clusters, "seed": args.seed});
    std::fs::write(dir.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Point {
    ef: usize,
    recall_at_10: f64,
    qps: f64,
    p50_us: f64,
    p99_us: f64,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    engine: String,
    n: usize,
    dim: usize,
    m: usize,
    ef_construction: usize,
    quantization: String,
    build_threads: usize,
    build_s: f64,
    raw_vector_bytes: usize,
    index_bytes: usize,
    rss_growth_bytes: usize,
    ground_truth_s: f64,
    points: Vec<Point>,
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A standard normal sample (Box–Muller).
fn gauss(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Clustered vectors shaped like trained item factors: a cluster centre plus noise, with a
/// log-normal norm (popular items have longer vectors), generated in parallel but seeded.
fn vectors(n: usize, dim: usize, centres: &[f32], seed: u64) -> Vec<f32> {
    let k = centres.len() / dim;
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(dim * 4096)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(
                seed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            for v in chunk.chunks_exact_mut(dim) {
                let ctr = &centres[rng.random_range(0..k) * dim..][..dim];
                let s = (0.25 * gauss(&mut rng)).exp();
                for (x, c) in v.iter_mut().zip(ctr) {
                    *x = s * (c + 0.6 * gauss(&mut rng));
                }
            }
        });
    out
}

/// Exact top 10 by inner product for every query (rayon over queries).
fn ground_truth(base: &[f32], dim: usize, queries: &[f32]) -> Vec<Vec<Idx>> {
    queries
        .par_chunks_exact(dim)
        .map(|q| {
            let mut top: Vec<(f32, Idx)> = Vec::with_capacity(11);
            let mut floor = f32::NEG_INFINITY;
            for (i, v) in base.chunks_exact(dim).enumerate() {
                let s = dot(q, v);
                if top.len() < 10 || s > floor {
                    let p = top.partition_point(|&(t, _)| t >= s);
                    top.insert(p, (s, i as Idx));
                    top.truncate(10);
                    if top.len() == 10 {
                        floor = top[9].0;
                    }
                }
            }
            top.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

fn recall(got: &[Idx], want: &[Idx]) -> usize {
    got.iter().filter(|i| want.contains(i)).count()
}

/// Times `search` over every query, single-threaded.
fn sweep(
    queries: &[f32],
    dim: usize,
    truth: &[Vec<Idx>],
    ef: usize,
    repeat: usize,
    mut search: impl FnMut(&[f32]) -> Vec<Idx>,
) -> anyhow::Result<Point> {
    // Warm the caches with a few queries first.
    for q in queries.chunks_exact(dim).take(20) {
        let _ = search(q);
    }
    let mut best: Option<(f64, usize, hdrhistogram::Histogram<u64>)> = None;
    for _ in 0..repeat.max(1) {
        let mut lat = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut hits = 0;
        let t = Instant::now();
        for (q, want) in queries.chunks_exact(dim).zip(truth) {
            let s = Instant::now();
            let got = search(q);
            let _ = lat.record(s.elapsed().as_nanos() as u64);
            hits += recall(&got, want);
        }
        let secs = t.elapsed().as_secs_f64();
        if best.as_ref().is_none_or(|b| secs < b.0) {
            best = Some((secs, hits, lat));
        }
    }
    let Some((secs, hits, lat)) = best else {
        bail!("no pass ran");
    };
    Ok(Point {
        ef,
        recall_at_10: hits as f64 / (10 * truth.len()) as f64,
        qps: truth.len() as f64 / secs,
        p50_us: lat.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: lat.value_at_quantile(0.99) as f64 / 1e3,
    })
}

pub fn run(args: AnnArgs) -> anyhow::Result<()> {
    let efs: Vec<usize> = args
        .ef
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let quantization = match args.quantization.as_str() {
        "f32" => Quantization::F32,
        "f16" => Quantization::F16,
        q => bail!("--quantization: {q:?} is not f32 or f16"),
    };
    let engines: Vec<&str> = args.engine.split(',').map(str::trim).collect();
    for e in &engines {
        match *e {
            "cascade" => {}
            "usearch" if cfg!(feature = "usearch") => {}
            "hnsw_rs" if cfg!(feature = "hnsw-rs") => {}
            "usearch" | "hnsw_rs" => bail!(
                "--engine {e} needs a build with `--features {}`",
                if *e == "usearch" {
                    "usearch"
                } else {
                    "hnsw-rs"
                }
            ),
            e => bail!("--engine: {e:?} is not cascade, usearch or hnsw_rs"),
        }
    }
    let dim = args.dim;
    let t = Instant::now();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed);
    let centres: Vec<f32> = (0..args.clusters.max(1) * dim)
        .map(|_| gauss(&mut rng))
        .collect();
    let base = vectors(args.n, dim, &centres, args.seed + 1);
    let queries = vectors(args.queries, dim, &centres, args.seed + 2);
    eprintln!(
        "generated {} × {dim} vectors in {:.1}s; exact top 10 of {} queries...",
        args.n,
        t.elapsed().as_secs_f64(),
        args.queries
    );
    let t = Instant::now();
    let truth = ground_truth(&base, dim, &queries);
    let ground_truth_s = t.elapsed().as_secs_f64();
    if let Some(d) = &args.dump {
        dump(d, &args, &base, &queries, &truth)?;
    }
    let raw = args.n * dim * 4;
    let mut reports = Vec::new();
    for engine in engines {
        let rss0 = rss_bytes();
        let t = Instant::now();
        let threads = rayon::current_num_threads();
        eprintln!("{engine}: building over {threads} threads...");
        #[cfg(any(feature = "hnsw-rs", feature = "usearch"))]
        let peer = PeerRun {
            base: &base,
            dim,
            args: &args,
            queries: &queries,
            truth: &truth,
            efs: &efs,
            t,
            rss0,
        };
        let (index_bytes, rss_growth, build_s, points) = match engine {
            "cascade" => {
                let cfg = AnnConfig {
                    connectivity: args.m,
                    expansion_add: args.ef_construction,
                    expansion_search: 64,
                    quantization,
                    headroom: 0.0,
                };
                let mut ann = match &args.index_file {
                    Some(f) if f.exists() => {
                        eprintln!("  loading {}", f.display());
                        AnnIndex::load(f, cfg)?
                    }
                    _ => AnnIndex::build(
                        &base,
                        dim,
                        cfg,
                        |_| true,
                        |i| {
                            if i > 0 {
                                eprintln!("  {i} linked");
                            }
                        },
                    )?,
                };
                if let Some(f) = args.index_file.as_ref().filter(|f| !f.exists()) {
                    ann.save(f)?;
                }
                let build_s = t.elapsed().as_secs_f64();
                // Measured while the index is alive (it is dropped at the end of this arm).
                let rss_growth = rss_bytes().saturating_sub(rss0);
                let bytes = ann.memory_bytes();
                let mut points = Vec::new();
                for &ef in &efs {
                    ann.set_expansion_search(ef);
                    points.push(sweep(&queries, dim, &truth, ef, args.repeat, |q| {
                        ann.search(q, 10)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(i, _)| i)
                            .collect()
                    })?);
                }
                (bytes, rss_growth, build_s, points)
            }
            #[cfg(feature = "usearch")]
            "usearch" => usearch_run(&peer, quantization)?,
            #[cfg(feature = "hnsw-rs")]
            "hnsw_rs" => hnsw_rs_run(&peer)?,
            _ => bail!("engine {engine} is not built in"),
        };
        let r = Report {
            engine: engine.into(),
            n: args.n,
            dim,
            m: args.m,
            ef_construction: args.ef_construction,
            quantization: args.quantization.clone(),
            build_threads: threads,
            build_s,
            raw_vector_bytes: raw,
            index_bytes,
            rss_growth_bytes: rss_growth,
            ground_truth_s,
            points,
        };
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{} n={} dim={} M={} efC={} {}: build {:.1}s on {} threads; index {:.0} MB = {:.2}× raw f32 vectors ({:.0} MB); RSS +{:.0} MB = {:.2}× raw",
                r.engine,
                r.n,
                r.dim,
                r.m,
                r.ef_construction,
                r.quantization,
                r.build_s,
                r.build_threads,
                r.index_bytes as f64 / 1e6,
                r.index_bytes as f64 / raw as f64,
                raw as f64 / 1e6,
                rss_growth as f64 / 1e6,
                rss_growth as f64 / raw as f64
            );
            println!("| ef | recall@10 | QPS (1 thread) | p50 µs | p99 µs |");
            println!("|---|---|---|---|---|");
            for p in &r.points {
                println!(
                    "| {} | {:.4} | {:.0} | {:.1} | {:.1} |",
                    p.ef, p.recall_at_10, p.qps, p.p50_us, p.p99_us
                );
            }
        }
        reports.push(r);
    }
    Ok(())
}

/// Inner product as a non-negative distance for `hnsw_rs` (its `DistDot` assumes unit
/// vectors): `bound − a·b`, with `bound` above any product in the data.
#[cfg(feature = "hnsw-rs")]
#[derive(Clone, Copy)]
struct ShiftedDot(f32);

#[cfg(feature = "hnsw-rs")]
impl anndists::dist::Distance<f32> for ShiftedDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.0 - dot(a, b)).max(0.0)
    }
}

/// What a peer engine's run is given: the vectors, the queries with their exact answers, the
/// `ef` values to sweep, when the build started and the resident memory before it.
#[cfg(any(feature = "hnsw-rs", feature = "usearch"))]
struct PeerRun<'a> {
    base: &'a [f32],
    dim: usize,
    args: &'a AnnArgs,
    queries: &'a [f32],
    truth: &'a [Vec<Idx>],
    efs: &'a [usize],
    t: Instant,
    rss0: usize,
}

#[cfg(any(feature = "hnsw-rs", feature = "usearch"))]
impl<'a> PeerRun<'a> {
    #[allow(clippy::type_complexity)] // the run's inputs, unpacked where they are used
    fn parts(
        &self,
    ) -> (
        &'a [f32],
        usize,
        &'a AnnArgs,
        &'a [f32],
        &'a [Vec<Idx>],
        &'a [usize],
        Instant,
        usize,
    ) {
        (
            self.base,
            self.dim,
            self.args,
            self.queries,
            self.truth,
            self.efs,
            self.t,
            self.rss0,
        )
    }
}

#[cfg(feature = "hnsw-rs")]
fn hnsw_rs_run(run: &PeerRun<'_>) -> anyhow::Result<(usize, usize, f64, Vec<Point>)> {
    let (base, dim, args, queries, truth, efs, t, rss0) = run.parts();
    let max_norm = base
        .par_chunks_exact(dim)
        .chain(queries.par_chunks_exact(dim))
        .map(|v| dot(v, v).sqrt())
        .reduce(|| 0.0, f32::max);
    let dist = ShiftedDot(max_norm * max_norm * 1.01 + 1.0);
    let hnsw =
        hnsw_rs::hnsw::Hnsw::<f32, ShiftedDot>::new(args.m, args.n, 16, args.ef_construction, dist);
    let data: Vec<(&[f32], usize)> = base
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    for chunk in data.chunks(100_000) {
        hnsw.parallel_insert_slice(&chunk.to_vec());
    }
    let build_s = t.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(rss0);
    let mut hnsw = hnsw;
    hnsw.set_searching_mode(true);
    let mut points = Vec::new();
    for &ef in efs {
        points.push(sweep(queries, dim, truth, ef, args.repeat, |q| {
            hnsw.search(q, 10, ef)
                .into_iter()
                .map(|n| n.d_id as Idx)
                .collect()
        })?);
    }
    // hnsw_rs does not report its size; the RSS growth stands for it.
    Ok((rss_growth, rss_growth, build_s, points))
}

/// usearch (C++ through cxx), as serving used it before the index in `cascade_index::hnsw`.
#[cfg(feature = "usearch")]
fn usearch_run(
    run: &PeerRun<'_>,
    quantization: Quantization,
) -> anyhow::Result<(usize, usize, f64, Vec<Point>)> {
    let (base, dim, args, queries, truth, efs, t, rss0) = run.parts();
    use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
    let threads = rayon::current_num_threads();
    let index = Index::new(&IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: match quantization {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
        },
        connectivity: args.m,
        expansion_add: args.ef_construction,
        expansion_search: 64,
        multi: false,
    })?;
    index.reserve_capacity_and_threads(args.n, threads)?;
    base.par_chunks_exact(dim)
        .enumerate()
        .try_for_each(|(i, v)| index.add(i as u64, v))?;
    let build_s = t.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(rss0);
    eprintln!("  usearch kernels: {}", index.hardware_acceleration());
    let mut points = Vec::new();
    for &ef in efs {
        index.change_expansion_search(ef);
        points.push(sweep(queries, dim, truth, ef, args.repeat, |q| {
            index
                .search(q, 10)
                .map(|m| m.keys.iter().map(|&k| k as Idx).collect())
                .unwrap_or_default()
        })?);
    }
    Ok((index.memory_usage(), rss_growth, build_s, points))
}
