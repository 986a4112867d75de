//! What every format shares: batching into the sink, byte-counted reading for the progress
//! bar, and errors that name the file, the line and the field.

use crate::world::{Counts, WorldSink};
use anyhow::{Context, anyhow};
use cascade_core::{Event, FieldError, Item, Millis, User};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Records per sink call.
pub(crate) const BATCH: usize = 10_000;
/// `created_at` of MovieLens items: the first rating of ML-1M (see the module doc).
pub(crate) const MOVIELENS_START: Millis = 978_300_760_000;

/// Accumulates records and hands them to the sink in batches.
pub(crate) struct Batcher<'a> {
    pub(crate) sink: &'a mut dyn WorldSink,
    pub(crate) items: Vec<Item>,
    pub(crate) users: Vec<User>,
    pub(crate) events: Vec<Event>,
    pub(crate) counts: Counts,
}

impl<'a> Batcher<'a> {
    pub(crate) fn new(sink: &'a mut dyn WorldSink) -> Self {
        Self {
            sink,
            items: Vec::new(),
            users: Vec::new(),
            events: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub(crate) fn item(&mut self, item: Item) -> anyhow::Result<()> {
        self.items.push(item);
        self.counts.items += 1;
        if self.items.len() >= BATCH {
            self.sink.items(std::mem::take(&mut self.items))?;
        }
        Ok(())
    }

    pub(crate) fn user(&mut self, user: User) -> anyhow::Result<()> {
        self.users.push(user);
        self.counts.users += 1;
        if self.users.len() >= BATCH {
            self.sink.users(std::mem::take(&mut self.users))?;
        }
        Ok(())
    }

    pub(crate) fn event(&mut self, event: Event) -> anyhow::Result<()> {
        self.events.push(event);
        self.counts.events += 1;
        if self.events.len() >= BATCH {
            self.sink.events(std::mem::take(&mut self.events))?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        if !self.items.is_empty() {
            self.sink.items(std::mem::take(&mut self.items))?;
        }
        if !self.users.is_empty() {
            self.sink.users(std::mem::take(&mut self.users))?;
        }
        if !self.events.is_empty() {
            self.sink.events(std::mem::take(&mut self.events))?;
        }
        Ok(())
    }
}

/// Counts bytes read into the progress bar.
pub(crate) struct Counting<R> {
    pub(crate) inner: R,
    pub(crate) pb: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pb.inc(n as u64);
        Ok(n)
    }
}

pub(crate) fn open(path: &Path, pb: &ProgressBar) -> anyhow::Result<Counting<File>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Counting {
        inner: f,
        pb: pb.clone(),
    })
}

pub(crate) fn bytes_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "importing [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// A validation error at `file:line`.
pub(crate) fn invalid(file: &Path, line: u64, e: &FieldError) -> anyhow::Error {
    bad_field(file, line, &e.field, &e.message)
}

pub(crate) fn bad_field(file: &Path, line: u64, field: &str, msg: impl Display) -> anyhow::Error {
    anyhow!("{}:{line}: field `{field}`: {msg}", file.display())
}
