//! `cascade drift`: the drift report as a table, worst signal first — from a running server
//! (`--url`: its live windows) or from a data dir (server stopped: the events logged after
//! the active bundle's training data, against its reference).

use crate::args::TargetArgs;
use anyhow::{Context, bail};
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct DriftArgs {
    /// The window in seconds (default: the server's `drift.window_s`; `--data-dir` reports
    /// the whole log after the bundle).
    #[arg(long)]
    pub window_s: Option<u64>,
    /// Print the report as JSON instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(args: DriftArgs) -> anyhow::Result<()> {
    let rt = crate::runtime()?;
    let report: Value = if let Some(url) = &args.target.url {
        rt.block_on(remote(url, args.target.key.as_deref(), args.window_s))?
    } else {
        let Some(dir) = args.target.data_dir.clone() else {
            bail!("give --data-dir (server stopped) or --url (running server)")
        };
        let engine = crate::open_engine(&rt, dir, args.target.config.as_deref())?;
        let out = (|| {
            let monitor = engine
                .drift
                .clone()
                .context("drift monitoring is off (drift.enabled = false)")?;
            let fed = engine.drift_from_log()?;
            eprintln!("drift: {fed} events logged after the active bundle's training data");
            let window = args.window_s.unwrap_or(engine.config.drift.retention_s);
            Ok::<_, anyhow::Error>(serde_json::to_value(monitor.report(Some(window)))?)
        })();
        rt.block_on(engine.close());
        out?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn print(r: &Value) {
    let reference = &r["reference"];
    println!(
        "reference: {} (model {}, {} signals); window: last {} s, {} observations, {} dropped; memory: windows {} B, join {} B",
        reference["source"].as_str().unwrap_or("?"),
        reference["model_version"].as_str().unwrap_or("?"),
        reference["signals"],
        r["window"]["seconds"],
        r["window"]["observed"],
        r["window"]["dropped"],
        r["window"]["memory_bytes"],
        r["window"]["join_bytes"],
    );
    println!(
        "{:<44} {:<4} {:>9} {:>8} {:<17} {:>9} {:>9}  moved most",
        "signal", "kind", "value", "alert at", "status", "reference", "window"
    );
    for s in r["signals"].as_array().into_iter().flatten() {
        let moved = match (s["reference_rate"].as_f64(), s["window_rate"].as_f64()) {
            (Some(a), Some(b)) => format!("rate {a:.4} -> {b:.4}"),
            _ => s["top_bins"]
                .as_array()
                .and_then(|b| b.first())
                .map(|b| {
                    format!(
                        "{} {:.3} -> {:.3}",
                        b["bin"].as_str().unwrap_or("?"),
                        b["reference"].as_f64().unwrap_or(0.0),
                        b["window"].as_f64().unwrap_or(0.0)
                    )
                })
                .unwrap_or_default(),
        };
        println!(
            "{:<44} {:<4} {:>9.4} {:>8.3} {:<17} {:>9} {:>9}  {moved}",
            s["name"].as_str().unwrap_or("?"),
            s["kind"].as_str().unwrap_or("?"),
            s["value"].as_f64().unwrap_or(0.0),
            s["alert_at"].as_f64().unwrap_or(0.0),
            s["status"].as_str().unwrap_or("?"),
            s["reference_count"],
            s["window_count"],
        );
    }
    let versions = r["versions"].as_array().into_iter().flatten();
    for v in versions {
        let f = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
        println!(
            "model {}{}: offline Recall@10 {} NDCG@10 {}; online {} requests, {} impressions, CTR {}, like rate {}",
            v["version"].as_str().unwrap_or("?"),
            if v["active"].as_bool() == Some(true) {
                " (active)"
            } else {
                ""
            },
            f(&v["offline_recall_at_10"]),
            f(&v["offline_ndcg_at_10"]),
            v["requests"],
            v["impressions"],
            f(&v["ctr"]),
            f(&v["like_rate"]),
        );
    }
}

async fn remote(url: &str, key: Option<&str>, window_s: Option<u64>) -> anyhow::Result<Value> {
    let mut req = reqwest::Client::new().get(format!(
        "{}/v1/admin/drift{}",
        url.trim_end_matches('/'),
        window_s.map_or(String::new(), |w| format!("?window_s={w}"))
    ));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.context("GET /v1/admin/drift")?;
    let status = resp.status();
    let body: Value = resp.json().await.context("reading the drift report")?;
    if !status.is_success() {
        bail!("GET /v1/admin/drift: {status}: {body}");
    }
    Ok(body)
}
