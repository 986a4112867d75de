//! `cascade bench memory`: the embedded state's memory for a synthetic world (default 1M
//! users × 1M items × 20M events), applied straight into a `State` as the server would, by
//! part, against a budget.

use cascade_core::{Event, Item, Mutation, User};
use cascade_features::State;
use cascade_features::state::StateConfig;
use cascade_worlds::world::WorldSink;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct MemArgs {
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    #[arg(long, default_value_t = 1_000_000)]
    users: usize,
    #[arg(long, default_value_t = 20_000_000)]
    events: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fail when the state's estimated heap exceeds this many MB.
    #[arg(long)]
    budget_mb: Option<u64>,
    /// Also write the state as a snapshot into this directory.
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Instead of generating, restore this snapshot (as a restarting server does) and
    /// measure that: exact-size allocations, one thread, no generator around.
    #[arg(long)]
    load: Option<std::path::PathBuf>,
}

struct StateSink(Arc<State>);

impl WorldSink for StateSink {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        self.0.apply(&Mutation::UpsertItems(batch));
        Ok(())
    }
    fn users(&mut self, batch: Vec<User>) -> anyhow::Result<()> {
        self.0.apply(&Mutation::UpsertUsers(batch));
        Ok(())
    }
    fn events(&mut self, batch: Vec<Event>) -> anyhow::Result<()> {
        self.0.apply(&Mutation::Events(batch));
        Ok(())
    }
}

pub fn run(a: MemArgs) -> anyhow::Result<()> {
    let rss0 = crate::ann::rss_bytes();
    let t = Instant::now();
    let state = Arc::new(State::with_segments(
        StateConfig::default(),
        vec!["locale".into(), "age_band".into()],
    ));
    let counts = match &a.load {
        Some(path) => {
            let snap = cascade_features::Snapshot::read(path)?;
            let keys = state.read().segment_keys.clone();
            let inner = snap
                .restore(StateConfig::default(), &keys)
                .map_err(anyhow::Error::msg)?
                .ok_or_else(|| anyhow::anyhow!("snapshot taken under other settings"))?;
            state.replace(inner);
            let g = state.read();
            cascade_worlds::world::Counts {
                items: g.items.len() as u64,
                users: g.users.len() as u64,
                events: g.events_applied,
            }
        }
        None => {
            let p = cascade_worlds::generate::GenerateParams::new(
                a.items,
                a.users,
                a.events,
                a.seed,
                cascade_core::time::now_millis(),
            );
            cascade_worlds::generate::generate(&p, &mut StateSink(state.clone()), true)?
        }
    };
    let built = t.elapsed();
    let rss1 = crate::ann::rss_bytes();
    if let Some(dir) = &a.save {
        let (path, bytes) = cascade_features::Snapshot::of(&state.read()).write(dir, 1)?;
        println!("snapshot {} ({:.1} MB)", path.display(), bytes as f64 / 1e6);
    }
    let g = state.read();
    let parts = g.memory();
    let total: usize = parts.iter().map(|p| p.1).sum();
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "{} items, {} users, {} events in {:.1}s",
        counts.items,
        counts.users,
        counts.events,
        built.as_secs_f64()
    );
    println!("| part | MB |");
    println!("|---|---|");
    for (name, bytes) in &parts {
        println!("| {name} | {:.1} |", mb(*bytes));
    }
    println!("| **total (estimated heap)** | **{:.1}** |", mb(total));
    let user_bytes: usize = parts
        .iter()
        .filter(|p| p.0.starts_with("user"))
        .map(|p| p.1)
        .sum();
    let item_bytes: usize = parts
        .iter()
        .filter(|p| p.0.starts_with("item") || p.0.starts_with("creators"))
        .map(|p| p.1)
        .sum();
    println!(
        "per user {:.0} B (mean over {}); per item {:.0} B; resident set {:.1} MB -> {:.1} MB",
        user_bytes as f64 / g.users.len().max(1) as f64,
        g.users.len(),
        item_bytes as f64 / g.items.len().max(1) as f64,
        mb(rss0),
        mb(rss1)
    );
    let longest = g
        .user_states
        .iter()
        .map(|u| u.heap_bytes())
        .max()
        .unwrap_or(0);
    println!("largest single user: {longest} B");
    if let Some(b) = a.budget_mb {
        anyhow::ensure!(
            mb(total) <= b as f64,
            "state {:.1} MB exceeds the budget of {b} MB",
            mb(total)
        );
    }
    Ok(())
}
