//! `cascade generate`: a deterministic synthetic world (items, users, events) with learnable structure.
//!
//! The world is built around a 16-dimensional taste space:
//! - every category has a centroid; an item's vector is its category centroid (plus half of a
//!   second category's, for some items) plus noise;
//! - a user's taste is a mixture of 1–3 favourite categories' centroids plus noise;
//! - affinity = sigmoid(5·taste·item − 2 + item quality (+ a bonus for followed creators)).
//!
//! Events come from sessions. Within a session the next item is often a continuation of the
//! previous one (a fixed "related" item, the creator's next item, or a popular item of the same
//! category), otherwise a fresh pick: a category from the user's favourites or taste, then an
//! item by Zipf popularity within it. Each exposure turns into impression / click / view / watch /
//! like / share / purchase / skip / hide / follow events according to the affinity.
//!
//! Scale: item attributes are derived from hash(seed, index) whenever needed instead of being
//! stored, so the only per-item memory is a few `u32` index arrays; events are kept as a compact
//! 32-byte struct until they are sorted by time and materialized in batches.

mod catalog;
mod draw;
mod jsonl;
mod params;
mod sim;
#[cfg(test)]
mod tests;

pub use jsonl::{JsonlDirSink, event_to_input};
pub use params::GenerateParams;

use crate::world::{Counts, WorldSink};
use anyhow::bail;
use cascade_core::{Event, Item, User};
use catalog::*;
use draw::*;
use indicatif::{ProgressBar, ProgressStyle};
use params::*;
use rayon::prelude::*;
use sim::*;

/// Generates the world into `sink`: all items, then all users, then events sorted by time.
pub fn generate(
    p: &GenerateParams,
    sink: &mut dyn WorldSink,
    show_progress: bool,
) -> anyhow::Result<Counts> {
    check_params(p)?;
    let base = Base::new(p);
    let mut counts = Counts::default();

    // Items: streamed in batches; only the compact index arrays survive the phase.
    let pb = progress(show_progress, p.items as u64, "items");
    let mut cat_of: Vec<u32> = Vec::with_capacity(p.items);
    let mut creator_of: Vec<u32> = Vec::with_capacity(p.items);
    let mut popkey: Vec<f32> = Vec::with_capacity(p.items);
    for lo in (0..p.items).step_by(BATCH) {
        let hi = (lo + BATCH).min(p.items);
        let made: Vec<(Item, ItemCore)> = (lo..hi)
            .into_par_iter()
            .map(|i| {
                let core = base.item_core(i as u32);
                (base.make_item(i as u32, &core), core)
            })
            .collect();
        let mut batch = Vec::with_capacity(made.len());
        for (item, core) in made {
            cat_of.push(core.cat);
            creator_of.push(core.creator);
            popkey.push(core.popkey);
            batch.push(item);
        }
        counts.items += batch.len() as u64;
        sink.items(batch)?;
        pb.inc((hi - lo) as u64);
    }
    pb.finish_and_clear();
    let catalog = Catalog::build(&base, &cat_of, &creator_of, &popkey);
    drop((cat_of, creator_of, popkey));
    let sim = Sim {
        base: &base,
        cat: &catalog,
    };

    // Users.
    let pb = progress(show_progress, p.users as u64, "users");
    for lo in (0..p.users).step_by(BATCH) {
        let hi = (lo + BATCH).min(p.users);
        let batch: Vec<User> = (lo..hi)
            .into_par_iter()
            .map(|u| {
                let prof = sim.profile(u as u32);
                sim.make_user(u as u32, &prof)
            })
            .collect();
        counts.users += batch.len() as u64;
        sink.users(batch)?;
        pb.inc((hi - lo) as u64);
    }
    pb.finish_and_clear();

    // Event budgets: proportional to activity, rounded stochastically so the total matches.
    let activity: Vec<f64> = (0..p.users)
        .into_par_iter()
        .map(|u| base.activity(u as u32))
        .collect();
    // A sequential sum keeps the rounding below identical from run to run.
    let total_activity: f64 = activity.iter().sum();
    let budgets: Vec<u32> = activity
        .iter()
        .enumerate()
        .map(|(u, &a)| {
            if total_activity <= 0.0 {
                return 0;
            }
            let exact = p.events as f64 * a / total_activity;
            let frac = to_unit(hash(p.seed, S_BUDGET, u as u64));
            (exact + frac).floor() as u32
        })
        .collect();
    drop(activity);
    let total_budget: usize = budgets.iter().map(|&b| b as usize).sum();

    let pb = progress(show_progress, total_budget as u64, "events");
    let mut evs: Vec<Ev> = Vec::with_capacity(total_budget);
    for lo in (0..p.users).step_by(USER_CHUNK) {
        let hi = (lo + USER_CHUNK).min(p.users);
        let chunk: Vec<Vec<Ev>> = (lo..hi)
            .into_par_iter()
            .map(|u| sim.simulate(u as u32, budgets[u] as usize))
            .collect();
        for v in chunk {
            pb.inc(v.len() as u64);
            evs.extend(v);
        }
    }
    pb.finish_and_clear();
    drop(budgets);

    // (ts, user) is unique because each user's timestamps strictly increase, so the unstable
    // sort is deterministic.
    evs.par_sort_unstable_by(|a, b| a.ts.cmp(&b.ts).then(a.user.cmp(&b.user)));
    let pb = progress(show_progress, evs.len() as u64, "writing");
    for chunk in evs.chunks(BATCH) {
        let batch: Vec<Event> = chunk.par_iter().map(Ev::materialize).collect();
        counts.events += batch.len() as u64;
        sink.events(batch)?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(counts)
}

pub(crate) fn check_params(p: &GenerateParams) -> anyhow::Result<()> {
    if p.categories == 0 {
        bail!("--categories must be at least 1");
    }
    if p.categories > 100_000 {
        bail!("--categories must be at most 100000");
    }
    if p.days == 0 {
        bail!("--days must be at least 1");
    }
    if p.items > u32::MAX as usize - 1 || p.users > u32::MAX as usize - 1 {
        bail!("--items and --users must each be below {}", u32::MAX);
    }
    if p.events > u32::MAX as usize {
        bail!("--events must be at most {}", u32::MAX);
    }
    if p.start_ms() < 0 {
        bail!(
            "the generated period ({} days before the end time) must start after 1970",
            p.days
        );
    }
    if p.events > 0 && (p.items == 0 || p.users == 0) {
        bail!("events need at least one item and one user");
    }
    Ok(())
}

pub(crate) fn progress(show: bool, len: u64, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>8} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

// ---------------------------------------------------------------------------------------------
// Hashing and randomness
