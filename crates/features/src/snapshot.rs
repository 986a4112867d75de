//! Snapshots of the embedded state: everything `State` holds, at a known log position, so a
//! restart loads it and replays only the log's tail.
//!
//! File: `DATA_DIR/snapshots/<records, 20 digits>.snap` = `b"CSNP" | u32 version | u32
//! crc32(body) | body`, body postcard-encoded. Written to a temporary name, fsynced, renamed:
//! a crash leaves the previous snapshot. A snapshot taken under other state settings
//! (weights, half-lives, history cap, segment keys) is not used: replay from the start
//! gives the state those settings define.

use crate::experiments::ExperimentStats;
use crate::state::{Inner, Interaction, ItemHot, ItemRec, ItemStats, StateConfig, UserState};
use crate::weights::Decay;
use cascade_core::{EditorialList, EventKind, IdMap, Idx, Millis};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"CSNP";
const VERSION: u32 = 1;

/// A snapshot error: the caller falls back to a full replay.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o on {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("snapshot {0} is unreadable: {1}")]
    Corrupt(PathBuf, String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SnapItem {
    title: String,
    categories: Vec<Idx>,
    tags: Vec<Idx>,
    creator: Idx,
    created_at: Millis,
    hidden: bool,
    mature: bool,
    /// JSON: postcard cannot carry a self-describing value.
    attributes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SnapUser {
    known: bool,
    first_s: u32,
    attributes: Option<String>,
    follows: Vec<Idx>,
    history: Vec<(Idx, u32, u8, f32)>,
    seen: Vec<(Idx, u32)>,
    engaged: Vec<(Idx, u32)>,
    hidden_items: Vec<Idx>,
    hidden_creators: Vec<Idx>,
    shown: Vec<(Idx, u32)>,
    segments: Vec<Idx>,
}

/// Views, clicks, likes, skips, hides, shares, watches, summed watch fraction.
type StatsRow = (u32, u32, u32, u32, u32, u32, u32, f32);

/// The whole state, in a serializable form. Equal snapshots mean equal states, except for
/// the fold log (`fold_*`), which is relative to the loaded model and rebuilt when one loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Log records the state holds.
    pub log_records: u64,
    settings: String,
    items: Vec<String>,
    item_recs: Vec<Option<SnapItem>>,
    categories: Vec<String>,
    creators: Vec<String>,
    creator_items: Vec<Vec<Idx>>,
    tags: Vec<String>,
    users: Vec<String>,
    user_states: Vec<SnapUser>,
    popularity: Vec<f64>,
    popularity_short: Vec<f64>,
    engagements: Vec<u32>,
    item_stats: Vec<StatsRow>,
    impressions: Vec<u32>,
    time_log: Vec<(Millis, Idx, f32)>,
    /// JSON of each list.
    editorial: Vec<String>,
    watermark: Millis,
    events_applied: u64,
    segments: Vec<String>,
    /// Sorted by item, so that equal states give equal snapshots.
    segment_popularity: Vec<Vec<(Idx, f64)>>,
    generation: u64,
    experiments: crate::experiments::StatsParts,
}

/// What defines how mutations build the state: a snapshot is valid only under the same.
fn settings(config: &StateConfig, segment_keys: &[String]) -> String {
    format!("{config:?}|{segment_keys:?}")
}

fn names(m: &IdMap) -> Vec<String> {
    (0..m.len() as Idx)
        .map(|i| m.name(i).unwrap_or("").to_string())
        .collect()
}

fn idmap(names: &[String]) -> IdMap {
    let mut m = IdMap::with_capacity(names.len());
    for n in names {
        m.intern(n);
    }
    m
}

fn json_of<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Snapshot {
    /// Copies the state (call under the read lock; a few hundred ms for millions of rows).
    pub fn of(g: &Inner) -> Self {
        Self {
            log_records: g.log_records,
            settings: settings(&g.config, &g.segment_keys),
            items: names(&g.items),
            item_recs: g
                .item_recs
                .iter()
                .map(|r| {
                    r.as_ref().map(|r| SnapItem {
                        title: r.title.to_string(),
                        categories: r.categories.to_vec(),
                        tags: r.tags.to_vec(),
                        creator: r.creator,
                        created_at: r.created_at,
                        hidden: r.hidden,
                        mature: r.mature,
                        attributes: r.attributes.as_ref().map(json_of),
                    })
                })
                .collect(),
            categories: names(&g.categories),
            creators: names(&g.creators),
            creator_items: g.creator_items.clone(),
            tags: names(&g.tags),
            users: names(&g.users),
            user_states: g
                .user_states
                .iter()
                .map(|u| SnapUser {
                    known: u.known,
                    first_s: u.first_s,
                    attributes: u.attributes.as_ref().map(json_of),
                    follows: u.follows.clone(),
                    history: u
                        .history
                        .iter()
                        .map(|i| (i.item, i.ts_s, kind_code(i.kind), i.weight))
                        .collect(),
                    seen: u.seen.clone(),
                    engaged: u.engaged.clone(),
                    hidden_items: u.hidden_items.clone(),
                    hidden_creators: u.hidden_creators.clone(),
                    shown: u.shown.clone(),
                    segments: u.segments.clone(),
                })
                .collect(),
            popularity: g.popularity.clone(),
            popularity_short: g.popularity_short.clone(),
            engagements: g.engagements.clone(),
            item_stats: g
                .item_stats
                .iter()
                .map(|s| {
                    (
                        s.views,
                        s.clicks,
                        s.likes,
                        s.skips,
                        s.hides,
                        s.shares,
                        s.watches,
                        s.watch_fraction,
                    )
                })
                .collect(),
            impressions: g.impressions.clone(),
            time_log: g.time_log.clone(),
            editorial: g.editorial.values().map(json_of).collect(),
            watermark: g.watermark,
            events_applied: g.events_applied,
            segments: names(&g.segments),
            segment_popularity: g
                .segment_popularity
                .iter()
                .map(|m| {
                    let mut v: Vec<(Idx, f64)> = m.iter().map(|(&i, &p)| (i, p)).collect();
                    v.sort_unstable_by_key(|&(i, _)| i);
                    v
                })
                .collect(),
            generation: g.generation,
            experiments: g.experiments.parts(),
        }
    }

    /// Rebuilds the state under `config` and `segment_keys`; `None` when the snapshot was taken
    /// under other settings.
    pub fn restore(
        self,
        config: StateConfig,
        segment_keys: &[String],
    ) -> Result<Option<Inner>, String> {
        if self.settings != settings(&config, segment_keys) {
            return Ok(None);
        }
        let attrs = |a: Option<String>| -> Result<_, String> {
            a.map(|j| serde_json::from_str(&j).map(Box::new))
                .transpose()
                .map_err(|e| e.to_string())
        };
        let mut item_recs = Vec::with_capacity(self.item_recs.len());
        for r in self.item_recs {
            item_recs.push(match r {
                None => None,
                Some(r) => Some(ItemRec {
                    title: r.title.into(),
                    categories: r.categories.into(),
                    tags: r.tags.into(),
                    creator: r.creator,
                    created_at: r.created_at,
                    hidden: r.hidden,
                    mature: r.mature,
                    attributes: attrs(r.attributes)?,
                }),
            });
        }
        let item_hot: Vec<ItemHot> = item_recs
            .iter()
            .map(|r| r.as_ref().map(ItemHot::of).unwrap_or_default())
            .collect();
        let live_items = item_hot.iter().filter(|h| h.exists()).count();
        let mut user_states = Vec::with_capacity(self.user_states.len());
        for u in self.user_states {
            let mut history = Vec::with_capacity(u.history.len());
            for (item, ts_s, kind, weight) in u.history {
                let kind = EventKind::ALL
                    .get(kind as usize)
                    .copied()
                    .ok_or_else(|| format!("event kind {kind}"))?;
                history.push(Interaction {
                    item,
                    ts_s,
                    kind,
                    weight,
                });
            }
            user_states.push(UserState {
                known: u.known,
                first_s: u.first_s,
                attributes: attrs(u.attributes)?,
                follows: u.follows,
                history,
                seen: u.seen,
                engaged: u.engaged,
                hidden_items: u.hidden_items,
                hidden_creators: u.hidden_creators,
                shown: u.shown,
                segments: u.segments,
            });
        }
        let mut editorial = std::collections::BTreeMap::new();
        for j in &self.editorial {
            let l: EditorialList = serde_json::from_str(j).map_err(|e| e.to_string())?;
            editorial.insert(l.id.clone(), l);
        }
        Ok(Some(Inner {
            config,
            experiments: ExperimentStats::from_parts(self.experiments),
            decay: Decay::from_half_life_hours(config.popularity_half_life_hours),
            decay_short: Decay::from_half_life_hours(config.trending_half_life_hours),
            items: idmap(&self.items),
            item_recs,
            item_hot,
            live_items,
            categories: idmap(&self.categories),
            creators: idmap(&self.creators),
            creator_items: self.creator_items,
            tags: idmap(&self.tags),
            users: idmap(&self.users),
            user_states,
            popularity: self.popularity,
            popularity_short: self.popularity_short,
            engagements: self.engagements,
            item_stats: self
                .item_stats
                .into_iter()
                .map(
                    |(views, clicks, likes, skips, hides, shares, watches, watch_fraction)| {
                        ItemStats {
                            views,
                            clicks,
                            likes,
                            skips,
                            hides,
                            shares,
                            watches,
                            watch_fraction,
                        }
                    },
                )
                .collect(),
            impressions: self.impressions,
            time_log: self.time_log,
            editorial,
            watermark: self.watermark,
            events_applied: self.events_applied,
            // Relative to the model the engine loads next, which sets them (as after a
            // full replay).
            fold_from: Idx::MAX,
            fold_pairs: Vec::new(),
            fold_epoch: 0,
            segment_keys: segment_keys.to_vec(),
            segments: idmap(&self.segments),
            segment_popularity: self
                .segment_popularity
                .into_iter()
                .map(|v| v.into_iter().collect())
                .collect(),
            generation: self.generation,
            catalog_generation: 0,
            item_edits: Vec::new(),
            item_edits_base: 0,
            log_records: self.log_records,
        }))
    }

    /// Writes the snapshot into `dir` atomically; keeps the newest `keep` there. Returns the
    /// file and its size.
    pub fn write(&self, dir: &Path, keep: usize) -> Result<(PathBuf, u64), SnapshotError> {
        let io = |p: &Path, e| SnapshotError::Io(p.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let body = postcard::to_stdvec(self)
            .map_err(|e| SnapshotError::Corrupt(dir.to_path_buf(), e.to_string()))?;
        let path = dir.join(format!("{:020}.snap", self.log_records));
        let tmp = dir.join(format!("{:020}.snap.tmp", self.log_records));
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(MAGIC).map_err(|e| io(&tmp, e))?;
            f.write_all(&VERSION.to_le_bytes())
                .map_err(|e| io(&tmp, e))?;
            f.write_all(&crc32fast::hash(&body).to_le_bytes())
                .map_err(|e| io(&tmp, e))?;
            f.write_all(&body).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let mut all = list(dir)?;
        while all.len() > keep.max(1) {
            let old = all.remove(0);
            let _ = std::fs::remove_file(old);
        }
        Ok((path, body.len() as u64 + 12))
    }

    /// Reads one snapshot file, checking magic, version and checksum.
    pub fn read(path: &Path) -> Result<Self, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|e| SnapshotError::Io(path.to_path_buf(), e))?;
        let bad = |m: &str| SnapshotError::Corrupt(path.to_path_buf(), m.to_string());
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return Err(bad("not a snapshot"));
        }
        let word =
            |k: usize| u32::from_le_bytes([bytes[k], bytes[k + 1], bytes[k + 2], bytes[k + 3]]);
        if word(4) != VERSION {
            return Err(bad("unknown version"));
        }
        let body = &bytes[12..];
        if crc32fast::hash(body) != word(8) {
            return Err(bad("checksum mismatch"));
        }
        postcard::from_bytes(body).map_err(|e| bad(&e.to_string()))
    }

    /// The newest readable snapshot in `dir` (damaged ones are skipped, with a warning by
    /// the caller's choice: they are returned in `skipped`).
    pub fn latest(dir: &Path) -> (Option<Self>, Vec<SnapshotError>) {
        let mut skipped = Vec::new();
        let Ok(mut all) = list(dir) else {
            return (None, skipped);
        };
        while let Some(p) = all.pop() {
            match Self::read(&p) {
                Ok(s) => return (Some(s), skipped),
                Err(e) => skipped.push(e),
            }
        }
        (None, skipped)
    }
}

/// Removes the snapshots of `dir` that hold fewer than `records` log records (a compaction
/// rewrote what they resume from, and they may hold what it purged) and any half-written one
/// a crash left; the caller keeps snapshot writers out meanwhile. Returns how many went.
pub fn remove_before(dir: &Path, records: u64) -> Result<usize, SnapshotError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SnapshotError::Io(dir.to_path_buf(), e)),
    };
    let mut removed = 0;
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let stale = match name.strip_suffix(".snap") {
            Some(n) => n.parse::<u64>().is_ok_and(|n| n < records),
            None => name.ends_with(".snap.tmp"),
        };
        if stale {
            std::fs::remove_file(&p).map_err(|e| SnapshotError::Io(p.clone(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Snapshot files in `dir`, oldest first.
fn list(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SnapshotError::Io(dir.to_path_buf(), e)),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    out.sort();
    Ok(out)
}

fn kind_code(k: EventKind) -> u8 {
    EventKind::ALL.iter().position(|&x| x == k).unwrap_or(0) as u8
}
