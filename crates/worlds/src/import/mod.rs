//! `cascade import`: reads MovieLens, CSV or JSONL directories into a world sink, in batches.
//!
//! PATH is always a directory. Files are streamed (memory stays bounded by one batch of 10,000
//! records per kind), items first, then users, then events, and every record is validated like
//! the HTTP API does (`Item::validate`, `User::validate`, `EventIn::into_event`). A bad record
//! stops the import with an error naming the file, the line and the field.
//!
//! - `movielens`: `items.csv` (`item_id,title,genres`, genres `|`-separated), `ratings.csv`
//!   (`user_id,item_id,rating,timestamp`, Unix seconds) and optionally `users.csv`
//!   (`user_id,gender,age,occupation,zip`); `movieId`/`userId` headers are accepted too. Ids are
//!   kept as written. Genres become categories, a trailing `(YYYY)` in the title becomes the
//!   `year` attribute, and the users' columns become attributes (`age` as a number).
//!   Ratings map to events as follows:
//!   - rating ≥ 4 → `like`, rating < 4 → `view` (every rating is an implicit positive; the
//!     rating separates strong from weak ones);
//!   - `value` = the rating, usable as a weight;
//!   - timestamp = the rating's Unix seconds × 1000; target = the item.
//!
//!   Items get `created_at` = 978300760000 (2000-12-31T22:12:40Z, the first rating of ML-1M):
//!   MovieLens has no release instant, and leaving it empty would stamp the import time, which
//!   would make every movie appear newer than all of its ratings.
//! - `csv`: any of `items.csv` (`id,title,categories,tags,creator_id,created_at,hidden,mature`;
//!   categories and tags `|`-separated; `created_at` RFC 3339, Unix seconds or empty),
//!   `users.csv` (`id,follows`, follows `|`-separated) and `events.csv`
//!   (`type,user_id,item_id,creator_id,value,fraction,timestamp`, plus optional `request_id`,
//!   `surface`, `position`; empty cells are absent). Only `id` (items, users) and `type`,
//!   `user_id` (events) are required columns. Other columns of items.csv and users.csv become
//!   string attributes; an unknown column in events.csv is an error.
//! - `jsonl`: any of `items.jsonl`, `users.jsonl`, `events.jsonl`, one JSON object per line
//!   (the API bodies; exactly what `cascade generate --out` writes).
//!
//! Events are passed on in file order; nothing is sorted (that would need the whole file).

mod csv_files;
mod jsonl;
mod movielens;
mod plumbing;
#[cfg(test)]
mod tests;

pub use movielens::{movielens_item, rating_event};

use crate::world::{Counts, WorldSink};
use anyhow::{Context, bail};
use cascade_core::time::now_millis;
use cascade_core::{EventIn, Item, User};
use csv_files::*;
use jsonl::*;
use movielens::*;
use plumbing::*;
use std::path::{Path, PathBuf};

/// Input layout of `cascade import`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MovieLens as CSV: items.csv, ratings.csv, optional users.csv.
    Movielens,
    /// items.csv, users.csv, events.csv with Cascade's columns.
    Csv,
    /// items.jsonl, users.jsonl, events.jsonl with the API's JSON bodies.
    Jsonl,
}

/// Imports the directory `path` in `format` into `sink`.
pub fn import(
    format: Format,
    path: &Path,
    sink: &mut dyn WorldSink,
    show_progress: bool,
) -> anyhow::Result<Counts> {
    if !path.is_dir() {
        bail!(
            "{} is not a directory (import reads a directory of files)",
            path.display()
        );
    }
    let names: [&str; 3] = match format {
        Format::Movielens => ["items.csv", "users.csv", "ratings.csv"],
        Format::Csv => ["items.csv", "users.csv", "events.csv"],
        Format::Jsonl => ["items.jsonl", "users.jsonl", "events.jsonl"],
    };
    let files: Vec<Option<PathBuf>> = names
        .iter()
        .map(|n| {
            let f = path.join(n);
            f.is_file().then_some(f)
        })
        .collect();
    if format == Format::Movielens {
        for (i, n) in [(0, "items.csv"), (2, "ratings.csv")] {
            if files[i].is_none() {
                bail!(
                    "{} has no {n} (MovieLens needs items.csv and ratings.csv)",
                    path.display()
                );
            }
        }
    }
    if files.iter().all(Option::is_none) {
        bail!("{} holds none of {}", path.display(), names.join(", "));
    }
    let mut total_bytes = 0u64;
    for f in files.iter().flatten() {
        total_bytes += std::fs::metadata(f)
            .with_context(|| format!("reading {}", f.display()))?
            .len();
    }
    let pb = bytes_bar(show_progress, total_bytes);
    let now = now_millis();
    let mut out = Batcher::new(sink);
    for (kind, file) in files.iter().enumerate() {
        let Some(file) = file else { continue };
        match (format, kind) {
            (Format::Movielens, 0) => movielens_items(Csv::open(file, &pb)?, now, &mut out)?,
            (Format::Movielens, 1) => movielens_users(Csv::open(file, &pb)?, &mut out)?,
            (Format::Movielens, _) => movielens_ratings(Csv::open(file, &pb)?, now, &mut out)?,
            (Format::Csv, 0) => csv_items(Csv::open(file, &pb)?, now, &mut out)?,
            (Format::Csv, 1) => csv_users(Csv::open(file, &pb)?, &mut out)?,
            (Format::Csv, _) => csv_events(Csv::open(file, &pb)?, now, &mut out)?,
            (Format::Jsonl, 0) => read_jsonl(file, &pb, |mut item: Item, line| {
                item.validate(now).map_err(|e| invalid(file, line, &e))?;
                out.item(item)
            })?,
            (Format::Jsonl, 1) => read_jsonl(file, &pb, |user: User, line| {
                user.validate().map_err(|e| invalid(file, line, &e))?;
                out.user(user)
            })?,
            (Format::Jsonl, _) => read_jsonl(file, &pb, |e: EventIn, line| {
                let ev = e.into_event(now).map_err(|e| invalid(file, line, &e))?;
                out.event(ev)
            })?,
        }
        // Everything of one kind reaches the sink before the next kind starts.
        out.flush()?;
    }
    pb.finish_and_clear();
    Ok(out.counts)
}
