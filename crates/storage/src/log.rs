//! Segment files of length-prefixed, CRC-checked records; replay and torn-tail repair. One
//! file: the segment format is read and written here alone (open, scan, append, roll, the
//! compacted header); `compact` reuses its framing.
//!
//! Record layout: `u32 len (LE) | u32 crc32(payload) (LE) | payload`. A segment starts with an
//! 8-byte magic. Only the newest segment may end in a torn record (a crash mid-write); it is
//! truncated to the last whole record on open. Damage anywhere else is reported, never skipped.
//!
//! A compacted segment (see `compact`) starts with its own magic, the number of records it
//! stands for and the number it holds: it replaces every segment numbered below it, so its
//! records take sequence numbers `0..covers` and the log's numbering after it is unchanged.
//! Segments numbered below the newest compacted one are leftovers of a compaction cut short
//! after its rename, and are deleted on open.

use crate::codec;
use crate::{Result, StorageError};
use cascade_core::Mutation;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CSCLOG01";
pub(crate) const MAGIC_COMPACTED: &[u8; 8] = b"CSCLOG02";
const HEADER: u64 = 8;
/// Magic, records covered, records held.
pub(crate) const COMPACTED_HEADER: u64 = 24;
/// Name of a compaction's output before its rename.
pub(crate) const COMPACT_TMP: &str = "compact.tmp";

/// Where the log was cut by a roll: every segment up to `closed` is closed, and the log held
/// `records` records then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolled {
    pub closed: u32,
    pub records: u64,
}
/// Upper bound of one record; larger lengths in a header mean garbage, not data.
pub const MAX_RECORD: usize = 256 << 20;

/// How the log is stored.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub dir: PathBuf,
    /// `fdatasync` after every group commit. Off only for throwaway data.
    pub fsync: bool,
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
}

impl LogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: true,
            segment_bytes: 256 << 20,
        }
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub records: u64,
    pub segments: u32,
    pub bytes: u64,
    /// Bytes cut off the newest segment because its last record was torn.
    pub truncated_bytes: u64,
    /// Records skipped (checksummed, not decoded nor applied): a snapshot held them.
    pub skipped: u64,
    /// Erasure records (user erasures, feedback deletions) outside the compacted segment,
    /// applied or skipped: what a compaction still has to purge.
    pub erasures: u64,
    /// Records the compacted segment stands for (0: none).
    pub compacted: u64,
}

/// The append side of the log, owned by one thread (the [`crate::LogWriter`] or an importer).
#[derive(Debug)]
pub struct EventLog {
    opts: LogOptions,
    file: File,
    path: PathBuf,
    segment: u32,
    len: u64,
    records: u64,
    buf: Vec<u8>,
}

pub(crate) fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// The segments to read, oldest first: from the newest compacted one on (the ones below it
/// are leftovers that a finished compaction replaced).
pub(crate) fn live_segments(dir: &Path) -> Result<(Vec<u32>, Vec<u32>)> {
    let all = list_segments(dir)?;
    let mut first = 0;
    for (i, &n) in all.iter().enumerate().rev() {
        if compacted_header(&segment_path(dir, n))?.is_some() {
            first = i;
            break;
        }
    }
    let (stale, live) = all.split_at(first);
    Ok((live.to_vec(), stale.to_vec()))
}

/// `(covers, records)` of a compacted segment; `None` for any other file.
fn compacted_header(path: &Path) -> Result<Option<(u64, u64)>> {
    let mut f = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut head = [0u8; COMPACTED_HEADER as usize];
    match f.read_exact(&mut head) {
        Ok(()) if &head[..8] == MAGIC_COMPACTED => Ok(Some((
            u64::from_le_bytes(head[8..16].try_into().unwrap_or_default()),
            u64::from_le_bytes(head[16..24].try_into().unwrap_or_default()),
        ))),
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Removes what a compaction cut short left behind: its temporary output, or the segments a
/// renamed compacted segment replaced. Runs on open, under the data dir's lock.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<()> {
    let tmp = dir.join(COMPACT_TMP);
    let mut removed = false;
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
        removed = true;
    }
    for n in live_segments(dir)?.1 {
        let p = segment_path(dir, n);
        tracing::info!(segment = %p.display(), "removing a segment a compaction replaced");
        std::fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Outcome of scanning one segment.
pub(crate) enum Scan {
    Clean { len: u64 },
    Torn { good_len: u64, reason: String },
}

/// Reads every whole record of a segment, calling `f` with each payload; `on_header` first
/// learns whether it is a compacted segment (`(covers, records)`).
pub(crate) fn scan_segment(path: &Path, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<Scan> {
    scan_segment_with(path, &mut |_| Ok(()), f)
}

fn scan_segment_with(
    path: &Path,
    on_header: &mut dyn FnMut(Option<(u64, u64)>) -> Result<()>,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Scan> {
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let total = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if total < HEADER {
        return Ok(Scan::Torn {
            good_len: 0,
            reason: "incomplete segment header".into(),
        });
    }
    r.read_exact(&mut magic)
        .map_err(|e| StorageError::io(path, e))?;
    let corrupt = |offset, reason: &str| StorageError::Corrupt {
        path: path.into(),
        offset,
        reason: reason.into(),
    };
    let mut pos = HEADER;
    // Records a compacted segment says it holds; checked at its end.
    let mut expect = None;
    if &magic == MAGIC_COMPACTED {
        let mut counts = [0u8; 16];
        r.read_exact(&mut counts)
            .map_err(|_| corrupt(HEADER, "incomplete compacted segment header"))?;
        let covers = u64::from_le_bytes(counts[..8].try_into().unwrap_or_default());
        let records = u64::from_le_bytes(counts[8..].try_into().unwrap_or_default());
        on_header(Some((covers, records)))?;
        expect = Some(records);
        pos = COMPACTED_HEADER;
    } else if &magic != MAGIC {
        return Err(corrupt(0, "not a Cascade log segment"));
    } else {
        on_header(None)?;
    }
    let mut payload = Vec::new();
    let mut seen = 0u64;
    loop {
        if pos == total {
            if let Some(n) = expect
                && n != seen
            {
                // Compacted segments are written whole and renamed: any shortfall is damage.
                return Err(corrupt(
                    pos,
                    &format!("compacted segment holds {seen} of {n} records"),
                ));
            }
            return Ok(Scan::Clean { len: pos });
        }
        if total - pos < 8 {
            return Ok(Scan::Torn {
                good_len: pos,
                reason: "incomplete record header".into(),
            });
        }
        let mut head = [0u8; 8];
        r.read_exact(&mut head)
            .map_err(|e| StorageError::io(path, e))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD {
            return Ok(Scan::Torn {
                good_len: pos,
                reason: format!("bad record length {len}"),
            });
        }
        if total - pos - 8 < len as u64 {
            return Ok(Scan::Torn {
                good_len: pos,
                reason: "incomplete record".into(),
            });
        }
        payload.resize(len, 0);
        r.read_exact(&mut payload)
            .map_err(|e| StorageError::io(path, e))?;
        if crc32fast::hash(&payload) != crc {
            if pos + 8 + (len as u64) < total {
                // Whole records follow: this is damage, not a write cut short by a crash.
                return Err(StorageError::Corrupt {
                    path: path.into(),
                    offset: pos,
                    reason: "checksum mismatch before the end of the segment".into(),
                });
            }
            return Ok(Scan::Torn {
                good_len: pos,
                reason: "checksum mismatch".into(),
            });
        }
        f(&payload)?;
        seen += 1;
        pos += 8 + len as u64;
    }
}

impl EventLog {
    /// Opens (creating if needed) the log, replaying every record into `apply` in order,
    /// repairing a torn tail of the newest segment.
    pub fn open(opts: LogOptions, apply: &mut dyn FnMut(Mutation)) -> Result<(Self, ReplayStats)> {
        Self::open_from(opts, 0, &mut |m, _| apply(m))
    }

    /// [`EventLog::open`] that applies only records from sequence number `skip` on (a
    /// snapshot holds the ones before), each with its sequence number. Earlier records are
    /// still checksummed: damage is found whether or not a snapshot covers it.
    pub fn open_from(
        opts: LogOptions,
        skip: u64,
        apply: &mut dyn FnMut(Mutation, u64),
    ) -> Result<(Self, ReplayStats)> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| StorageError::io(&opts.dir, e))?;
        remove_leftovers(&opts.dir)?;
        let segments = list_segments(&opts.dir)?;
        let mut stats = ReplayStats::default();
        let mut last_len = 0;
        // Sequence number of the next record.
        let mut next = 0u64;
        let mut newest_compacted = false;
        for (i, &n) in segments.iter().enumerate() {
            let path = segment_path(&opts.dir, n);
            let newest = i + 1 == segments.len();
            // Set for the compacted segment: the records it stands for.
            let covers = std::cell::Cell::new(None);
            let mut on_header = |h: Option<(u64, u64)>| -> Result<()> {
                if let Some((c, _)) = h {
                    if i > 0 {
                        return Err(StorageError::Corrupt {
                            path: path.clone(),
                            offset: 0,
                            reason: "a compacted segment after another segment".into(),
                        });
                    }
                    if skip > 0 && skip < c {
                        return Err(StorageError::SnapshotCompacted {
                            snapshot: skip,
                            covers: c,
                        });
                    }
                    covers.set(Some(c));
                }
                Ok(())
            };
            let mut on_record = |payload: &[u8]| -> Result<()> {
                // A compacted segment's records all stand at the end of what it covers.
                let covers = covers.get();
                let seq = covers.map_or(next, |c: u64| c.saturating_sub(1));
                if covers.is_none() && codec::is_erasure(payload) {
                    stats.erasures += 1;
                }
                if seq < skip {
                    stats.skipped += 1;
                    next += u64::from(covers.is_none());
                    return Ok(());
                }
                let m = codec::decode(payload).map_err(|reason| StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason,
                })?;
                stats.records += 1;
                stats.bytes += payload.len() as u64 + 8;
                apply(m, seq);
                next += u64::from(covers.is_none());
                Ok(())
            };
            let scan = scan_segment_with(&path, &mut on_header, &mut on_record)?;
            let covers = covers.get();
            if let Some(c) = covers {
                next = c;
                stats.compacted = c;
            }
            newest_compacted = newest && covers.is_some();
            match scan {
                Scan::Clean { len } => last_len = len,
                Scan::Torn { good_len, reason } if newest && covers.is_none() => {
                    let actual = std::fs::metadata(&path)
                        .map_err(|e| StorageError::io(&path, e))?
                        .len();
                    tracing::warn!(
                        segment = %path.display(), good_len, cut = actual - good_len, %reason,
                        "truncating torn tail of the event log"
                    );
                    stats.truncated_bytes = actual - good_len;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| StorageError::io(&path, e))?;
                    f.set_len(good_len)
                        .map_err(|e| StorageError::io(&path, e))?;
                    f.sync_all().map_err(|e| StorageError::io(&path, e))?;
                    last_len = good_len;
                }
                Scan::Torn { good_len, reason } => {
                    return Err(StorageError::Corrupt {
                        path,
                        offset: good_len,
                        reason,
                    });
                }
            }
            stats.segments += 1;
        }
        let mut segment = segments.last().copied().unwrap_or(1);
        if newest_compacted {
            // A compacted segment is never appended to: its records all stand before `covers`.
            segment += 1;
            last_len = 0;
        }
        let path = segment_path(&opts.dir, segment);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        if last_len < HEADER {
            file.set_len(0).map_err(|e| StorageError::io(&path, e))?;
            file.write_all(MAGIC)
                .map_err(|e| StorageError::io(&path, e))?;
            file.sync_all().map_err(|e| StorageError::io(&path, e))?;
            sync_dir(&opts.dir)?;
            last_len = HEADER;
        }
        file.seek(SeekFrom::Start(last_len))
            .map_err(|e| StorageError::io(&path, e))?;
        let records = next;
        if skip > records {
            return Err(StorageError::SnapshotAhead {
                snapshot: skip,
                log: records,
            });
        }
        Ok((
            Self {
                opts,
                file,
                path,
                segment,
                len: last_len,
                records,
                buf: Vec::with_capacity(1 << 16),
            },
            stats,
        ))
    }

    /// Reads every record without opening for append (tools and tests), leftovers of a
    /// compaction apart.
    pub fn read_all(dir: &Path) -> Result<Vec<Mutation>> {
        let mut out = Vec::new();
        for n in live_segments(dir)?.0 {
            let path = segment_path(dir, n);
            let mut on = |p: &[u8]| -> Result<()> {
                let m = codec::decode(p).map_err(|reason| StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason,
                })?;
                out.push(m);
                Ok(())
            };
            scan_segment(&path, &mut on)?;
        }
        Ok(out)
    }

    /// Number of records in the log.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Current byte position, used to roll back a failed group commit.
    pub(crate) fn position(&self) -> (u64, u64) {
        (self.len, self.records)
    }

    /// Cuts the current segment back to `pos` after a failed write. Groups never span
    /// segments (see [`EventLog::roll_if_full`]), so this undoes the whole group. If the cut
    /// itself fails the log can no longer be trusted and the error says so.
    pub(crate) fn rollback(&mut self, pos: (u64, u64)) -> Result<()> {
        self.file
            .set_len(pos.0)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.file
            .seek(SeekFrom::Start(pos.0))
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.len = pos.0;
        self.records = pos.1;
        Ok(())
    }

    /// Starts a new segment if the current one is past its size. Called between groups (never
    /// inside one), so a failed group can always be undone within a single segment.
    pub fn roll_if_full(&mut self) -> Result<()> {
        if self.len >= self.opts.segment_bytes && self.len > HEADER {
            self.roll()?;
        }
        Ok(())
    }

    /// Writes one record (not yet durable: call [`EventLog::sync`]). Returns its sequence
    /// number (0-based, over the whole log).
    pub fn append(&mut self, m: &Mutation) -> Result<u64> {
        frame(m, &mut self.buf)?;
        self.file
            .write_all(&self.buf)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.len += self.buf.len() as u64;
        let seq = self.records;
        self.records += 1;
        Ok(seq)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.opts.fsync {
            self.file
                .sync_data()
                .map_err(|e| StorageError::io(&self.path, e))?;
        }
        Ok(())
    }

    /// Starts a new segment now (between groups), returning where the log was cut.
    pub fn roll_now(&mut self) -> Result<Rolled> {
        let closed = self.segment;
        self.roll()?;
        Ok(Rolled {
            closed,
            records: self.records,
        })
    }

    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let next = self.segment + 1;
        let path = segment_path(&self.opts.dir, next);
        // `truncate`: a file left by an earlier roll that failed halfway holds no records.
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        file.write_all(MAGIC)
            .map_err(|e| StorageError::io(&path, e))?;
        file.sync_all().map_err(|e| StorageError::io(&path, e))?;
        sync_dir(&self.opts.dir)?;
        self.file = file;
        self.path = path;
        self.segment = next;
        self.len = HEADER;
        Ok(())
    }
}

/// Encodes `m` as one whole record (header and payload) into `buf`.
pub(crate) fn frame(m: &Mutation, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0u8; 8]);
    codec::encode(m, buf)?;
    let len = buf.len() - 8;
    if len > MAX_RECORD {
        return Err(StorageError::TooLarge(len));
    }
    let crc = crc32fast::hash(&buf[8..]);
    buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    // A new segment's directory entry must be durable too, or a crash could lose the file.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Event, EventKind, Target};

    fn events(n: usize, tag: &str) -> Mutation {
        Mutation::Events(
            (0..n)
                .map(|i| Event {
                    kind: EventKind::Click,
                    user_id: format!("u{i}"),
                    target: Target::Item(format!("{tag}-{i}")),
                    value: 1.0,
                    fraction: None,
                    ts: i as i64,
                    request_id: None,
                    surface: None,
                    position: Some(i as u32),
                    propensity: None,
                    experiment: None,
                })
                .collect(),
        )
    }

    fn open(dir: &Path) -> (EventLog, Vec<Mutation>, ReplayStats) {
        let mut seen = Vec::new();
        let (log, stats) =
            EventLog::open(LogOptions::new(dir), &mut |m| seen.push(m)).expect("open");
        (log, seen, stats)
    }

    /// A closed log holding records "a" and "b"; returns its only segment.
    fn two_records(dir: &Path) -> PathBuf {
        let (mut log, _, _) = open(dir);
        log.append(&events(2, "a")).expect("a");
        log.append(&events(2, "b")).expect("b");
        log.sync().expect("sync");
        segment_path(dir, 1)
    }

    #[test]
    fn append_and_replay_in_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut log, seen, _) = open(tmp.path());
        assert!(seen.is_empty());
        for k in 0..5 {
            log.append(&events(3, &k.to_string())).expect("append");
        }
        log.sync().expect("sync");
        drop(log);
        let (log, seen, stats) = open(tmp.path());
        assert_eq!(stats.records, 5);
        assert_eq!(log.records(), 5);
        assert_eq!(seen[4], events(3, "4"));
    }

    #[test]
    fn torn_tail_is_truncated_not_served() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seg = two_records(tmp.path());
        let full = std::fs::metadata(&seg).expect("meta").len();
        // Cut the last record in half: a crash mid-write.
        let f = OpenOptions::new().write(true).open(&seg).expect("f");
        f.set_len(full - 5).expect("cut");
        drop(f);
        let (mut log, seen, stats) = open(tmp.path());
        assert_eq!(seen, vec![events(2, "a")]);
        assert!(stats.truncated_bytes > 0);
        // Appending after repair yields a clean log.
        log.append(&events(1, "c")).expect("c");
        log.sync().expect("sync");
        drop(log);
        let (_, seen, stats) = open(tmp.path());
        assert_eq!(seen, vec![events(2, "a"), events(1, "c")]);
        assert_eq!(stats.truncated_bytes, 0);
    }

    #[test]
    fn flipped_byte_in_tail_is_detected_by_checksum() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seg = two_records(tmp.path());
        let mut bytes = std::fs::read(&seg).expect("read");
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        let (_, seen, _) = open(tmp.path());
        assert_eq!(seen, vec![events(2, "a")]);
    }

    #[test]
    fn corruption_in_an_old_segment_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut opts = LogOptions::new(tmp.path());
        opts.segment_bytes = 200;
        let (mut log, _) = EventLog::open(opts.clone(), &mut |_| {}).expect("open");
        for k in 0..6 {
            log.roll_if_full().expect("roll");
            log.append(&events(3, &k.to_string())).expect("append");
        }
        log.sync().expect("sync");
        drop(log);
        let segs = list_segments(tmp.path()).expect("list");
        assert!(segs.len() >= 2, "rolled into {} segments", segs.len());
        let (_, stats) = EventLog::open(opts.clone(), &mut |_| {}).expect("reopen");
        assert_eq!(stats.records, 6);
        let first = segment_path(tmp.path(), segs[0]);
        let mut bytes = std::fs::read(&first).expect("read");
        bytes[20] ^= 0xff;
        std::fs::write(&first, &bytes).expect("write");
        assert!(matches!(
            EventLog::open(opts, &mut |_| {}),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn damage_before_the_end_of_the_newest_segment_is_an_error_not_a_cut() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seg = two_records(tmp.path());
        let mut bytes = std::fs::read(&seg).expect("read");
        // A byte inside the first record's payload: a whole record still follows it.
        bytes[HEADER as usize + 12] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        let err = EventLog::open(LogOptions::new(tmp.path()), &mut |_| {}).expect_err("corrupt");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert_eq!(
            std::fs::read(&seg).expect("read").len(),
            bytes.len(),
            "nothing was cut"
        );
    }
}
