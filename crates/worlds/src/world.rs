//! Where generated or imported data goes: a JSONL directory or the data dir's event log.

use cascade_core::{Event, Item, User};

/// Receives a world in batches. Implementations: [`crate::generate::JsonlDirSink`] (for
/// `cascade generate --out DIR`) and the store sink (for `import` and `demo`).
pub trait WorldSink {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()>;
    fn users(&mut self, batch: Vec<User>) -> anyhow::Result<()>;
    fn events(&mut self, batch: Vec<Event>) -> anyhow::Result<()>;
}

/// What a generator or importer wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub items: u64,
    pub users: u64,
    pub events: u64,
}

/// Collects everything in memory: for tests of generators and importers, and of what runs on
/// a world small enough to hold.
#[derive(Debug, Default)]
pub struct VecSink {
    pub items: Vec<Item>,
    pub users: Vec<User>,
    pub events: Vec<Event>,
}

impl WorldSink for VecSink {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        self.items.extend(batch);
        Ok(())
    }

    fn users(&mut self, batch: Vec<User>) -> anyhow::Result<()> {
        self.users.extend(batch);
        Ok(())
    }

    fn events(&mut self, batch: Vec<Event>) -> anyhow::Result<()> {
        self.events.extend(batch);
        Ok(())
    }
}
