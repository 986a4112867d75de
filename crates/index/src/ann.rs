//! Approximate maximum-inner-product search over item vectors: an HNSW graph from the
//! `usearch` crate, chosen over `hnsw_rs` on measured recall/QPS and because it supports
//! insert, delete, save and load (see ARCHITECTURE.md and docs/benchmarks.md).
//!
//! Keys are item indices. The index is built with spare capacity so that items added or
//! updated between trainings are inserted in place while requests keep searching; when the
//! spare capacity runs out the data loop rebuilds and swaps a larger index.

use cascade_core::Idx;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// How vectors are stored in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    /// Half precision: half the memory, recall within a fraction of a point of f32.
    F16,
}

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnConfig {
    /// Neighbours per node on the upper layers (`M`); the base layer keeps `2·M`.
    pub connectivity: usize,
    /// Beam width while inserting (`efConstruction`).
    pub expansion_add: usize,
    /// Beam width while searching (`ef`); at least the number of results asked for.
    pub expansion_search: usize,
    pub quantization: Quantization,
    /// Spare capacity reserved beyond the built items, as a fraction, for live inserts.
    pub headroom: f32,
    /// Concurrent searchers and inserters the index reserves working memory for.
    pub threads: usize,
}

impl Default for AnnConfig {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 200,
            expansion_search: 128,
            quantization: Quantization::F32,
            headroom: 0.1,
            threads: 8,
        }
    }
}

impl AnnConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=256).contains(&self.connectivity) {
            return Err("connectivity must be in 2..=256".into());
        }
        if self.expansion_add == 0 || self.expansion_search == 0 {
            return Err("expansion_add and expansion_search must be positive".into());
        }
        if !(0.0..=10.0).contains(&self.headroom) {
            return Err("headroom must be in 0..=10".into());
        }
        if self.threads == 0 {
            return Err("threads must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnnError {
    #[error("ann index: {0}")]
    Native(String),
    #[error("ann index is full ({0} vectors): rebuild with more capacity")]
    Full(usize),
    #[error("vector has {got} dimensions, index has {want}")]
    Dimensions { got: usize, want: usize },
}

fn native(e: impl std::fmt::Display) -> AnnError {
    AnnError::Native(e.to_string())
}

/// An HNSW index of item vectors scored by inner product.
pub struct AnnIndex {
    index: Index,
    dim: usize,
    config: AnnConfig,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

fn options(dim: usize, c: &AnnConfig) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: match c.quantization {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
        },
        connectivity: c.connectivity,
        expansion_add: c.expansion_add,
        expansion_search: c.expansion_search,
        multi: false,
    }
}

impl AnnIndex {
    /// An empty index with room for `capacity` vectors.
    pub fn new(dim: usize, config: AnnConfig, capacity: usize) -> Result<Self, AnnError> {
        let index = Index::new(&options(dim, &config)).map_err(native)?;
        index
            .reserve_capacity_and_threads(capacity.max(1), config.threads.max(1))
            .map_err(native)?;
        Ok(Self { index, dim, config })
    }

    /// Builds from row-major `vectors` (key = row), inserting in parallel on rayon's pool.
    /// Rows for which `keep` is false (items never trained, deleted) are left out.
    pub fn build(
        vectors: &[f32],
        dim: usize,
        config: AnnConfig,
        keep: impl Fn(Idx) -> bool + Sync,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Self, AnnError> {
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let spare = (n as f64 * f64::from(config.headroom)).ceil() as usize + 1024;
        let threads = config.threads.max(rayon::current_num_threads());
        let me = Self::new(dim, AnnConfig { threads, ..config }, n + spare)?;
        vectors
            .par_chunks_exact(dim)
            .enumerate()
            .with_min_len(256)
            .try_for_each(|(i, v)| {
                let key = i as Idx;
                if keep(key) && v.iter().any(|x| *x != 0.0) {
                    me.index.add(u64::from(key), v).map_err(native)?;
                }
                if i % 65_536 == 0 {
                    progress(i);
                }
                Ok::<(), AnnError>(())
            })?;
        Ok(me)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn config(&self) -> &AnnConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.index.capacity()
    }

    pub fn contains(&self, key: Idx) -> bool {
        self.index.contains(u64::from(key))
    }

    /// Bytes held by the graph and the stored vectors.
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_usage()
    }

    fn check(&self, v: &[f32]) -> Result<(), AnnError> {
        if v.len() == self.dim {
            Ok(())
        } else {
            Err(AnnError::Dimensions {
                got: v.len(),
                want: self.dim,
            })
        }
    }

    /// Inserts `key`, or replaces its vector; searchable by the next query. Safe while other
    /// threads search.
    pub fn upsert(&self, key: Idx, v: &[f32]) -> Result<(), AnnError> {
        self.check(v)?;
        let k = u64::from(key);
        if self.index.contains(k) {
            self.index.remove(k).map_err(native)?;
        } else if self.index.size() >= self.index.capacity() {
            return Err(AnnError::Full(self.index.size()));
        }
        self.index.add(k, v).map_err(native)
    }

    /// Removes `key` (a no-op when absent).
    pub fn remove(&self, key: Idx) -> Result<(), AnnError> {
        self.index
            .remove(u64::from(key))
            .map(|_| ())
            .map_err(native)
    }

    /// The stored vector of `key` (after quantization), if indexed.
    pub fn vector(&self, key: Idx) -> Option<Vec<f32>> {
        let mut out = vec![0f32; self.dim];
        match self.index.get(u64::from(key), &mut out) {
            Ok(n) if n > 0 => Some(out),
            _ => None,
        }
    }

    /// The approximate top-`k` items by inner product with `q`, best first, as
    /// `(item, dot product)`.
    pub fn search(&self, q: &[f32], k: usize) -> Result<Vec<(Idx, f32)>, AnnError> {
        self.check(q)?;
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let m = self.index.search(q, k).map_err(native)?;
        // usearch's inner-product distance is `1 − q·v`.
        Ok(m.keys
            .iter()
            .zip(&m.distances)
            .filter_map(|(&key, &d)| Idx::try_from(key).ok().map(|i| (i, 1.0 - d)))
            .collect())
    }

    /// Changes the search beam width (benchmarks sweep it; serving sets it from config).
    pub fn set_expansion_search(&mut self, ef: usize) {
        self.index.change_expansion_search(ef.max(1));
        self.config.expansion_search = ef.max(1);
    }

    pub fn save(&self, path: &Path) -> Result<(), AnnError> {
        let p = path.to_str().ok_or_else(|| native("path is not UTF-8"))?;
        self.index.save(p).map_err(native)
    }

    /// Loads an index written by [`AnnIndex::save`], reserving `headroom` spare capacity.
    pub fn load(path: &Path, config: AnnConfig) -> Result<Self, AnnError> {
        let p = path.to_str().ok_or_else(|| native("path is not UTF-8"))?;
        let meta = Index::metadata(p).map_err(native)?;
        let dim = usize::try_from(meta.dimensions).map_err(native)?;
        let index = Index::new(&options(dim, &config)).map_err(native)?;
        index.load(p).map_err(native)?;
        let n = index.size();
        let spare = (n as f64 * f64::from(config.headroom)).ceil() as usize + 1024;
        index
            .reserve_capacity_and_threads(n + spare, config.threads.max(1))
            .map_err(native)?;
        index.change_expansion_search(config.expansion_search);
        index.change_expansion_add(config.expansion_add);
        Ok(Self { index, dim, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn exact(v: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<Idx> {
        let mut s: Vec<(Idx, f32)> = v
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, x)| (i as Idx, crate::als::dot(q, x)))
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.into_iter().take(k).map(|(i, _)| i).collect()
    }

    #[test]
    fn search_agrees_with_exact_inner_product() {
        let (n, dim) = (2000, 16);
        let v = vectors(n, dim, 1);
        let ann = AnnIndex::build(&v, dim, AnnConfig::default(), |_| true, |_| {}).expect("build");
        assert_eq!(ann.len(), n);
        let queries = vectors(50, dim, 2);
        let mut hit = 0;
        for q in queries.chunks_exact(dim) {
            let want = exact(&v, dim, q, 10);
            let got = ann.search(q, 10).expect("search");
            assert_eq!(got.len(), 10);
            let s0 = crate::als::dot(q, &v[got[0].0 as usize * dim..][..dim]);
            assert!((s0 - got[0].1).abs() < 1e-3, "score is the dot product");
            hit += got.iter().filter(|(i, _)| want.contains(i)).count();
        }
        assert!(hit as f64 / 500.0 > 0.9, "recall@10 {}", hit as f64 / 500.0);
    }

    #[test]
    fn upserted_vector_is_found_by_the_next_query_and_removed_is_not() {
        let (n, dim) = (500, 8);
        let v = vectors(n, dim, 3);
        let ann = AnnIndex::build(&v, dim, AnnConfig::default(), |i| i != 7, |_| {}).expect("b");
        assert!(!ann.contains(7), "rows left out by `keep` are not indexed");
        let q: Vec<f32> = (0..dim).map(|d| if d == 0 { 1.0 } else { 0.0 }).collect();
        let far: Vec<f32> = q.iter().map(|x| x * 100.0).collect();
        ann.upsert(9_999, &far).expect("insert");
        assert_eq!(ann.search(&q, 1).expect("s")[0].0, 9_999);
        // Updating moves it: now it points away from the query.
        let away: Vec<f32> = q.iter().map(|x| x * -100.0).collect();
        ann.upsert(9_999, &away).expect("update");
        assert!(
            ann.search(&q, 5)
                .expect("s")
                .iter()
                .all(|(i, _)| *i != 9_999)
        );
        ann.upsert(9_999, &far).expect("again");
        ann.remove(9_999).expect("remove");
        assert!(
            ann.search(&q, 5)
                .expect("s")
                .iter()
                .all(|(i, _)| *i != 9_999)
        );
        assert_eq!(
            ann.upsert(1, &[1.0])
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some("vector has 1 dimensions, index has 8")
        );
    }

    #[test]
    fn save_and_load_round_trip() {
        let (n, dim) = (300, 8);
        let v = vectors(n, dim, 4);
        let ann = AnnIndex::build(&v, dim, AnnConfig::default(), |_| true, |_| {}).expect("b");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("items.usearch");
        ann.save(&path).expect("save");
        let back = AnnIndex::load(&path, AnnConfig::default()).expect("load");
        assert_eq!(back.len(), n);
        assert_eq!(back.dim(), dim);
        let q = &v[..dim];
        assert_eq!(
            ann.search(q, 10).expect("a"),
            back.search(q, 10).expect("b")
        );
        // Loaded indexes take live inserts too.
        back.upsert(5_000, &v[dim..2 * dim])
            .expect("insert after load");
        assert!(back.contains(5_000));
    }

    #[test]
    fn full_index_refuses_inserts_with_a_clear_error() {
        let ann = AnnIndex::new(4, AnnConfig::default(), 2).expect("new");
        let cap = ann.capacity();
        for k in 0..cap {
            ann.upsert(k as Idx, &[1.0, k as f32, 0.0, 0.0])
                .expect("fits");
        }
        let err = ann.upsert(cap as Idx, &[0.0, 0.0, 1.0, 0.0]);
        assert!(matches!(err, Err(AnnError::Full(n)) if n == cap), "{err:?}");
        // Replacing an indexed key needs no new slot.
        ann.upsert(0, &[0.0, 1.0, 0.0, 0.0])
            .expect("update in a full index");
    }
}
