//! Versioned model bundles: what `cascade train` writes and `serve` loads.
//!
//! A bundle is a directory `models/<version>/` holding a JSON manifest (version, training
//! data range, parameters, metrics, and a size and CRC-32 per file) beside the artifacts:
//! item and user ids, embeddings, co-visitation and embedding-neighbour lists, and the HNSW
//! index. It is written under a temporary name and renamed, and `models/CURRENT` names the
//! bundle to serve (replaced by rename), so a crash never leaves a half-written bundle live.

use crate::{AlsConfig, AnnConfig, AnnIndex, CoVisConfig, CoVisitation, Embeddings};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped when the layout changes; older readers refuse newer bundles.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error(transparent)]
    Ann(#[from] crate::AnnError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, msg: impl std::fmt::Display) -> BundleError {
    BundleError::Invalid {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// What the model was trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataRange {
    /// Events applied to the state trained on (all kinds).
    pub events: u64,
    /// Unix ms of the oldest and newest engagement learned from.
    pub first_event_ms: i64,
    pub last_event_ms: i64,
    pub users: usize,
    pub items: usize,
    /// Positive (user, item) pairs learned from.
    pub interactions: usize,
    /// The state's model generation at the snapshot.
    pub generation: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub als: AlsConfig,
    pub covis: CoVisConfig,
    pub hnsw: Option<AnnConfig>,
    /// Embedding neighbours kept per item.
    pub item_neighbors: usize,
    /// The heavy ranker's training parameters and label weights, when one was trained.
    #[serde(default)]
    pub ranker: Option<cascade_gbdt::Params>,
    #[serde(default)]
    pub labels: Option<cascade_features::LabelWeights>,
}

/// How the heavy ranker was trained and how well it orders held-out lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankerMetrics {
    /// The surface whose pipeline produced the training candidates.
    pub surface: String,
    /// The feature schema, in column order (what serving must hydrate).
    pub features: Vec<String>,
    pub train_lists: usize,
    pub valid_lists: usize,
    pub rows: usize,
    pub rounds: usize,
    pub train_ndcg_at_10: f64,
    pub valid_ndcg_at_10: Option<f64>,
    /// The pre-ranker's order of the same validation lists: the lift is the difference.
    pub prerank_valid_ndcg_at_10: Option<f64>,
    /// Held-out NDCG@10 after each boosting round.
    #[serde(default)]
    pub valid_curve: Vec<f64>,
    pub candidates_seconds: f64,
    pub gbdt_seconds: f64,
}

/// Measured while training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub als_seconds: f64,
    pub covis_seconds: f64,
    pub ann_seconds: f64,
    pub neighbors_seconds: f64,
    pub ann_items: usize,
    pub ann_bytes: usize,
    /// Recall@10 of the HNSW search against the exact scan, on sampled users' vectors.
    pub ann_recall_at_10: Option<f64>,
    /// Recall@10 of the user vectors on each sampled user's held-out newest engagement
    /// (those engagements are left out of training).
    pub holdout_recall_at_10: Option<f64>,
    pub holdout_users: usize,
    #[serde(default)]
    pub ranker: Option<RankerMetrics>,
    /// The promotion gate's comparison with the bundle active when this one was trained.
    #[serde(default)]
    pub gate: Option<GateMetrics>,
}

/// The candidate against the active bundle on a time window neither trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateMetrics {
    pub active_version: String,
    /// Unix milliseconds: engagements from here on form the window.
    pub window_start: i64,
    pub window_users: usize,
    pub candidate_recall_at_10: f64,
    pub candidate_ndcg_at_10: f64,
    pub active_recall_at_10: f64,
    pub active_ndcg_at_10: f64,
    /// Largest relative NDCG@10 drop accepted.
    pub tolerance: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    /// RFC 3339.
    pub created_at: String,
    pub data: DataRange,
    pub params: Params,
    pub metrics: TrainMetrics,
    pub files: Vec<FileEntry>,
}

/// A registry entry: the bundle's version and its manifest (or why it could not be read).
pub type Listed = (String, Result<Manifest, String>);

/// Everything a bundle holds, in memory.
#[derive(Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    /// Ids by the dense index the artifacts use.
    pub item_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub embeddings: Embeddings,
    pub covis: CoVisitation,
    pub item_neighbors: CoVisitation,
    pub ann: Option<AnnIndex>,
    /// The heavy ranker (gradient-boosted trees over the named features).
    pub ranker: Option<cascade_gbdt::Model>,
}

#[derive(Serialize, Deserialize)]
struct Ids {
    items: Vec<String>,
    users: Vec<String>,
}

const IDS: &str = "ids.postcard";
const EMBEDDINGS: &str = "embeddings.postcard";
const COVIS: &str = "covis.postcard";
const NEIGHBORS: &str = "item_neighbors.postcard";
const ANN: &str = "items.hnsw";
const RANKER: &str = "ranker.json";
const MANIFEST: &str = "manifest.json";
const CURRENT: &str = "CURRENT";
/// Versions made current, oldest first, one per line: what `rollback` walks back through.
const HISTORY: &str = "HISTORY";

/// `<data_dir>/models`.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn entry(dir: &Path, name: &str) -> Result<FileEntry, BundleError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    Ok(FileEntry {
        name: name.into(),
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(&bytes),
    })
}

fn encode<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>, BundleError> {
    postcard::to_allocvec(v).map_err(|e| invalid(path, e))
}

/// Counts and checksums the bytes read through it.
struct Checked<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<R: std::io::Read> std::io::Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Loads the HNSW file in one pass, checksumming it as it is read; a checksum mismatch is
/// reported in preference to whatever parse error the damage caused.
fn load_checked(path: &Path, f: &FileEntry, cfg: AnnConfig) -> Result<AnnIndex, BundleError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut r = std::io::BufReader::with_capacity(
        1 << 20,
        Checked {
            inner: file,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        },
    );
    let loaded = AnnIndex::read_from(&mut r, cfg);
    std::io::copy(&mut r, &mut std::io::sink()).map_err(io(path))?;
    let c = r.into_inner();
    if (c.bytes, c.hasher.finalize()) != (f.bytes, f.crc32) {
        return Err(invalid(path, "checksum mismatch"));
    }
    loaded.map_err(|e| invalid(path, e))
}

impl Bundle {
    /// Writes the bundle under `models_dir/<version>` and makes it current.
    pub fn save(&mut self, models_dir: &Path) -> Result<PathBuf, BundleError> {
        self.save_as(models_dir, true)
    }

    /// Writes the bundle under `models_dir/<version>`; makes it current when `promote`.
    pub fn save_as(&mut self, models_dir: &Path, promote: bool) -> Result<PathBuf, BundleError> {
        std::fs::create_dir_all(models_dir).map_err(io(models_dir))?;
        let version = self.manifest.version.clone();
        let fin = models_dir.join(&version);
        if fin.exists() {
            return Err(invalid(&fin, "a bundle with this version exists"));
        }
        let tmp = models_dir.join(format!(".{version}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let ids = Ids {
            items: std::mem::take(&mut self.item_ids),
            users: std::mem::take(&mut self.user_ids),
        };
        let written = (|| {
            write_file(&tmp.join(IDS), &encode(&tmp, &ids)?)?;
            write_file(&tmp.join(EMBEDDINGS), &encode(&tmp, &self.embeddings)?)?;
            write_file(&tmp.join(COVIS), &encode(&tmp, &self.covis)?)?;
            write_file(&tmp.join(NEIGHBORS), &encode(&tmp, &self.item_neighbors)?)?;
            let mut names = vec![IDS, EMBEDDINGS, COVIS, NEIGHBORS];
            if let Some(ann) = &self.ann {
                ann.save(&tmp.join(ANN))?;
                names.push(ANN);
            }
            if let Some(r) = &self.ranker {
                write_file(
                    &tmp.join(RANKER),
                    &r.to_json().map_err(|e| invalid(&tmp, e))?,
                )?;
                names.push(RANKER);
            }
            self.manifest.files = names
                .into_iter()
                .map(|n| entry(&tmp, n))
                .collect::<Result<_, _>>()?;
            let json = serde_json::to_vec_pretty(&self.manifest).map_err(|e| invalid(&tmp, e))?;
            write_file(&tmp.join(MANIFEST), &json)
        })();
        self.item_ids = ids.items;
        self.user_ids = ids.users;
        written?;
        std::fs::rename(&tmp, &fin).map_err(io(&fin))?;
        if promote {
            Self::make_current(models_dir, &version)?;
        }
        Ok(fin)
    }

    /// Makes `version` (a bundle under `models_dir`) current, atomically, and records it in
    /// the activation history.
    pub fn make_current(models_dir: &Path, version: &str) -> Result<(), BundleError> {
        if version.is_empty() || version.contains(['/', '\\']) || version.starts_with('.') {
            return Err(invalid(models_dir, format!("bad version {version:?}")));
        }
        if !models_dir.join(version).join(MANIFEST).exists() {
            return Err(invalid(models_dir, format!("no bundle {version}")));
        }
        let cur_tmp = models_dir.join(".CURRENT.tmp");
        write_file(&cur_tmp, version.as_bytes())?;
        std::fs::rename(&cur_tmp, models_dir.join(CURRENT)).map_err(io(models_dir))?;
        let hist = models_dir.join(HISTORY);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&hist)
            .map_err(io(&hist))?;
        writeln!(f, "{version}").map_err(io(&hist))?;
        f.sync_all().map_err(io(&hist))
    }

    /// Versions made current, oldest first.
    pub fn history(models_dir: &Path) -> Result<Vec<String>, BundleError> {
        let hist = models_dir.join(HISTORY);
        match std::fs::read_to_string(&hist) {
            Ok(s) => Ok(s
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&hist)(e)),
        }
    }

    /// The version a rollback from `active` returns to: the newest history entry before the
    /// last activation of `active` that names another bundle still present.
    pub fn rollback_target(models_dir: &Path, active: &str) -> Result<Option<String>, BundleError> {
        let hist = Self::history(models_dir)?;
        let last = hist.iter().rposition(|v| v == active).unwrap_or(hist.len());
        Ok(hist[..last]
            .iter()
            .rev()
            .find(|v| *v != active && models_dir.join(v).join(MANIFEST).exists())
            .cloned())
    }

    /// Every bundle under `models_dir` with its manifest (unreadable ones with the error),
    /// oldest first.
    pub fn list(models_dir: &Path) -> Result<Vec<Listed>, BundleError> {
        let rd = match std::fs::read_dir(models_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(models_dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io(models_dir))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let m = Self::read_manifest(&e.path()).map_err(|e| e.to_string());
            out.push((name, m));
        }
        out.sort_by(|a, b| {
            let key = |x: &Listed| {
                x.1.as_ref()
                    .map(|m| m.created_at.clone())
                    .unwrap_or_default()
            };
            key(a).cmp(&key(b)).then(a.0.cmp(&b.0))
        });
        Ok(out)
    }

    /// The current bundle's directory, if any has been made current.
    pub fn current(models_dir: &Path) -> Result<Option<PathBuf>, BundleError> {
        let cur = models_dir.join(CURRENT);
        match std::fs::read_to_string(&cur) {
            Ok(v) => {
                let v = v.trim();
                if v.is_empty() || v.contains(['/', '\\']) || v.starts_with('.') {
                    return Err(invalid(&cur, "does not name a bundle"));
                }
                Ok(Some(models_dir.join(v)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&cur)(e)),
        }
    }

    /// Reads only the manifest.
    pub fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(&path, e))?;
        if m.format > FORMAT {
            return Err(invalid(
                &path,
                format!(
                    "format {} is newer than this build reads ({FORMAT})",
                    m.format
                ),
            ));
        }
        Ok(m)
    }

    /// Loads a bundle, verifying every file's size and checksum first.
    pub fn load(dir: &Path, ann_config: AnnConfig) -> Result<Self, BundleError> {
        let manifest = Self::read_manifest(dir)?;
        let mut blobs = std::collections::HashMap::new();
        for f in &manifest.files {
            if f.name.contains(['/', '\\']) {
                return Err(invalid(dir, format!("bad file name {:?}", f.name)));
            }
            let path = dir.join(&f.name);
            if f.name == ANN {
                continue; // checked while it is read, below
            }
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            if bytes.len() as u64 != f.bytes || crc32fast::hash(&bytes) != f.crc32 {
                return Err(invalid(&path, "checksum mismatch"));
            }
            blobs.insert(f.name.as_str(), bytes);
        }
        fn decode<'a, T: Deserialize<'a>>(
            dir: &Path,
            blobs: &'a std::collections::HashMap<&str, Vec<u8>>,
            name: &str,
        ) -> Result<T, BundleError> {
            let b = blobs
                .get(name)
                .ok_or_else(|| invalid(dir, format!("{name} missing")))?;
            postcard::from_bytes(b).map_err(|e| invalid(&dir.join(name), e))
        }
        let ids: Ids = decode(dir, &blobs, IDS)?;
        let embeddings: Embeddings = decode(dir, &blobs, EMBEDDINGS)?;
        let covis: CoVisitation = decode(dir, &blobs, COVIS)?;
        let item_neighbors: CoVisitation = decode(dir, &blobs, NEIGHBORS)?;
        if embeddings.n_items() > ids.items.len() || embeddings.n_users() > ids.users.len() {
            return Err(invalid(
                dir,
                "embeddings cover more ids than the bundle names",
            ));
        }
        let ann = if let Some(f) = manifest.files.iter().find(|f| f.name == ANN) {
            let a = load_checked(&dir.join(ANN), f, ann_config)?;
            if a.dim() != embeddings.dim {
                return Err(invalid(
                    dir,
                    "ann index and embeddings disagree on dimensions",
                ));
            }
            Some(a)
        } else {
            None
        };
        let ranker = match blobs.get(RANKER) {
            Some(b) => {
                Some(cascade_gbdt::Model::from_json(b).map_err(|e| invalid(&dir.join(RANKER), e))?)
            }
            None => None,
        };
        Ok(Self {
            ranker,
            manifest,
            item_ids: ids.items,
            user_ids: ids.users,
            embeddings,
            covis,
            item_neighbors,
            ann,
        })
    }
}
