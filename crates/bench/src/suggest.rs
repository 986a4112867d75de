//! `cascade bench suggest`: the suggestion index at catalog scale (a generated catalog of
//! `--items` titles, in process: build time, keys, bytes per key, latency per query length),
//! and through HTTP over a data dir (`--data-dir`: client-side latency of random prefixes of
//! its titles against a real server on loopback).

use cascade_core::Item;
use cascade_suggest::{Entry, Kind, SuggestIndex};
use cascade_worlds::world::WorldSink;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct SuggestArgs {
    /// Titles of the generated catalog (in-process mode).
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Queries measured.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Serve this data dir and measure over HTTP instead.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Collects the generated catalog (no state, no events); its titles become entries after.
struct Entries {
    out: Vec<(Item, f32)>,
    categories: BTreeMap<String, f32>,
    creators: BTreeMap<String, f32>,
}

impl WorldSink for Entries {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        for it in batch {
            let i = self.out.len() as u32;
            // A heavy-tailed popularity (the generator's items carry none without events).
            let score = 1.0 / (1.0 + (mix(u64::from(i)) % 1_000_000) as f32 / 1000.0);
            for c in &it.categories {
                let s = self.categories.entry(c.clone()).or_default();
                *s = s.max(score);
            }
            if let Some(k) = &it.creator_id {
                let s = self.creators.entry(k.clone()).or_default();
                *s = s.max(score);
            }
            self.out.push((it, score));
        }
        Ok(())
    }
    fn users(&mut self, _: Vec<cascade_core::User>) -> anyhow::Result<()> {
        Ok(())
    }
    fn events(&mut self, _: Vec<cascade_core::Event>) -> anyhow::Result<()> {
        Ok(())
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A query a user might type: a random title's words from a random one on, cut after a
/// random number of characters, sometimes with a typo.
fn query(rng: &mut SmallRng, title: &str) -> String {
    let words: Vec<&str> = title.split_whitespace().collect();
    let from = rng.random_range(0..words.len().max(1));
    let rest: Vec<char> = words[from.min(words.len().saturating_sub(1))..]
        .join(" ")
        .chars()
        .collect();
    let len = rng.random_range(1..=rest.len().clamp(1, 16));
    let mut q: Vec<char> = rest[..len.min(rest.len())].to_vec();
    if q.len() >= 5 && rng.random_bool(0.2) {
        let at = rng.random_range(1..q.len());
        q[at] = 'x';
    }
    q.into_iter().collect()
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// p50 and p99 in milliseconds.
fn quantiles(h: &Histogram<u64>) -> (f64, f64) {
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

pub fn run(args: SuggestArgs) -> anyhow::Result<()> {
    match args.data_dir.clone() {
        Some(dir) => crate::runtime()?.block_on(http(args, dir)),
        None => in_process(&args),
    }
}

fn in_process(args: &SuggestArgs) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut sink = Entries {
        out: Vec::with_capacity(args.items),
        categories: BTreeMap::new(),
        creators: BTreeMap::new(),
    };
    let p = cascade_worlds::generate::GenerateParams::new(
        args.items,
        0,
        0,
        args.seed,
        cascade_core::time::now_millis(),
    );
    cascade_worlds::generate::generate(&p, &mut sink, false)?;
    let generated_s = t.elapsed().as_secs_f64();
    // Normalizing every title, in parallel as the runtime does at start.
    let t = Instant::now();
    let mut entries: Vec<Entry> = {
        use rayon::prelude::*;
        sink.out
            .par_iter()
            .enumerate()
            .map(|(i, (it, score))| Entry::new(Kind::Item, &it.id, &it.title, i as u32, *score))
            .collect()
    };
    drop(std::mem::take(&mut sink.out));
    for (k, (c, s)) in sink.categories.iter().enumerate() {
        entries.push(Entry::new(Kind::Category, c, c, k as u32, *s));
    }
    for (k, (c, s)) in sink.creators.iter().enumerate() {
        entries.push(Entry::new(Kind::Creator, c, c, k as u32, *s));
    }
    let titles: Vec<String> = entries
        .iter()
        .take(args.items)
        .map(|e| e.text.clone())
        .collect();
    let normalize_s = t.elapsed().as_secs_f64();
    eprintln!(
        "generated the catalog in {generated_s:.1}s, {} entries normalized in {normalize_s:.1}s; building the index...",
        entries.len(),
    );
    let rss0 = crate::ann::rss_bytes();
    let t = Instant::now();
    let index = SuggestIndex::build(entries);
    let build_s = t.elapsed().as_secs_f64();
    let rss = crate::ann::rss_bytes().saturating_sub(rss0);
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mut all = Histogram::<u64>::new(3)?;
    let mut by_len: BTreeMap<usize, Histogram<u64>> = BTreeMap::new();
    let mut found = 0usize;
    let mut slowest: Vec<(u64, String)> = Vec::new();
    for _ in 0..args.queries {
        let pick = rng.random_range(0..titles.len().max(1));
        let q = query(&mut rng, &titles[pick]);
        let t = Instant::now();
        let hits = index.search(&q, 10, &Kind::ALL, 0.0, &|_| Some(0.0));
        let us = t.elapsed().as_micros() as u64;
        found += usize::from(!hits.is_empty());
        all.record(us.max(1))?;
        slowest.push((us, q.clone()));
        let bucket = q.chars().count().min(12);
        by_len
            .entry(bucket)
            .or_insert_with(|| Histogram::new(3).expect("histogram"))
            .record(us.max(1))?;
    }
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    // The slowest again, 50 times each: whether their cost is the query's or a stall's.
    for (us, q) in slowest.iter().take(5) {
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(index.search(q, 10, &Kind::ALL, 0.0, &|_| Some(0.0)));
        }
        let again = t.elapsed().as_secs_f64() * 1e3 / 50.0;
        eprintln!(
            "slowest: {q:?} {:.3} ms (mean of 50 more: {again:.3} ms)",
            *us as f64 / 1000.0
        );
    }
    println!(
        "suggest index: {} entries normalized in {normalize_s:.2}s, {} keys, built in {:.2}s; FST + postings {:.1} bytes per key; index with entries {:.0} MB (RSS growth {:.0} MB)",
        index.entries().len(),
        index.keys(),
        build_s,
        index.bytes_per_key(),
        index.memory_bytes() as f64 / 1e6,
        rss as f64 / 1e6
    );
    let (p50, p99) = quantiles(&all);
    println!(
        "{} queries (one thread, in process), {} found something: p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms",
        args.queries,
        found,
        all.max() as f64 / 1000.0
    );
    println!("| query chars | queries | p50 ms | p99 ms |\n|---|---|---|---|");
    for (len, h) in &by_len {
        let (a, b) = quantiles(h);
        let label = if *len == 12 {
            "12+".to_string()
        } else {
            len.to_string()
        };
        println!("| {label} | {} | {a:.3} | {b:.3} |", h.len());
    }
    Ok(())
}

async fn http(args: SuggestArgs, dir: PathBuf) -> anyhow::Result<()> {
    let mut cfg = cascade_server::Config::load(None)?;
    cfg.data_dir = dir;
    // Suggestions read only the catalog: no model training competes with the measurement.
    cfg.models.ranker.enabled = false;
    cfg.models.embeddings = false;
    let (engine, base, stop, server) = crate::serve::start(cfg).await?;
    let titles: Vec<String> = {
        let g = engine.env.state.read();
        g.item_recs
            .iter()
            .flatten()
            .map(|r| r.title.to_string())
            .collect()
    };
    anyhow::ensure!(!titles.is_empty(), "the data dir holds no titled item");
    let client = reqwest::Client::new();
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mut client_h = Histogram::<u64>::new(3)?;
    let mut server_h = Histogram::<u64>::new(3)?;
    // Warm the connection and the index.
    let _ = client.get(format!("{base}/v1/suggest?q=a")).send().await?;
    for _ in 0..args.queries {
        let pick = rng.random_range(0..titles.len());
        let q = query(&mut rng, &titles[pick]);
        let t = Instant::now();
        let r = client
            .get(format!("{base}/v1/suggest?q={}", encode(&q)))
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        client_h.record((t.elapsed().as_micros() as u64).max(1))?;
        anyhow::ensure!(status.is_success(), "{q:?}: {status}");
        let query = cascade_runtime::suggest::SuggestQuery {
            q,
            n: 10,
            kinds: Kind::ALL.to_vec(),
            user_id: None,
            blocklist: None,
        };
        let t = Instant::now();
        let _ = engine.suggest(&query);
        server_h.record((t.elapsed().as_micros() as u64).max(1))?;
    }
    let (c50, c99) = quantiles(&client_h);
    let (s50, s99) = quantiles(&server_h);
    println!(
        "{} random prefixes over HTTP (one connection) on {} titles, {} keys: client p50 {c50:.3} ms, p99 {c99:.3} ms; the search alone p50 {s50:.3} ms, p99 {s99:.3} ms",
        args.queries,
        titles.len(),
        engine.suggestions.keys()
    );
    let _ = stop.send(());
    let _ = server.await;
    engine.close().await;
    Ok(())
}
