//! The JSONL directory sink of `cascade generate --out DIR`, and events as API input.

use crate::world::WorldSink;
use anyhow::Context;
use cascade_core::{Event, EventIn, Item, Target, TimeInput, User};

use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes a world as `items.jsonl`, `users.jsonl` and `events.jsonl` (events in the
/// `POST /v1/events` form), the layout `cascade import --format jsonl` reads.
pub struct JsonlDirSink {
    pub(crate) dir: PathBuf,
    pub(crate) items: BufWriter<File>,
    pub(crate) users: BufWriter<File>,
    pub(crate) events: BufWriter<File>,
}

impl JsonlDirSink {
    /// Creates `dir` if needed and truncates the three files.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<BufWriter<File>> {
            let path = dir.join(name);
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            Ok(BufWriter::with_capacity(1 << 20, f))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            items: open("items.jsonl")?,
            users: open("users.jsonl")?,
            events: open("events.jsonl")?,
        })
    }

    /// Flushes the files; errors that dropping would swallow surface here.
    pub fn finish(mut self) -> anyhow::Result<()> {
        for (name, w) in [
            ("items.jsonl", &mut self.items),
            ("users.jsonl", &mut self.users),
            ("events.jsonl", &mut self.events),
        ] {
            w.flush()
                .with_context(|| format!("writing {}", self.dir.join(name).display()))?;
        }
        Ok(())
    }
}

pub(crate) fn write_line<T: Serialize>(w: &mut BufWriter<File>, v: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *w, v)?;
    w.write_all(b"\n")?;
    Ok(())
}

impl WorldSink for JsonlDirSink {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        for item in &batch {
            write_line(&mut self.items, item).context("writing items.jsonl")?;
        }
        Ok(())
    }

    fn users(&mut self, batch: Vec<User>) -> anyhow::Result<()> {
        for user in &batch {
            write_line(&mut self.users, user).context("writing users.jsonl")?;
        }
        Ok(())
    }

    fn events(&mut self, batch: Vec<Event>) -> anyhow::Result<()> {
        for e in batch {
            write_line(&mut self.events, &event_to_input(e)).context("writing events.jsonl")?;
        }
        Ok(())
    }
}

/// The API form of a stored event; `EventIn::into_event` turns it back into the same `Event`.
pub fn event_to_input(e: Event) -> EventIn {
    let (item_id, creator_id) = match e.target {
        Target::Item(i) => (Some(i), None),
        Target::Creator(c) => (None, Some(c)),
    };
    EventIn {
        kind: e.kind,
        user_id: e.user_id,
        item_id,
        creator_id,
        value: Some(exact_f64(e.value)),
        fraction: e.fraction.map(exact_f64),
        timestamp: Some(TimeInput(e.ts)),
        request_id: e.request_id,
        surface: e.surface,
        position: e.position,
        propensity: e.propensity.map(exact_f64),
        experiment: e.experiment,
    }
}

/// Widens an f32 for JSON without its binary noise (0.1 would print as 0.10000000149011612):
/// the shortest decimal form, kept only if it reads back to the very same f32.
pub(crate) fn exact_f64(v: f32) -> f64 {
    if v.fract() == 0.0 || !v.is_finite() {
        return f64::from(v);
    }
    match v.to_string().parse::<f64>() {
        Ok(d) if d as f32 == v => d,
        _ => f64::from(v),
    }
}
