//! `cascade experiments [NAME]`: online metrics per arm, from a running server (`--url`) or
//! from a data dir (server stopped: the log is replayed, impressions and feedback included).

use crate::args::TargetArgs;
use anyhow::{Context, bail};

#[derive(clap::Args, Debug, Clone)]
pub struct ExperimentsArgs {
    /// The experiment; all of them when absent.
    pub name: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(args: ExperimentsArgs) -> anyhow::Result<()> {
    let rt = crate::runtime()?;
    let reports: Vec<serde_json::Value> = if let Some(url) = &args.target.url {
        rt.block_on(remote(
            url,
            args.target.key.as_deref(),
            args.name.as_deref(),
        ))?
    } else {
        let Some(dir) = args.target.data_dir.clone() else {
            bail!("give --data-dir (server stopped) or --url (running server)")
        };
        let engine = crate::open_engine(&rt, dir, args.target.config.as_deref())?;
        let names: Vec<String> = match &args.name {
            Some(n) => vec![n.clone()],
            None => engine
                .experiments
                .iter()
                .map(|x| x.config.name.clone())
                .collect(),
        };
        let out = names
            .iter()
            .map(|n| {
                engine
                    .experiment_report(n)
                    .with_context(|| format!("no experiment {n}"))
                    .and_then(|r| Ok(serde_json::to_value(r)?))
            })
            .collect::<anyhow::Result<Vec<_>>>();
        rt.block_on(engine.close());
        out?
    };
    for r in &reports {
        print(r);
    }
    Ok(())
}

fn print(r: &serde_json::Value) {
    println!(
        "experiment {} on {} (holdout {})",
        r["name"].as_str().unwrap_or("?"),
        r["surface"].as_str().unwrap_or("?"),
        r["holdout"]
    );
    let rate = |v: &serde_json::Value| {
        format!(
            "{:.4} [{:.4}, {:.4}]",
            v["value"].as_f64().unwrap_or(0.0),
            v["low"].as_f64().unwrap_or(0.0),
            v["high"].as_f64().unwrap_or(0.0)
        )
    };
    for a in r["arms"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} share {:.3}  model {}  requests {}  impressions {}  CTR {}  like {}  skip {}  watch s/imp {}",
            a["arm"].as_str().unwrap_or("?"),
            a["share"].as_f64().unwrap_or(0.0),
            a["model_version"].as_str().unwrap_or("?"),
            a["requests"],
            a["impressions"],
            rate(&a["ctr"]),
            rate(&a["like_rate"]),
            rate(&a["skip_rate"]),
            rate(&a["watch_seconds_per_impression"]),
        );
        if let Some(m) = a["offline_metrics"]["ranker"]["valid_ndcg_at_10"].as_f64() {
            println!("               offline: ranker NDCG@10 {m:.4}");
        }
    }
}

async fn remote(
    url: &str,
    key: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let client = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let get = |path: String| {
        let r = client.get(format!("{base}{path}"));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    };
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => {
            let v: serde_json::Value = get("/v1/admin/experiments".into())
                .send()
                .await?
                .json()
                .await?;
            v["experiments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        }
    };
    let mut out = Vec::new();
    for n in names {
        let r = get(format!("/v1/admin/experiments/{n}")).send().await?;
        let status = r.status();
        let v: serde_json::Value = r.json().await?;
        if !status.is_success() {
            bail!(
                "{status}: {}",
                v["error"]["message"].as_str().unwrap_or("?")
            );
        }
        out.push(v);
    }
    Ok(out)
}
