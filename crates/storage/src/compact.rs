//! Log compaction: closed segments rewritten as one compacted segment that holds the catalog,
//! the users and the curated lists at their latest state and the events still within
//! retention, without any record of an erased user or of deleted feedback.
//!
//! It runs beside the writer, which keeps appending to the segment after the ones compacted
//! (closed segments never change). The output is written under a temporary name, made durable
//! and renamed over the newest segment it replaces; only then are the older ones deleted. A
//! crash before the rename leaves the originals (the temporary file is removed on open); one
//! after it leaves the compacted segment and leftovers below it, which open deletes.

use crate::log::{
    COMPACT_TMP as TMP, COMPACTED_HEADER, MAGIC_COMPACTED, frame, live_segments, scan_segment,
    segment_path, sync_dir,
};
use crate::{Result, StorageError, codec};
use cascade_core::{EditorialList, Event, EventKind, Item, Millis, Mutation, Target, User};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Records per rewritten batch.
const BATCH: usize = 4096;

/// How long events are kept. Follows and hides are state, not history: they are kept at any
/// age (a user's hidden items stay hidden). The catalog and users are always kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this (by their timestamp) are dropped.
    pub max_age_ms: Option<Millis>,
    /// Past this many bytes of event records, the oldest events are dropped.
    pub max_bytes: Option<u64>,
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Segments replaced (0: nothing to compact).
    pub segments: u32,
    /// Records the compacted segment stands for: the log's sequence numbers after it start here.
    pub covers: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub events_in: u64,
    pub events_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Users whose records before their erasure were dropped.
    pub erased_users: u64,
}

/// One record read back with its sequence number.
fn for_each_record(
    dir: &Path,
    segments: &[u32],
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let mut next = 0u64;
    for &n in segments {
        let path = segment_path(dir, n);
        let covers = compacted_covers(&path)?;
        let mut on = |payload: &[u8]| -> Result<()> {
            let seq = covers.map_or(next, |c| c.saturating_sub(1));
            f(seq, payload)?;
            next += u64::from(covers.is_none());
            Ok(())
        };
        match scan_segment(&path, &mut on)? {
            crate::log::Scan::Clean { .. } => {}
            crate::log::Scan::Torn { good_len, reason } => {
                // Only closed segments are compacted: a torn one is damage.
                return Err(StorageError::Corrupt {
                    path,
                    offset: good_len,
                    reason,
                });
            }
        }
        if let Some(c) = covers {
            next = c;
        }
    }
    Ok(next)
}

fn compacted_covers(path: &Path) -> Result<Option<u64>> {
    let mut head = [0u8; 16];
    let mut f = File::open(path).map_err(|e| StorageError::io(path, e))?;
    use std::io::Read;
    match f.read_exact(&mut head) {
        Ok(()) if &head[..8] == MAGIC_COMPACTED => Ok(Some(u64::from_le_bytes(
            head[8..].try_into().unwrap_or_default(),
        ))),
        _ => Ok(None),
    }
}

fn corrupt(path: &Path, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.into(),
        offset: 0,
        reason,
    }
}

/// What the first pass learns: the latest catalog, users and lists, and what was erased.
#[derive(Default)]
struct Fold {
    /// Every item id in the order first seen (upserts, patches and events), with its latest
    /// record: the compacted catalog keeps the listing order of the live ones.
    items: IndexMap<String, Option<Item>>,
    users: IndexMap<String, Option<User>>,
    editorial: IndexMap<String, Option<EditorialList>>,
    /// User id → sequence number of their last erasure.
    erased: HashMap<String, u64>,
    /// (user, item, one kind or all) → sequence number of the last deletion of that feedback.
    deleted: HashMap<(String, String, Option<EventKind>), u64>,
    /// (ordinal among all records read, bytes, events) of each events record, oldest first.
    /// Not the sequence number: every record of an earlier compacted segment shares one.
    event_records: Vec<(u64, u64, u64)>,
    records: u64,
    bytes: u64,
    events: u64,
}

impl Fold {
    fn apply(&mut self, seq: u64, m: Mutation, bytes: u64) {
        let ord = self.records;
        self.records += 1;
        self.bytes += bytes;
        match m {
            Mutation::UpsertItems(items) => {
                for it in items {
                    // `insert` keeps an id's first position: the order items are listed in.
                    self.items.insert(it.id.clone(), Some(it));
                }
            }
            Mutation::PatchItem { id, patch } => {
                if let Some(Some(it)) = self.items.get_mut(&id) {
                    patch.apply_to(it);
                }
            }
            Mutation::DeleteItem { id } => {
                if let Some(slot) = self.items.get_mut(&id) {
                    *slot = None;
                }
            }
            Mutation::UpsertUsers(users) => {
                for u in users {
                    self.users.insert(u.id.clone(), Some(u));
                }
            }
            Mutation::UpsertEditorial(list) => {
                self.editorial.insert(list.id.clone(), Some(list));
            }
            Mutation::DeleteEditorial { id } => {
                if let Some(slot) = self.editorial.get_mut(&id) {
                    *slot = None;
                }
            }
            Mutation::Events(evs) => {
                self.events += evs.len() as u64;
                self.event_records.push((ord, bytes, evs.len() as u64));
                // Items are listed in the order first seen, events included: keep it.
                for e in evs {
                    if let Target::Item(id) = e.target
                        && !self.items.contains_key(&id)
                    {
                        self.items.insert(id, None);
                    }
                }
            }
            Mutation::EraseUser { id } => {
                if let Some(slot) = self.users.get_mut(&id) {
                    *slot = None;
                }
                self.erased.insert(id, seq);
            }
            Mutation::DeleteFeedback {
                user_id,
                item_id,
                kind,
            } => {
                self.deleted.insert((user_id, item_id, kind), seq);
            }
        }
    }

    /// Where the size budget cuts: events of records before the ordinal are dropped, and the
    /// first so many events of the record at it (a compacted segment's records hold thousands
    /// of events, so the cut goes inside one, at its mean bytes per event).
    fn size_cut(&self, max_bytes: Option<u64>) -> SizeCut {
        let Some(max) = max_bytes else {
            return SizeCut::default();
        };
        let mut kept = 0u64;
        for &(ord, bytes, n) in self.event_records.iter().rev() {
            if kept + bytes > max {
                let room = max - kept;
                let fit = n * room / bytes.max(1);
                return SizeCut { ord, skip: n - fit };
            }
            kept += bytes;
        }
        SizeCut::default()
    }

    /// Whether event `e`, the `k`-th of record `seq` (the `ord`-th read), survives.
    fn keeps(
        &self,
        seq: u64,
        (ord, k): (u64, u64),
        e: &Event,
        min_ts: Millis,
        cut: SizeCut,
    ) -> bool {
        if self.erased.get(&e.user_id).is_some_and(|&at| at > seq) {
            return false;
        }
        if let Target::Item(item) = &e.target
            && !self.deleted.is_empty()
        {
            let later = |kind| {
                self.deleted
                    .get(&(e.user_id.clone(), item.clone(), kind))
                    .is_some_and(|&at| at > seq)
            };
            if later(None) || later(Some(e.kind)) {
                return false;
            }
        }
        // State, not history: what a user hid or follows outlives retention.
        if matches!(e.kind, EventKind::Follow | EventKind::Hide) {
            return true;
        }
        e.ts >= min_ts && (ord > cut.ord || (ord == cut.ord && k >= cut.skip))
    }
}

/// Where a size budget cuts the events (see [`Fold::size_cut`]); the default keeps them all.
#[derive(Debug, Clone, Copy, Default)]
struct SizeCut {
    ord: u64,
    skip: u64,
}

/// The compacted segment being written.
struct Out {
    path: PathBuf,
    w: BufWriter<File>,
    buf: Vec<u8>,
    records: u64,
    bytes: u64,
}

impl Out {
    fn create(dir: &Path, covers: u64) -> Result<Self> {
        let path = dir.join(TMP);
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut head = Vec::with_capacity(COMPACTED_HEADER as usize);
        head.extend_from_slice(MAGIC_COMPACTED);
        head.extend_from_slice(&covers.to_le_bytes());
        head.extend_from_slice(&0u64.to_le_bytes());
        w.write_all(&head).map_err(|e| StorageError::io(&path, e))?;
        Ok(Self {
            path,
            w,
            buf: Vec::with_capacity(1 << 16),
            records: 0,
            bytes: COMPACTED_HEADER,
        })
    }

    fn push(&mut self, m: &Mutation) -> Result<()> {
        frame(m, &mut self.buf)?;
        self.w
            .write_all(&self.buf)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.records += 1;
        self.bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Writes the record count into the header and makes the file durable — always, even
    /// with `storage.fsync` off: the rename that follows replaces long-durable segments, so
    /// a crash must never find a compacted file shorter than what it replaced.
    fn finish(self) -> Result<(PathBuf, u64, u64)> {
        let io = |e| StorageError::io(&self.path, e);
        let mut f = self.w.into_inner().map_err(|e| io(e.into_error()))?;
        f.seek(SeekFrom::Start(16)).map_err(io)?;
        f.write_all(&self.records.to_le_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok((self.path, self.records, self.bytes))
    }
}

/// Compacts every segment numbered up to `upto` (closed: the writer has rolled past it) into
/// one compacted segment named `upto`, dropping events older than `retention` as of `now`,
/// and every record of erased users and deleted feedback from before their erasure.
pub fn compact(dir: &Path, upto: u32, now: Millis, retention: &Retention) -> Result<CompactStats> {
    let segments: Vec<u32> = live_segments(dir)?
        .0
        .into_iter()
        .filter(|&n| n <= upto)
        .collect();
    if segments.last() != Some(&upto) {
        return Ok(CompactStats::default());
    }
    let mut fold = Fold::default();
    let covers = for_each_record(dir, &segments, &mut |seq, payload| {
        let m = codec::decode(payload).map_err(|r| corrupt(dir, r))?;
        fold.apply(seq, m, payload.len() as u64 + 8);
        Ok(())
    })?;
    let min_ts = retention
        .max_age_ms
        .map_or(Millis::MIN, |age| now.saturating_sub(age));
    let cut = fold.size_cut(retention.max_bytes);

    let mut out = Out::create(dir, covers)?;
    let result = (|| -> Result<u64> {
        let items: Vec<Item> = fold.items.values().flatten().cloned().collect();
        for chunk in items.chunks(BATCH) {
            out.push(&Mutation::UpsertItems(chunk.to_vec()))?;
        }
        let users: Vec<User> = fold.users.values().flatten().cloned().collect();
        for chunk in users.chunks(BATCH) {
            out.push(&Mutation::UpsertUsers(chunk.to_vec()))?;
        }
        for list in fold.editorial.values().flatten() {
            out.push(&Mutation::UpsertEditorial(list.clone()))?;
        }
        let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
        let mut kept = 0u64;
        let mut ord = 0u64;
        for_each_record(dir, &segments, &mut |seq, payload| {
            ord += 1;
            let ord = ord - 1;
            if payload.first().is_some_and(|&k| codec::is_events(k)) {
                let Mutation::Events(evs) = codec::decode(payload).map_err(|r| corrupt(dir, r))?
                else {
                    return Ok(());
                };
                for (k, e) in evs.into_iter().enumerate() {
                    if fold.keeps(seq, (ord, k as u64), &e, min_ts, cut) {
                        batch.push(e);
                        if batch.len() >= BATCH {
                            kept += batch.len() as u64;
                            out.push(&Mutation::Events(std::mem::take(&mut batch)))?;
                        }
                    }
                }
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            kept += batch.len() as u64;
            out.push(&Mutation::Events(batch))?;
        }
        Ok(kept)
    })();
    let events_out = match result {
        Ok(k) => k,
        Err(e) => {
            let _ = std::fs::remove_file(&out.path);
            return Err(e);
        }
    };
    let (tmp, records_out, bytes_out) = match out.finish() {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(TMP));
            return Err(e);
        }
    };
    let target = segment_path(dir, upto);
    std::fs::rename(&tmp, &target).map_err(|e| StorageError::io(&target, e))?;
    sync_dir(dir)?;
    for &n in &segments[..segments.len() - 1] {
        let p = segment_path(dir, n);
        std::fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
    }
    sync_dir(dir)?;
    Ok(CompactStats {
        segments: segments.len() as u32,
        covers,
        records_in: fold.records,
        records_out,
        events_in: fold.events,
        events_out,
        bytes_in: fold.bytes,
        bytes_out,
        erased_users: fold.erased.len() as u64,
    })
}
