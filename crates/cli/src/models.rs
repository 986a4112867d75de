//! `cascade models list|activate|rollback`: the model registry of a data dir, offline (the
//! server stopped: the engine is opened on the data dir and the same validation runs) or
//! through a running server's admin API (`--url`).

use crate::args::TargetArgs;
use anyhow::{Context, bail};

#[derive(clap::Args, Debug, Clone)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Action {
    /// Every bundle, oldest first; `*` marks the active one.
    List,
    /// Validate and activate a bundle.
    Activate { version: String },
    /// Activate the bundle that was active before the current one.
    Rollback,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let rt = crate::runtime()?;
    if let Some(url) = &args.target.url {
        return rt.block_on(remote(url, args.target.key.as_deref(), &args.action));
    }
    let Some(dir) = args.target.data_dir.clone() else {
        bail!("give --data-dir (server stopped) or --url (running server)")
    };
    let engine = crate::open_engine(&rt, dir, args.target.config.as_deref())?;
    let out = match &args.action {
        Action::List => {
            print_list(&serde_json::to_value(engine.list_models()?)?);
            Ok(())
        }
        Action::Activate { version } => rt
            .block_on(engine.activate(version))
            .map(|a| println!("{}", serde_json::json!(a)))
            .map_err(anyhow::Error::from),
        Action::Rollback => rt
            .block_on(engine.rollback())
            .map(|a| println!("{}", serde_json::json!(a)))
            .map_err(anyhow::Error::from),
    };
    rt.block_on(engine.close());
    out
}

fn print_list(models: &serde_json::Value) {
    for m in models.as_array().into_iter().flatten() {
        let mark = if m["active"] == true { "*" } else { " " };
        let ranker = m["metrics"]["ranker"]["valid_ndcg_at_10"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let recall = m["metrics"]["holdout_recall_at_10"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        println!(
            "{mark} {}  created {}  holdout recall@10 {recall}  ranker NDCG@10 {ranker}{}",
            m["version"].as_str().unwrap_or("?"),
            m["created_at"].as_str().unwrap_or("?"),
            m["error"]
                .as_str()
                .map(|e| format!("  (unreadable: {e})"))
                .unwrap_or_default()
        );
    }
}

async fn remote(url: &str, key: Option<&str>, action: &Action) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let req = match action {
        Action::List => client.get(format!("{base}/v1/admin/models")),
        Action::Activate { version } => {
            client.post(format!("{base}/v1/admin/models/{version}/activate"))
        }
        Action::Rollback => client.post(format!("{base}/v1/admin/models/rollback")),
    };
    let req = match key {
        Some(k) => req.bearer_auth(k),
        None => req,
    };
    let r = req.send().await.context("request")?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.context("response")?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body["error"]["message"].as_str().unwrap_or("?")
        );
    }
    match action {
        Action::List => print_list(&body["models"]),
        _ => println!("{body}"),
    }
    Ok(())
}
