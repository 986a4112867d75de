//! A [`WorldSink`] that appends straight to a data dir's event log (import and demo).

use crate::world::{Counts, WorldSink};
use cascade_core::{Event, Item, Mutation, User};
use cascade_storage::{DataDir, EventLog, LogOptions};
use std::path::Path;

/// Appends batches as log records; durable at every `SYNC_EVERY` records and at `finish`.
pub struct StoreSink {
    _dir: DataDir,
    log: EventLog,
    unsynced: usize,
    pub counts: Counts,
}

const SYNC_EVERY: usize = 64;

impl StoreSink {
    /// Takes the data dir's lock (so no server writes it meanwhile) and opens its log.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let dir = DataDir::open(path)?;
        let (log, _) = EventLog::open(LogOptions::new(dir.log_dir()), &mut |_| {})?;
        Ok(Self {
            _dir: dir,
            log,
            unsynced: 0,
            counts: Counts::default(),
        })
    }

    fn append(&mut self, m: Mutation) -> anyhow::Result<()> {
        self.log.roll_if_full()?;
        self.log.append(&m)?;
        self.unsynced += 1;
        if self.unsynced >= SYNC_EVERY {
            self.log.sync()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Makes everything durable and releases the data dir.
    pub fn finish(mut self) -> anyhow::Result<Counts> {
        self.log.sync()?;
        Ok(self.counts)
    }
}

impl WorldSink for StoreSink {
    fn items(&mut self, batch: Vec<Item>) -> anyhow::Result<()> {
        self.counts.items += batch.len() as u64;
        self.append(Mutation::UpsertItems(batch))
    }

    fn users(&mut self, batch: Vec<User>) -> anyhow::Result<()> {
        self.counts.users += batch.len() as u64;
        self.append(Mutation::UpsertUsers(batch))
    }

    fn events(&mut self, batch: Vec<Event>) -> anyhow::Result<()> {
        self.counts.events += batch.len() as u64;
        self.append(Mutation::Events(batch))
    }
}
