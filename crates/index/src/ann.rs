//! Approximate maximum-inner-product search over item vectors, through the HNSW graph in
//! [`crate::hnsw`] (chosen over usearch and hnsw_rs by measurement: ARCHITECTURE.md,
//! docs/benchmarks.md).
//!
//! Keys are item indices. The index is built with spare capacity so that items added or
//! updated between trainings are inserted in place while requests keep searching; when the
//! spare capacity runs out the data loop's next retrain builds a larger index.

use crate::hnsw::{Graph, HnswError, Params};
use cascade_core::Idx;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How vectors are stored in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    /// Half precision: half the vector memory, recall within a fraction of a point of f32.
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
}

impl Default for AnnConfig {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 200,
            expansion_search: 128,
            // Half the vector memory for the same recall (docs/benchmarks.md).
            quantization: Quantization::F16,
            headroom: 0.1,
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
        Ok(())
    }

    /// Slots for `n` items plus the spare share (and a fixed 1,024 for small catalogs).
    pub fn capacity_for(&self, n: usize) -> usize {
        n + (n as f64 * f64::from(self.headroom)).ceil() as usize + 1024
    }

    fn params(&self, dim: usize) -> Params {
        Params {
            dim,
            m: self.connectivity,
            ef_construction: self.expansion_add,
            ef_search: self.expansion_search,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnnError {
    #[error("ann index is full ({0} slots): rebuild with more capacity")]
    Full(usize),
    #[error("vector has {got} dimensions, index has {want}")]
    Dimensions { got: usize, want: usize },
    #[error("ann index {0}")]
    File(String),
}

impl From<HnswError> for AnnError {
    fn from(e: HnswError) -> Self {
        match e {
            HnswError::Full(_, cap) => AnnError::Full(cap),
            HnswError::Dimensions { got, want } => AnnError::Dimensions { got, want },
            e => AnnError::File(e.to_string()),
        }
    }
}

#[derive(Debug)]
enum Store {
    F32(Graph<f32>),
    F16(Graph<crate::hnsw::F16>),
}

macro_rules! each {
    ($s:expr, $g:ident => $e:expr) => {
        match $s {
            Store::F32($g) => $e,
            Store::F16($g) => $e,
        }
    };
}

/// An HNSW index of item vectors scored by inner product.
#[derive(Debug)]
pub struct AnnIndex {
    store: Store,
    dim: usize,
    config: AnnConfig,
}

impl AnnIndex {
    /// An empty index with room for keys `0..capacity`.
    pub fn new(dim: usize, config: AnnConfig, capacity: usize) -> Result<Self, AnnError> {
        let p = config.params(dim);
        let store = match config.quantization {
            Quantization::F32 => Store::F32(Graph::new(p, capacity)),
            Quantization::F16 => Store::F16(Graph::new(p, capacity)),
        };
        Ok(Self { store, dim, config })
    }

    /// Builds from row-major `vectors` (key = row), linking in parallel on rayon's pool.
    /// Rows for which `keep` is false (items never trained, deleted) and all-zero rows are
    /// left out.
    pub fn build(
        vectors: &[f32],
        dim: usize,
        config: AnnConfig,
        keep: impl Fn(Idx) -> bool + Sync,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Self, AnnError> {
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let me = Self::new(dim, config, config.capacity_for(n))?;
        let nodes: Vec<Idx> = vectors
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, v)| keep(*i as Idx) && v.iter().any(|x| *x != 0.0))
            .map(|(i, _)| i as Idx)
            .collect();
        each!(&me.store, g => g.insert_many(&nodes, vectors, &progress))?;
        Ok(me)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn config(&self) -> &AnnConfig {
        &self.config
    }

    /// Searchable items.
    pub fn len(&self) -> usize {
        each!(&self.store, g => g.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys `0..capacity` fit.
    pub fn capacity(&self) -> usize {
        each!(&self.store, g => g.capacity())
    }

    pub fn contains(&self, key: Idx) -> bool {
        each!(&self.store, g => g.contains(key))
    }

    /// Heap bytes held by the graph and the stored vectors.
    pub fn memory_bytes(&self) -> usize {
        each!(&self.store, g => g.memory_bytes())
    }

    /// Inserts `key`, or moves it to a new vector; searchable by the next query. Safe while
    /// other threads search.
    pub fn upsert(&self, key: Idx, v: &[f32]) -> Result<(), AnnError> {
        Ok(each!(&self.store, g => g.upsert(key, v))?)
    }

    /// Takes `key` out of results (a no-op when absent).
    pub fn remove(&self, key: Idx) -> Result<(), AnnError> {
        each!(&self.store, g => g.remove(key));
        Ok(())
    }

    /// The stored vector of `key` (after quantization), if searchable.
    pub fn vector(&self, key: Idx) -> Option<Vec<f32>> {
        each!(&self.store, g => g.vector(key))
    }

    /// The approximate top-`k` items by inner product with `q`, best first, as
    /// `(item, dot product)`.
    pub fn search(&self, q: &[f32], k: usize) -> Result<Vec<(Idx, f32)>, AnnError> {
        Ok(each!(&self.store, g => g.search(q, k))?)
    }

    /// Changes the search beam width (benchmarks sweep it; serving sets it from config).
    pub fn set_expansion_search(&mut self, ef: usize) {
        each!(&self.store, g => g.set_ef_search(ef));
        self.config.expansion_search = ef.max(1);
    }

    pub fn save(&self, path: &Path) -> Result<(), AnnError> {
        let io = |e: std::io::Error| AnnError::File(format!("{}: {e}", path.display()));
        let f = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        each!(&self.store, g => g.save(&mut w))?;
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)
    }

    /// Loads an index written by [`AnnIndex::save`], with `headroom` spare capacity.
    pub fn load(path: &Path, config: AnnConfig) -> Result<Self, AnnError> {
        let f = std::fs::File::open(path)
            .map_err(|e| AnnError::File(format!("{}: {e}", path.display())))?;
        Self::read_from(&mut std::io::BufReader::with_capacity(1 << 20, f), config).map_err(|e| {
            match e {
                AnnError::File(m) => AnnError::File(format!("{}: {m}", path.display())),
                e => e,
            }
        })
    }

    /// Reads what [`AnnIndex::save`] wrote; the precision comes from the data, the spare
    /// capacity and search width from `config`.
    pub fn read_from(r: &mut impl std::io::BufRead, config: AnnConfig) -> Result<Self, AnnError> {
        let kind = r
            .fill_buf()
            .map_err(|e| AnnError::File(e.to_string()))?
            .get(8)
            .copied();
        let cap = |used: usize| config.capacity_for(used);
        let store = match kind {
            Some(32) => Store::F32(Graph::load(r, cap)?),
            Some(16) => Store::F16(Graph::load(r, cap)?),
            _ => return Err(AnnError::File("unknown precision".into())),
        };
        let (p, quantization) = match &store {
            Store::F32(g) => (g.params(), Quantization::F32),
            Store::F16(g) => (g.params(), Quantization::F16),
        };
        let mut me = Self {
            store,
            dim: p.dim,
            config: AnnConfig {
                connectivity: p.m,
                expansion_add: p.ef_construction,
                quantization,
                ..config
            },
        };
        me.set_expansion_search(config.expansion_search);
        Ok(me)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The exact top `k` rows of `v` by inner product with `q` (what the index approximates).
    pub(crate) fn exact(v: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<Idx> {
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
            assert!(
                (s0 - got[0].1).abs() < 1e-2 * s0.abs().max(1.0),
                "score is the dot product"
            );
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
        const NEW: Idx = 503; // beyond the built rows, within the spare capacity
        let q: Vec<f32> = (0..dim).map(|d| if d == 0 { 1.0 } else { 0.0 }).collect();
        let far: Vec<f32> = q.iter().map(|x| x * 100.0).collect();
        ann.upsert(NEW, &far).expect("insert");
        assert_eq!(ann.search(&q, 1).expect("s")[0].0, NEW);
        // Updating moves it: now it points away from the query.
        let away: Vec<f32> = q.iter().map(|x| x * -100.0).collect();
        ann.upsert(NEW, &away).expect("update");
        assert!(ann.search(&q, 5).expect("s").iter().all(|(i, _)| *i != NEW));
        ann.upsert(NEW, &far).expect("again");
        ann.remove(NEW).expect("remove");
        assert!(ann.search(&q, 5).expect("s").iter().all(|(i, _)| *i != NEW));
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
        let path = dir.path().join("items.hnsw");
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
        back.upsert(305, &v[dim..2 * dim])
            .expect("insert after load");
        assert!(back.contains(305));
        assert!(
            back.capacity() >= ann.capacity(),
            "spare capacity survives the round trip"
        );
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
