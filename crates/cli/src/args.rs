//! Argument groups several commands share, declared once.

use cascade_server::Config;
use std::path::PathBuf;

/// `--data-dir D [--config C]`: a data dir (the server stopped) and its configuration.
#[derive(clap::Args, Debug, Clone)]
pub struct DataDirArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl DataDirArgs {
    /// The configuration file (or defaults) with `data_dir` set from `--data-dir`.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        cfg.data_dir = self.data_dir.clone();
        Ok(cfg)
    }
}

/// Where a registry or experiments command acts: a data dir (server stopped) or a running
/// server's admin API.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Data dir (server stopped).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// A running server instead, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Admin key for `--url`.
    #[arg(long, global = true, env = "CASCADE_ADMIN_KEY")]
    pub key: Option<String>,
}

/// The size and seed of a generated world.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WorldArgs {
    #[arg(long, default_value_t = 50_000)]
    pub items: usize,
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl WorldArgs {
    /// Generator parameters for a world whose newest events are now.
    pub fn params(&self) -> cascade_worlds::generate::GenerateParams {
        cascade_worlds::generate::GenerateParams::new(
            self.items,
            self.users,
            self.events,
            self.seed,
            cascade_core::time::now_millis(),
        )
    }
}
